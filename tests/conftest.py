"""Shared test fixtures: the real data folder, a local Spark session, a real SeaweedFS server.

Nothing here is a mock: `spark` is a real local[2] SparkSession and `seaweed` a real `weed mini`
S3 server on loopback with auth on, shared by the whole test session.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from infra.seaweed import SeaweedServer, free_port
from infra.settings import SparkSettings, StorageSettings
from infra.storage import Storage

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
needs_realdata = pytest.mark.skipif(not REALDATA.exists(), reason="../shared/realdata is absent")


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.exists():
        pytest.skip("../shared/realdata is absent")
    return REALDATA


@pytest.fixture(scope="session")
def spark():
    from infra.spark import spark_session

    session = spark_session(SparkSettings(master="local[2]", shuffle_partitions=4, app_name="crawl2chat-tests"))
    yield session
    session.stop()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A real SeaweedFS S3 server with auth on; yields StorageSettings that reach it."""
    access_key, secret_key = "crawl2chat-test", uuid.uuid4().hex
    server = SeaweedServer(
        tmp_path_factory.mktemp("seaweedfs"), s3_port=free_port(), access_key_id=access_key, secret_access_key=secret_key
    )
    with server:
        yield StorageSettings(
            endpoint_url=server.endpoint_url, region="us-east-1", access_key_id=access_key, secret_access_key=secret_key,
            max_attempts=3, backoff_seconds=0.05,
        )


def seaweed_in_environment(monkeypatch, storage: StorageSettings) -> None:
    """Point the standard AWS variables at the test server, the way a user's shell would: flows
    take credentials from the environment (or a Prefect Secret block), never from parameters."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", storage.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", storage.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", storage.secret_access_key.get_secret_value())


@pytest.fixture
def s3_prefix(seaweed) -> str:
    """A fresh s3:// prefix in an existing bucket, unique per test."""
    storage = Storage(seaweed)
    uri = f"s3://crawl2chat-test/{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(uri)
    return uri


@pytest.fixture(autouse=True, scope="session")
def _isolate_aws_env():
    """Tests never pick up a developer's real AWS credentials or endpoint."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("AWS_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a module of tiny-model tests: they run fastest so, and two
    OpenMP threads contending with other work on a 2-core machine are many times slower."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def chat_model(tmp_path_factory):
    """A tiny chat model trained here on fixed conversations, with a real search index
    (tests/chat_model.py): a checkpoint the chat and server tests talk to."""
    import torch

    from tests.chat_model import build_chat_model

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_chat_model(tmp_path_factory.mktemp("chat-model"))
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def rl_world(tmp_path_factory):
    """A tiny policy, preference pairs and prompts with a known, checkable preference
    (tests/preference_world.py), for the reward, PPO, best-of-N and labelling tests."""
    import torch

    from tests.preference_world import build_world

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_world(tmp_path_factory.mktemp("rl-world"))
    finally:
        torch.set_num_threads(previous)
