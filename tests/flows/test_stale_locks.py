"""A Prefect task lock left by a killed run is removed; a live holder's lock is respected."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from flows.tasks import SafeFileSystemLockManager

pytestmark = pytest.mark.flows


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_records_its_process_and_a_dead_holders_lock_is_free(tmp_path: Path) -> None:
    locks = SafeFileSystemLockManager(tmp_path)
    assert locks.acquire_lock("k", holder="run-a")
    record = json.loads((tmp_path / "k.lock").read_text())
    assert record["holder"] == "run-a" and isinstance(record["pid"], int) and record["host"]

    # This process is alive: another holder must wait (and time out here).
    other = SafeFileSystemLockManager(tmp_path)
    assert other.is_locked("k")
    assert not other.acquire_lock("k", holder="run-b", acquire_timeout=0.3)

    # The same lock, as a SIGKILLed run leaves it: its process is gone.
    record["pid"] = _dead_pid()
    (tmp_path / "k.lock").write_text(json.dumps(record))
    assert not other.is_locked("k")
    assert not (tmp_path / "k.lock").exists()
    assert other.acquire_lock("k", holder="run-b", acquire_timeout=5)
    other.release_lock("k", holder="run-b")
    assert not (tmp_path / "k.lock").exists()


def test_a_lock_without_a_process_record_is_left_to_prefect(tmp_path: Path) -> None:
    (tmp_path / "k.lock").write_text(json.dumps({"holder": "x", "expiration": None}))
    locks = SafeFileSystemLockManager(tmp_path)
    assert locks.is_locked("k")
    assert (tmp_path / "k.lock").exists()


def test_stale_locks_of_keys_no_run_uses_again_are_swept(tmp_path: Path) -> None:
    locks = SafeFileSystemLockManager(tmp_path)
    assert locks.acquire_lock("live", holder="me")
    record = json.loads((tmp_path / "live.lock").read_text())
    (tmp_path / "dead.lock").write_text(json.dumps({**record, "pid": _dead_pid()}))
    assert locks.remove_stale() == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.lock"]
