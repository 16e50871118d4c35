"""Settings of the services crawl2chat talks to: object storage, Spark, the local SeaweedFS."""

from __future__ import annotations

import os

from pydantic import Field, SecretStr

from infra.settings.base import Section

# The fields that are credentials: they come from the environment or a Prefect Secret block
# (`secret_block`), never from flow parameters or `--set` (flows/credentials.py refuses them there).
CREDENTIAL_FIELDS = ("access_key_id", "secret_access_key", "session_token")


class StorageSettings(Section):
    """Object storage (any S3 API) credentials and behaviour; local paths need none of it.

    The secret key and session token are `SecretStr`: their repr, str and JSON dump are
    '**********', so a logged or dumped settings object shows no secret. The access key id
    stays a plain string: it names the key (S3 error messages and server logs show it) and is
    not a secret on its own.
    """

    endpoint_url: str | None = Field(
        default_factory=lambda: os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    )
    region: str = Field(default_factory=lambda: os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
    access_key_id: str | None = Field(default_factory=lambda: os.environ.get("AWS_ACCESS_KEY_ID"))
    secret_access_key: SecretStr | None = Field(default_factory=lambda: _secret_from_env("AWS_SECRET_ACCESS_KEY"))
    session_token: SecretStr | None = Field(default_factory=lambda: _secret_from_env("AWS_SESSION_TOKEN"))
    # The name of a Prefect Secret block holding the credentials: a string (the secret key) or
    # JSON {"access_key_id": ..., "secret_access_key": ..., "session_token": ...}. Read by flows.
    secret_block: str | None = None
    max_attempts: int = 5  # per request, with exponential backoff between attempts
    backoff_seconds: float = 0.2  # first wait; doubles every attempt


def _secret_from_env(name: str) -> SecretStr | None:
    value = os.environ.get(name)
    return SecretStr(value) if value else None


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
