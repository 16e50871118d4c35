"""A lease on an output location, so that two runs never write the same output at once.

    with hold_lease(storage, output, seconds=120) as lease:
        ...            # the work; `lease.check()` before each commit point

The lease is one small object, `<output>/_lease.json`, holding its owner (host, pid and a random
nonce), when it was taken and when it expires. It is created with a conditional put that only
succeeds if no lease exists (If-None-Match: * on S3; SeaweedFS 4.x and AWS S3 honour it, and a
race of 16 simultaneous puts on SeaweedFS 4.48 lets exactly one through; a local folder uses a
hard link under a folder lock), so of two runs started together exactly one gets it and the
other stops with one line saying who holds it. A thread renews it every third of its duration
(If-Match on the version it last wrote). A lease that has expired, or whose owner is a process
of this host that no longer exists (a run killed with SIGKILL), is stale and is taken over, again
with If-Match, so two runs cannot both take over the same stale lease. A run whose lease was
taken from it (it stalled past the expiry) finds out at its next renewal or `check()` and stops
before committing anything.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone

from infra.storage import Storage, StorageError, join

log = logging.getLogger(__name__)

LEASE_FILE = "_lease.json"


class LeaseHeld(StorageError):
    """Another live run holds the output's lease."""


class LeaseLost(StorageError):
    """This run's lease expired and another run took the output over."""


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


class Lease:
    """One run's lease on one output; use `hold_lease` rather than this class directly."""

    def __init__(self, storage: Storage, output: str, seconds: float, purpose: str = "") -> None:
        self.storage, self.output, self.seconds, self.purpose = storage, output, seconds, purpose
        self.uri = join(output, LEASE_FILE)
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.owner = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:12]}"
        self.version: str | None = None
        self.lost: str | None = None  # why, once lost
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps(
            {"owner": self.owner, "host": self.host, "pid": self.pid, "purpose": self.purpose,
             "renewed_at": _when(now), "expires_at": now + self.seconds, "expires": _when(now + self.seconds)}
        ).encode()

    def acquire(self) -> Lease:
        self.storage.ensure_bucket(self.output)
        for _ in range(3):  # a lease released or taken over between our put and our read: look again
            body = self._body()
            self.version = self.storage.create_if_absent(self.uri, body)
            if self.version is not None:
                return self._held()
            current = self.storage.read_versioned(self.uri)
            if current is None:
                continue
            data, version = current
            holder = self._parse(data)
            if holder.get("owner") == self.owner:  # our own put, whose answer was lost and retried
                self.version = version
                return self._held()
            stale = self._stale_because(holder)
            if stale is None:
                raise LeaseHeld(
                    f"{self.output} is in use by another run (owner {holder.get('host')}:{holder.get('pid')}, "
                    f"{holder.get('purpose') or 'a run'}, lease until {holder.get('expires', '?')}); wait for it to "
                    f"finish, or delete {self.uri} if that run is gone"
                )
            self.version = self.storage.replace_if(self.uri, body, version)
            if self.version is not None:
                log.warning("took over the lease on %s from %s (%s)", self.output, holder.get("owner"), stale)
                return self._held()
        raise LeaseHeld(f"{self.output}: could not take its lease ({self.uri} keeps changing: another run is starting)")

    @staticmethod
    def _parse(data: bytes) -> dict:
        try:
            holder = json.loads(data)
        except ValueError:
            return {}
        return holder if isinstance(holder, dict) else {}

    def _stale_because(self, holder: dict) -> str | None:
        expires = holder.get("expires_at")
        if not isinstance(expires, (int, float)):
            return "unreadable lease"
        if expires < time.time():
            return f"expired at {_when(expires)}"
        if holder.get("host") == self.host and isinstance(holder.get("pid"), int) and _process_gone(holder["pid"]):
            return f"process {holder['pid']} of this host is gone"
        return None

    def _held(self) -> Lease:
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.output}", daemon=True)
        self._thread.start()
        return self

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.renew()
            except Exception as error:  # noqa: BLE001 - a storage hiccup: the next renewal tries again
                log.warning("renewing the lease on %s failed: %s", self.output, error)
            if self.lost:
                return

    def renew(self) -> None:
        with self._lock:
            if self.lost or self.version is None:
                return
            version = self.storage.replace_if(self.uri, self._body(), self.version)
            if version is None:
                self.lost = f"the lease on {self.output} was taken over by another run"
                log.error("%s: stopping before the next commit", self.lost)
                return
            self.version = version

    def check(self) -> None:
        """Raise LeaseLost if another run took this output over (call before committing)."""
        if self.lost:
            raise LeaseLost(f"{self.lost}; this run stops without committing")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            if self.version is not None and not self.lost:
                if not self.storage.delete_if(self.uri, self.version):
                    log.warning("the lease on %s was no longer ours at release", self.output)
            self.version = None


@contextmanager
def hold_lease(storage: Storage, output: str, seconds: float, purpose: str = "") -> Iterator[Lease]:
    """Hold the lease on `output` for the duration of the block (raises LeaseHeld if taken)."""
    lease = Lease(storage, output, seconds, purpose).acquire()
    try:
        yield lease
    finally:
        lease.release()
