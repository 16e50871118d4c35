"""docker-compose.yml checked against crawl2chat's settings, and by Docker Compose itself.

Docker cannot run here, so the file is read as Compose reads it (YAML anchors and merge keys,
`${VAR:-default}` and `${VAR:?error}` filled from .env.example) and held to what the code
expects: every CRAWL2CHAT_<SECTION>__<FIELD> variable is a settings field and loads as such,
every PREFECT_* variable is a Prefect setting, ports and pool names are the settings' defaults,
services address each other by name, ports publish on loopback, images are pinned, secrets
come from .env. Where a Compose CLI is installed (`docker compose`, or Debian's
`docker-compose`), `config` must accept the file too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from infra.settings import SeaweedSettings, ServicesSettings, StorageSettings, load_settings

ROOT = Path(__file__).resolve().parents[1]
VARIABLE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
URL = re.compile(r"\b[a-z][a-z0-9+]*://[^\s'\"]+")
# Addresses that are not another service: what the browser opens, and a worker's own bind.
NOT_A_SERVICE = {"PREFECT_UI_API_URL", "PREFECT_WORKER_WEBSERVER_HOST"}


def env_example() -> dict[str, str]:
    lines = (ROOT / ".env.example").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def interpolate(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if name in values:
            return values[name]
        if kind == "-":
            return rest
        raise KeyError(f"{name} is not set ({rest})")

    return VARIABLE.sub(one, text).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(interpolate((ROOT / "docker-compose.yml").read_text(), env_example()))


def environment(service: dict) -> dict[str, str]:
    return {key: str(value) for key, value in (service.get("environment") or {}).items()}


def command(service: dict) -> list[str]:
    return [str(part) for part in service.get("command", [])]


def option(service: dict, name: str) -> str:
    parts = command(service)
    return parts[parts.index(name) + 1]


def test_crawl2chat_variables_are_settings_fields(compose, monkeypatch):
    for name, service in compose["services"].items():
        ours = {key: value for key, value in environment(service).items() if key.startswith("CRAWL2CHAT_")}
        for key in ours:
            monkeypatch.setenv(key, ours[key])
        settings = load_settings()  # unknown sections or fields are an error (extra="forbid")
        for key, value in ours.items():
            section, field = key.removeprefix("CRAWL2CHAT_").lower().split("__")
            assert str(getattr(getattr(settings, section), field)) == value, f"{name}: {key}"
            monkeypatch.delenv(key)
        aws = {key: value for key, value in environment(service).items() if key.startswith("AWS_")}
        if "AWS_ENDPOINT_URL" in aws:  # the variables the storage section reads
            for key, value in aws.items():
                monkeypatch.setenv(key, value)
            storage = StorageSettings()
            assert (storage.endpoint_url, storage.access_key_id, storage.secret_access_key.get_secret_value(), storage.region) == (
                aws["AWS_ENDPOINT_URL"], aws["AWS_ACCESS_KEY_ID"], aws["AWS_SECRET_ACCESS_KEY"], aws["AWS_DEFAULT_REGION"]
            )
            for key in aws:
                monkeypatch.delenv(key)


def test_prefect_variables_are_prefect_settings(compose):
    import prefect.settings

    for service in compose["services"].values():
        for key in environment(service):
            if key.startswith("PREFECT_"):
                assert getattr(prefect.settings, key).name == key


def test_ports_and_pools_are_the_settings_defaults(compose):
    services, seaweed = ServicesSettings(), SeaweedSettings()
    by_name = compose["services"]

    def published(name: str) -> dict[int, tuple[str, int]]:
        ports = {}
        for mapping in by_name[name].get("ports", []):
            host, host_port, container_port = mapping.split(":")
            ports[int(container_port)] = (host, int(host_port))
        return ports

    assert published("prefect-server") == {services.prefect_port: ("127.0.0.1", services.prefect_port)}
    assert option(by_name["prefect-server"], "--port") == str(services.prefect_port)
    assert published("seaweedfs") == {seaweed.s3_port: ("127.0.0.1", seaweed.s3_port)}
    assert f"-s3.port={seaweed.s3_port}" in command(by_name["seaweedfs"])
    assert published("spark-master") == {services.spark_master_ui_port: ("127.0.0.1", services.spark_master_ui_port)}
    assert option(by_name["spark-master"], "--port") == str(services.spark_master_port)
    assert option(by_name["spark-worker"], "--webui-port") == str(services.spark_worker_ui_port)
    assert command(by_name["spark-worker"])[2] == f"spark://spark-master:{services.spark_master_port}"
    for name, pool, port in (("prefect-worker", services.cpu_pool, services.cpu_worker_health_port),
                             ("prefect-gpu-worker", services.gpu_pool, services.gpu_worker_health_port)):
        worker = by_name[name]
        assert option(worker, "--pool") == pool and option(worker, "--type") == "process"
        assert environment(worker)["PREFECT_WORKER_WEBSERVER_PORT"] == str(port)
        assert f":{port}/health" in " ".join(worker["healthcheck"]["test"])
        assert environment(worker)["CRAWL2CHAT_SPARK__MASTER"] == f"spark://spark-master:{services.spark_master_port}"
        assert environment(worker)["PREFECT_API_URL"] == f"http://prefect-server:{services.prefect_port}/api"
    # Every published port listens on loopback unless BIND_ADDRESS says otherwise.
    raw = (ROOT / "docker-compose.yml").read_text()
    published_lines = [line.strip() for line in raw.splitlines() if re.match(r'\s*- "\$\{BIND|\s*- "?\d+:\d+', line)]
    assert published_lines and all(line.startswith('- "${BIND_ADDRESS:-127.0.0.1}:') for line in published_lines)


def test_services_reach_each_other_by_name(compose):
    names = set(compose["services"])
    for name, service in compose["services"].items():
        values = [value for key, value in environment(service).items() if key not in NOT_A_SERVICE] + command(service)
        for value in values:
            for url in URL.findall(value):
                host = urlsplit(url).hostname
                assert host in names, f"{name} points at {url}: not a service of this file"


def test_images_are_pinned_and_built_from_infra(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        tag = image.rsplit(":", 1)[1] if ":" in image else ""
        assert re.search(r"\d", tag) and tag != "latest", f"{name}: image {image} is not pinned"
        if "build" in service:
            dockerfile = ROOT / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.is_file() and dockerfile.relative_to(ROOT).parts[0] == "infra"
            base = re.search(r"^FROM\s+(\S+)", dockerfile.read_text(), re.M).group(1)
            assert re.search(r":\d+\.\d+\.\d+", base), f"{dockerfile}: base image {base} is not pinned"


def test_secrets_come_from_an_env_file_that_git_ignores(compose):
    raw = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    assert {match.group(1) for match in VARIABLE.finditer(raw)} <= set(example)
    for secret in ("POSTGRES_PASSWORD", "S3_SECRET_ACCESS_KEY"):
        assert f"${{{secret}:?" in raw and example[secret] not in raw
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    tracked = subprocess.run(["git", "ls-files", ".env"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not tracked.strip()


def test_every_service_has_a_healthcheck_and_data_has_volumes(compose):
    for name, service in compose["services"].items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no healthcheck"
    for name, mount in (("postgres", "/var/lib/postgresql/data"), ("seaweedfs", "/data")):
        volume = compose["services"][name]["volumes"][0].split(":")[0]
        assert volume in compose["volumes"] and compose["services"][name]["volumes"][0].endswith(mount)
    gpu = compose["services"]["prefect-gpu-worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]


def _compose_cli() -> list[str] | None:
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def test_docker_compose_config_accepts_the_file(tmp_path):
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no Compose CLI (apt-get install docker-compose, or the docker compose plugin)")
    checked = subprocess.run([*cli, "--env-file", ".env.example", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    missing = subprocess.run([*cli, "--env-file", str(empty), "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert missing.returncode != 0 and "in .env" in missing.stderr  # no credentials, no stack
