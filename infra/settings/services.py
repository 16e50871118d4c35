"""Settings of the services crawl2chat talks to: object storage, Spark, the local SeaweedFS."""

from __future__ import annotations

import os

from pydantic import Field

from infra.settings.base import Section


class StorageSettings(Section):
    """Object storage (any S3 API) credentials and behaviour; local paths need none of it."""

    endpoint_url: str | None = Field(
        default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    )
    region: str = Field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    access_key_id: str | None = Field(default_factory=lambda: os.environ.get("AWS_ACCESS_KEY_ID"))
    secret_access_key: str | None = Field(default_factory=lambda: os.environ.get("AWS_SECRET_ACCESS_KEY"))
    # Per request, with exponential backoff and jitter between attempts; the default budget
    # (about 8-16 s of waiting) outlasts a storage server restart.
    max_attempts: int = 6
    backoff_seconds: float = 0.5  # first wait; doubles every attempt
    # S3 streams (WARCs) are read in ranged requests of this size, each retried and resumed alone.
    read_block_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)


class SparkSettings(Section):
    master: str = "local[*]"  # any spark:// or yarn master works; workers need this package installed
    app_name: str = "crawl2chat"
    driver_memory: str = "2g"
    shuffle_partitions: int = 8  # small default for one machine; raise on a cluster
    extra_conf: dict[str, str] = Field(default_factory=dict)


class SeaweedSettings(Section):
    """The local SeaweedFS S3 server used by tests and local runs (loopback only, no telemetry)."""

    data_dir: str = ".crawl2chat/seaweedfs"
    s3_port: int = 8333
    start_timeout_seconds: float = 30.0
