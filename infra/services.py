"""The local service stack on loopback: a Prefect server, its workers, SeaweedFS and Spark.

    stack = Stack(settings)               # the `services` and `seaweed` sections
    stack.up(spark=True)                  # -> [ServiceState]: starts what is not running
    stack.status()                        # -> [ServiceState]
    stack.down()                          # -> names of the services it stopped

What `crawl2chat up` starts, in waves (a service starts once the ones it needs answer):
    seaweedfs        `weed mini` (infra/seaweed.py), S3 on :8333, auth on, telemetry off
    prefect-server   `prefect server start`, API and UI on :4200, SQLite under the state dir
    spark-master     from the pyspark installation, spark://127.0.0.1:7077, UI on :8080
    spark-worker     registers with that master                         (both with spark=True)
    worker-<pool>    `prefect worker start --type process` per work pool: the CPU pool always,
                     the GPU pool when asked or when `nvidia-smi` lists a GPU

Each service is a detached process in its own session (so stopping its process group stops
its whole tree: the Prefect server's web server, a worker's flow runs, Spark's JVM), with a
pid file `<state>/run/<name>.json` and a log `<state>/logs/<name>.log`. A pid file records the
process's start time too (after boot, so a clock change moves nothing), so a recycled pid is
never taken for ours. `up` is idempotent: a
service that is running and healthy is kept. Health means an HTTP answer: Prefect's
/api/health, a worker's /health, SeaweedFS's /healthz, the Spark master's /json/ (with the
worker listed ALIVE there).

With `api_url` given (the user's PREFECT_API_URL), no server is started: the workers poll that
one. `<state>/stack.env` holds the variables that point a shell at the stack (Prefect API, S3
endpoint and the generated S3 credentials, Spark master); it is readable by its owner only.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from infra.seaweed import SeaweedServer, port_open
from infra.settings import SeaweedSettings, ServicesSettings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SERVER = "prefect-server"
SEAWEED = "seaweedfs"
SPARK_MASTER = "spark-master"
SPARK_WORKER = "spark-worker"
WORKER_PREFIX = "worker-"


class ServiceError(RuntimeError):
    """A service that could not be started or stopped; the message is one line saying why."""


@dataclass
class Service:
    """One process of the stack: how to start it and how to tell that it works."""

    name: str
    command: list[str]
    env: dict[str, str]
    healthy: Callable[[], bool]
    url: str  # what a person opens or points a client at
    port: int  # the port it listens on (checked free before starting)
    needs: list[str] = field(default_factory=list)  # services that must be healthy first


@dataclass
class ServiceState:
    name: str
    state: str  # running, unhealthy, stopped, external
    url: str = ""
    pid: int | None = None
    log: str = ""


# --- small helpers ---------------------------------------------------------------------------


def http_ok(url: str, timeout: float = 2.0, check: Callable[[bytes], bool] | None = None) -> bool:
    """Whether `url` answers 2xx (and its body passes `check`)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = response.read()
    except (OSError, urllib.error.HTTPError):
        return False
    return check(body) if check else True


def gpu_present() -> bool:
    """Whether `nvidia-smi` lists a GPU (cheaper than importing torch just to ask)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return any(line.startswith("GPU ") for line in listing.splitlines())


def spark_home() -> Path:
    """The Spark distribution inside the pyspark package (bin/spark-class and the jars)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _spark_master_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


# --- the stack ---------------------------------------------------------------------------------


