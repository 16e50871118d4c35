"""infra/lease.py on a local folder and on the real SeaweedFS server: one holder at a time (also
under a race), renewal, release, takeover of a stale lease, and a lease taken from a stalled run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from infra.lease import LEASE_FILE, Lease, LeaseHeld, LeaseLost, hold_lease
from infra.settings import StorageSettings
from infra.storage import Storage, join, reveal


@pytest.fixture(params=["local", "s3"])
def place(request, tmp_path) -> tuple[Storage, str]:
    if request.param == "local":
        return Storage(StorageSettings(endpoint_url=None)), str(tmp_path / "out")
    return Storage(request.getfixturevalue("seaweed")), join(request.getfixturevalue("s3_prefix"), "out")


def lease_body(storage: Storage, output: str) -> dict:
    return json.loads(storage.read_versioned(join(output, LEASE_FILE))[0])


def test_one_holder_at_a_time(place):
    storage, output = place
    with hold_lease(storage, output, seconds=60, purpose="filter") as lease:
        body = lease_body(storage, output)
        assert body["owner"] == lease.owner and body["pid"] == os.getpid() and body["purpose"] == "filter"
        with pytest.raises(LeaseHeld, match=rf"^{output} is in use by another run \(owner {socket.gethostname()}:{os.getpid()}, filter, lease until .*\); wait for it"):
            Lease(storage, output, 60).acquire()
    assert storage.read_versioned(join(output, LEASE_FILE)) is None  # released
    with hold_lease(storage, output, seconds=60):
        pass


def test_a_race_has_exactly_one_winner(place):
    storage, output = place
    barrier, won, refused = threading.Barrier(8), [], []

    def contend() -> None:
        contender = Lease(Storage(storage.settings), output, 60)
        barrier.wait()
        try:
            won.append(contender.acquire())
        except LeaseHeld:
            refused.append(contender)

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1 and len(refused) == 7
    assert lease_body(storage, output)["owner"] == won[0].owner
    won[0].release()


def test_renewal_keeps_it_and_a_stale_lease_is_taken_over(place):
    storage, output = place
    lease = Lease(storage, output, seconds=0.9).acquire()
    first_expiry = lease_body(storage, output)["expires_at"]
    time.sleep(1.5)  # past the first expiry: only renewal keeps it
    assert lease_body(storage, output)["expires_at"] > first_expiry
    with pytest.raises(LeaseHeld):
        Lease(storage, output, 60).acquire()
    lease._stop.set()  # the holder stalls (renewals stop) ...
    lease._thread.join()
    time.sleep(1.0)  # ... and its lease expires
    taker = Lease(storage, output, 60).acquire()
    assert lease_body(storage, output)["owner"] == taker.owner
    lease.renew()  # the stalled run wakes up: it learns it lost the output and commits nothing
    with pytest.raises(LeaseLost, match="taken over by another run"):
        lease.check()
    lease.release()
    assert lease_body(storage, output)["owner"] == taker.owner  # releasing a lost lease leaves the new one
    taker.release()


def _settings_json(storage) -> str:
    """The storage settings for a child process, secret included (model_dump_json masks it)."""
    values = storage.settings.model_dump(mode="json")
    values["secret_access_key"] = reveal(storage.settings.secret_access_key)
    return json.dumps(values)


def test_a_lease_of_a_killed_process_is_taken_over_at_once(place):
    storage, output = place
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from infra.lease import Lease; from infra.storage import Storage; "
         "from infra.settings import StorageSettings; import json; "
         "Lease(Storage(StorageSettings.model_validate_json(sys.argv[1])), sys.argv[2], 600).acquire(); "
         "print('held', flush=True); time.sleep(600)", _settings_json(storage), output],
        stdout=subprocess.PIPE, text=True, cwd=os.getcwd(), env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LeaseHeld):
            Lease(storage, output, 60).acquire()
    finally:
        holder.kill()
        holder.wait()
    assert lease_body(storage, output)["expires_at"] > time.time() + 500  # not expired: its owner is gone
    with hold_lease(storage, output, 60) as lease:
        assert lease_body(storage, output)["owner"] == lease.owner
