"""The temporary Prefect server lives exactly as long as the run that started it.

A parent that is SIGKILLed (while its server starts, once it answers, or having started it
from a thread) leaves no server behind; a configured server that does not answer is an
error with exit 2 saying how to start one; a Dask job without a server runs against a
temporary one and leaves nothing running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml
from flows.local_server import free_port

from weightmapper.cli.main import main

pytestmark = [pytest.mark.flows, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
CNN = {"num_classes": 10, "width": 8}

PARENT = textwrap.dedent(
    """
    import sys, threading, time
    from flows.embedded import configure_prefect
    from flows import local_server

    configure_prefect(sys.argv[1])
    box = []
    if sys.argv[2] == "thread":
        t = threading.Thread(target=lambda: box.append(local_server.start()))
        t.start(); t.join()
    else:
        box.append(local_server.start())
    print(box[0].process.pid, flush=True)
    if sys.argv[3] == "ready":
        box[0].wait_ready(600)
        print("ready", flush=True)
    time.sleep(3600)
    """
)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    return env


def _servers_of(pid: int) -> list[psutil.Process]:
    """Server processes started by the process ``pid`` (alive or not), by their command line."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if "flows.local_server" in cmd and str(pid) in cmd:
            found.append(p)
    return found


@pytest.mark.parametrize(
    ("thread", "when"),
    [("main", "starting"), ("main", "ready"), ("thread", "starting")],
)
def test_a_sigkilled_parent_takes_its_server_along(tmp_path: Path, thread: str, when: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "store"), thread, when],
        env=_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        server = psutil.Process(int(parent.stdout.readline()))
        if when == "ready":
            assert parent.stdout.readline().strip() == "ready"
        assert server.is_running() and server.status() != psutil.STATUS_ZOMBIE
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        # Bounded wait for the death signal or the watchdog to end the server; re-parented
        # to init, a server that ended is reaped, so wait_procs sees it gone.
        _, alive = psutil.wait_procs([server], timeout=60)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if parent.poll() is None:
            parent.kill()
        for p in _servers_of(parent.pid):
            p.kill()


def test_an_unreachable_configured_server_is_exit_2_with_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "job.yaml"
    job.write_text(
        yaml.safe_dump(
            {
                "name": "nowhere",
                "store": "store",
                "sources": ["*.pt"],
                "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
                "output": {"dir": "out"},
            }
        )
    )
    monkeypatch.setenv("PREFECT_API_URL", f"http://127.0.0.1:{free_port()}/api")
    t0 = time.monotonic()
    code = main(["migrate", str(job)])
    waited = time.monotonic() - t0
    err = capsys.readouterr().err
    assert code == 2, err
    assert "no Prefect server answers at PREFECT_API_URL" in err
    assert "prefect server start" in err and "--no-prefect" in err
    assert waited < 60  # bounded by the check's own deadline, not by a Prefect retry loop


def test_a_dask_job_without_a_server_runs_against_a_temporary_one(tmp_path: Path) -> None:
    data = {
        "name": "dask-no-server",
        "store": "store",
        "examples": "ckpts",
        "runner": {"kind": "dask", "n_workers": 1},
        "sources": ["ckpts/cnn/*.pt"],
        "source_module": {"spec": "weightmapper.examples.cnn:OldCNN", "kwargs": CNN},
        "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
        "dummy_input": {"shape": [2, 3, 16, 16]},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
    }
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "weightmapper", "migrate", str(job), "--json"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Watch the run's process tree: Prefect's own temporary servers (one per Dask worker
    # when no API URL reaches the workers) run uvicorn directly; ours runs local_server.
    prefect_servers: set[int] = set()
    t_end = time.monotonic() + 600
    try:
        while proc.poll() is None and time.monotonic() < t_end:
            with contextlib.suppress(psutil.Error):
                for child in psutil.Process(proc.pid).children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        if "uvicorn" in child.cmdline():
                            prefect_servers.add(child.pid)
            time.sleep(0.5)
        out, err = proc.communicate(timeout=max(1.0, t_end - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-4000:]
    summary = json.loads(out)
    assert summary["runner"] == "dask" and summary["counts"]["ok"] == 3, summary
    assert not prefect_servers, "a worker started a temporary server of its own"
    assert not [p for p in _servers_of(proc.pid) if p.is_running()]
