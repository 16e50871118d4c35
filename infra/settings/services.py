"""Settings of the services crawl2chat talks to: object storage, Spark, the local SeaweedFS, and
the local stack that `crawl2chat up` starts (Prefect server and workers, SeaweedFS, Spark)."""

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
    # Per request, with exponential backoff and jitter between attempts; the default budget
    # (about 8-16 s of waiting) outlasts a storage server restart.
    max_attempts: int = 6
    backoff_seconds: float = 0.5  # first wait; doubles every attempt
    # S3 streams (WARCs) are read in ranged requests of this size, each retried and resumed alone.
    read_block_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024)


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


class ServicesSettings(Section):
    """The local service stack of `crawl2chat up` (Prefect server, workers, SeaweedFS, Spark).

    Every service binds `host` (loopback); pid files, logs and the Prefect database live under
    `state_dir`. The same ports are the defaults of docker-compose.yml.
    """

    state_dir: str = ".crawl2chat"
    host: str = "127.0.0.1"
    prefect_port: int = 4200  # the Prefect API and UI
    # Work pools: `process` runs the data flows; `gpu` will run training (its worker starts
    # with `up --gpu`, or by itself where `nvidia-smi` lists a GPU: gpu_worker=None).
    cpu_pool: str = "process"
    gpu_pool: str = "gpu"
    gpu_worker: bool | None = None
    cpu_worker_health_port: int = 4211  # each worker's /health endpoint
    gpu_worker_health_port: int = 4212
    worker_poll_seconds: float = 5.0  # how often a worker asks for scheduled runs (Prefect: 15)
    worker_limit: int = 1  # flow runs at once per worker: one Spark driver per machine
    # Spark standalone, started from the pyspark installation with `up --spark`.
    spark: bool = False
    spark_master_port: int = 7077
    spark_master_ui_port: int = 8080
    spark_worker_ui_port: int = 8081
    spark_worker_cores: int | None = None  # None: all cores
    spark_worker_memory: str = "2g"
    start_timeout_seconds: float = 180.0  # a cold Prefect server migrates its database first
    stop_timeout_seconds: float = 20.0
    # `crawl2chat deploy`: the scheduled crawl of new Common Crawl snapshots.
    schedule_cron: str = "0 6 * * 1"  # Mondays 06:00; Common Crawl publishes about monthly