class Stack:
    """The services of `crawl2chat up`, their pid files, logs and health."""

    def __init__(
        self, settings: ServicesSettings | None = None, seaweed: SeaweedSettings | None = None, api_url: str | None = None
    ) -> None:
        self.settings = settings or ServicesSettings()
        self.seaweed = seaweed or SeaweedSettings()
        self.external_api_url = api_url
        self.state_dir = Path(self.settings.state_dir).resolve()
        self.run_dir = self.state_dir / "run"
        self.log_dir = self.state_dir / "logs"
        self._children: dict[str, subprocess.Popen] = {}  # started by this object: reaped when they exit

    # -- addresses ------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.external_api_url or f"http://{self.settings.host}:{self.settings.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    @property
    def s3_url(self) -> str:
        return f"http://{self.settings.host}:{self.seaweed.s3_port}"

    @property
    def spark_master_url(self) -> str:
        return f"spark://{self.settings.host}:{self.settings.spark_master_port}"

    @property
    def env_file(self) -> Path:
        return self.state_dir / "stack.env"

    # -- the services ---------------------------------------------------------------------------

    def s3_credentials(self) -> tuple[str, str]:
        """The local SeaweedFS's key pair: generated on the first `up`, kept (owner-only) after."""
        path = self.state_dir / "seaweed-credentials.json"
        if path.exists():
            saved = json.loads(path.read_text())
            return saved["access_key_id"], saved["secret_access_key"]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pair = ("crawl2chat", secrets.token_urlsafe(24))
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump({"access_key_id": pair[0], "secret_access_key": pair[1]}, out)
        return pair

    def client_env(self, spark: bool) -> dict[str, str]:
        """What a client of the stack needs: Prefect's API, the S3 endpoint and keys, Spark."""
        access_key, secret_key = self.s3_credentials()
        env = {
            "PREFECT_API_URL": self.api_url,
            "AWS_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
        }
        if spark:
            env["CRAWL2CHAT_SPARK__MASTER"] = self.spark_master_url
        return env

    def _base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "PREFECT_HOME": str(self.state_dir / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        })
        return env

    def _worker_env(self, health_port: int, spark: bool) -> dict[str, str]:
        env = self._base_env()
        # The user's own object store (an AWS_ENDPOINT_URL of theirs) wins over the stack's.
        stack_env = self.client_env(spark)
        if os.environ.get("AWS_ENDPOINT_URL"):
            for key in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                stack_env.pop(key)
        if os.environ.get("CRAWL2CHAT_SPARK__MASTER"):
            stack_env.pop("CRAWL2CHAT_SPARK__MASTER", None)
        env.update(stack_env)
        python_path = os.environ.get("PYTHONPATH", "")
        env.update({
            "PREFECT_API_URL": self.api_url,
            "PREFECT_WORKER_QUERY_SECONDS": str(self.settings.worker_poll_seconds),
            "PREFECT_WORKER_WEBSERVER_HOST": self.settings.host,
            "PREFECT_WORKER_WEBSERVER_PORT": str(health_port),
            # Flow runs import this checkout's flows/, tasks/, model/ and infra/.
            "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), python_path) if p),
        })
        return env

    def _spark_env(self) -> dict[str, str]:
        env = self._base_env()
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": self.settings.host,  # every Spark port and web UI on loopback
            "SPARK_NO_DAEMONIZE": "1",
            "PYSPARK_PYTHON": sys.executable,
        })
        return env

    def services(self, spark: bool = False, gpu: bool | None = None) -> list[Service]:
        """The services `up` runs, in start order."""
        s, host = self.settings, self.settings.host
        access_key, secret_key = self.s3_credentials()
        # (absolute: the services run in the state dir, and a relative path would nest there)
        weed = SeaweedServer(Path(self.seaweed.data_dir).resolve(), self.seaweed.s3_port, access_key, secret_key)
        weed_env = {**self._base_env(), **weed.environment()}
        services = [
            Service(SEAWEED, weed.command(), weed_env, lambda: http_ok(f"{self.s3_url}/healthz"), self.s3_url, self.seaweed.s3_port),
        ]
        if not self.external_api_url:
            server = [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(s.prefect_port)]
            services.append(
                # The UI asks its API at PREFECT_UI_API_URL, by default :4200: on another port it
                # would show "Can't connect to Server API".
                Service(SERVER, server, {**self._base_env(), "PREFECT_UI_API_URL": self.api_url},
                        lambda: http_ok(f"{self.api_url}/health", check=lambda b: b.strip() == b"true"),
                        self.ui_url, s.prefect_port)
            )
        if spark:
            spark_class = str(spark_home() / "bin" / "spark-class")
            master_json = f"http://{host}:{s.spark_master_ui_port}/json/"
            master = [spark_class, "org.apache.spark.deploy.master.Master", "--host", host,
                      "--port", str(s.spark_master_port), "--webui-port", str(s.spark_master_ui_port)]
            worker = [spark_class, "org.apache.spark.deploy.worker.Worker", self.spark_master_url, "--host", host,
                      "--cores", str(s.spark_worker_cores or os.cpu_count() or 1), "--memory", s.spark_worker_memory,
                      "--webui-port", str(s.spark_worker_ui_port), "--work-dir", str(self.state_dir / "spark" / "work")]

            def master_alive() -> bool:
                return (_spark_master_json(master_json) or {}).get("status") == "ALIVE"

            def worker_registered() -> bool:
                workers = (_spark_master_json(master_json) or {}).get("workers", [])
                own_ui = f":{s.spark_worker_ui_port}"
                return any(w.get("state") == "ALIVE" and str(w.get("webuiaddress", "")).endswith(own_ui) for w in workers)

            services.append(Service(SPARK_MASTER, master, self._spark_env(), master_alive, self.spark_master_url, s.spark_master_port))
            services.append(Service(SPARK_WORKER, worker, self._spark_env(), worker_registered,
                                    f"http://{host}:{s.spark_worker_ui_port}", s.spark_worker_ui_port, needs=[SPARK_MASTER]))
        pools = [(s.cpu_pool, s.cpu_worker_health_port)]
        if gpu or (gpu is None and (s.gpu_worker if s.gpu_worker is not None else gpu_present())):
            pools.append((s.gpu_pool, s.gpu_worker_health_port))
        for pool, health_port in pools:
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                       "--name", f"{pool}-{socket.gethostname()}", "--limit", str(s.worker_limit), "--with-healthcheck"]
            health = f"http://{host}:{health_port}/health"
            services.append(
                Service(WORKER_PREFIX + pool, command, self._worker_env(health_port, spark), lambda url=health: http_ok(url),
                        f"work pool {pool!r}", health_port, needs=[] if self.external_api_url else [SERVER])
            )
        return services

    # -- pid files ------------------------------------------------------------------------------

    def _pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def _log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def process_of(self, name: str) -> psutil.Process | None:
        """The live process recorded for `name`, or None (no pid file, exited, or pid reused)."""
        path = self._pid_file(name)
        if not path.exists():
            return None
        record = json.loads(path.read_text())
        try:
            process = psutil.Process(record["pid"])
            if abs(_since_boot(process) - record["created"]) > 0.5 or process.status() == psutil.STATUS_ZOMBIE:
                return None
        except psutil.Error:
            return None
        return process

    def recorded(self) -> list[str]:
        """Names of the services with a pid file, in the order they were started."""
        if not self.run_dir.exists():
            return []
        records = [(json.loads(path.read_text()).get("started", 0.0), path.stem) for path in self.run_dir.glob("*.json")]
        return [name for _, name in sorted(records)]

    # -- up, status, down -----------------------------------------------------------------------

    def up(self, spark: bool = False, gpu: bool | None = None) -> list[ServiceState]:
        """Start every service that is not running and healthy; wait for all to be healthy."""
        services = self.services(spark, gpu)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if spark:
            (self.state_dir / "spark" / "work").mkdir(parents=True, exist_ok=True)
        healthy = {service.name for service in services if self.process_of(service.name) and service.healthy()}
        pending = [service for service in services if service.name not in healthy]
        while pending:
            wave = [service for service in pending if all(need in healthy for need in service.needs)]
            if not wave:
                raise ServiceError(f"cannot start {pending[0].name}: it needs {', '.join(pending[0].needs)}")
            for service in wave:
                self._start(service)
            self._wait_healthy(wave)
            healthy.update(service.name for service in wave)
            pending = [service for service in pending if service.name not in healthy]
        self._write_env_file(spark or self.process_of(SPARK_MASTER) is not None)
        return self.status(services)

    def _start(self, service: Service) -> None:
        if self.process_of(service.name):  # running but not healthy: replace it
            self._stop(service.name)
        if port_open(service.port, self.settings.host):
            raise ServiceError(
                f"cannot start {service.name}: port {service.port} on {self.settings.host} is taken by another program "
                "(choose another port in the services settings, or stop that program)"
            )
        log = open(self._log_file(service.name), "ab")
        try:
            process = subprocess.Popen(
                service.command, env=service.env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.state_dir, start_new_session=True,
            )
        finally:
            log.close()
        record = {"pid": process.pid, "created": _since_boot(psutil.Process(process.pid)), "started": time.time(),
                  "command": service.command, "url": service.url}
        self._pid_file(service.name).write_text(json.dumps(record))
        self._children[service.name] = process

    def _wait_healthy(self, services: list[Service]) -> None:
        deadline = time.monotonic() + self.settings.start_timeout_seconds
        waiting = list(services)
        while waiting:
            for service in list(waiting):
                child = self._children.get(service.name)
                if child is not None and child.poll() is not None:
                    self._pid_file(service.name).unlink(missing_ok=True)
                    raise ServiceError(
                        f"{service.name} exited with code {child.returncode}: {self._last_log_line(service.name)} "
                        f"(log: {self._log_file(service.name)})"
                    )
                if service.healthy():
                    waiting.remove(service)
            if waiting and time.monotonic() > deadline:
                for service in waiting:
                    self._stop(service.name)
                names = ", ".join(service.name for service in waiting)
                raise ServiceError(
                    f"{names} did not become healthy in {self.settings.start_timeout_seconds:.0f} s "
                    f"(logs in {self.log_dir})"
                )
            if waiting:
                time.sleep(0.25)

    def _last_log_line(self, name: str) -> str:
        path = self._log_file(name)
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()] if path.exists() else []
        return lines[-1].strip()[:300] if lines else "no output"

    def _write_env_file(self, spark: bool) -> None:
        lines = [f"{key}={value}" for key, value in self.client_env(spark).items()]
        descriptor = os.open(self.env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write("# Point a shell at the local stack: set -a; . " + str(self.env_file) + "; set +a\n")
            out.write("\n".join(lines) + "\n")

    def status(self, services: list[Service] | None = None) -> list[ServiceState]:
        """Each known service (the expected ones and any with a pid file) and whether it works."""
        known = {service.name: service for service in (services or self.services(spark=self._spark_recorded()))}
        names = list(known) + [name for name in self.recorded() if name not in known]
        states = []
        if self.external_api_url:
            states.append(ServiceState(SERVER, "external", self.ui_url))
        for name in names:
            process = self.process_of(name)
            service = known.get(name)
            url = service.url if service else json.loads(self._pid_file(name).read_text()).get("url", "")
            if process is None:
                state = "stopped"
            else:
                state = "running" if service is None or service.healthy() else "unhealthy"
            states.append(ServiceState(name, state, url, process.pid if process else None, str(self._log_file(name))))
        return states

    def _spark_recorded(self) -> bool:
        return self.process_of(SPARK_MASTER) is not None

    def down(self) -> list[str]:
        """Stop every service `up` started (newest first); returns the names it stopped."""
        stopped = []
        for name in reversed(self.recorded()):
            if self._stop(name):
                stopped.append(name)
        return stopped

    def _stop(self, name: str) -> bool:
        process = self.process_of(name)
        self._pid_file(name).unlink(missing_ok=True)
        if process is None:
            return False
        # A service leads its own process group, but some of what it spawns leads another (a
        # worker's flow runs, for one): signal the group and every descendant.
        members = [process, *process.children(recursive=True)]
        _signal_all(process.pid, members, signal.SIGTERM)
        _, alive = psutil.wait_procs(members, timeout=self.settings.stop_timeout_seconds)
        if alive:
            _signal_all(process.pid, alive, signal.SIGKILL)
            psutil.wait_procs(alive, timeout=5)
        child = self._children.pop(name, None)
        if child is not None:
            child.wait(timeout=5)
        return True


def _since_boot(process: psutil.Process) -> float:
    """When a process started, in seconds after boot: unlike its start time on the clock, this
    does not move when the clock is set (NTP, a resumed or cloned VM)."""
    return process.create_time() - psutil.boot_time()


def _signal_all(group: int, processes: list[psutil.Process], signum: int) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass
    for process in processes:
        try:
            process.send_signal(signum)
        except psutil.Error:
            pass
