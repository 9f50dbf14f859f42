"""`weightmapper serve` against a real `prefect server start` on loopback, read through the API.

One server (its own PREFECT_HOME in a temp dir, a free port on 127.0.0.1) serves the
module; its finalizer stops it. One `serve` process registers the job as a deployment;
the test triggers a run, waits for it to finish, then reads the run's final state and its
artifacts over HTTP. A second run of the same deployment, pointed at a job with a
corrupt checkpoint, must end ``Failed``. Every wait has a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from flows.local_server import free_port

from pipeline_jobs import cnn_job_data

pytestmark = [pytest.mark.flows, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# Generous: CI machines are small and shared; a deadline only bounds a hang.
SERVER_START_S = 300
RUN_S = 420


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_HOME")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    env.update(
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        PREFECT_SERVER_LOGGING_LEVEL="WARNING",
        **extra,
    )
    return env


def _wait_for(what: str, check: Callable[[], Any], deadline_s: float, log: Path) -> Any:
    """Poll ``check`` until it returns something truthy, or fail showing the log's tail."""
    t_end = time.monotonic() + deadline_s
    while time.monotonic() < t_end:
        value = check()
        if value:
            return value
        time.sleep(1.0)
    tail = log.read_text(errors="replace")[-4000:] if log.exists() else ""
    pytest.fail(f"{what} not within {deadline_s:.0f} s; {log.name}:\n{tail}")


def _stop(proc: subprocess.Popen[bytes], first: int = signal.SIGTERM) -> None:
    """Stop a process started in its own session, children included."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, first)
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        except ProcessLookupError:
            pass
    # Flow-run processes the served runner started, if any outlived it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on 127.0.0.1 and a free port → its API URL."""
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    log = home / "server.log"
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
    cmd += ["--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=_env(PREFECT_HOME=str(home), PREFECT_UI_ENABLED="false"),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:

        def healthy() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prefect server exited {proc.returncode}:\n{log.read_text()[-4000:]}")
            try:
                return httpx.get(f"{api}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        _wait_for("the Prefect server answering /health", healthy, SERVER_START_S, log)
        yield api
    finally:
        _stop(proc)


def _job(root: Path, corrupt: bool = False) -> Path:
    """A three-checkpoint CNN job under ``root`` (plus a corrupt checkpoint if asked)."""
    root.mkdir(parents=True, exist_ok=True)
    data = cnn_job_data(name="served")
    if corrupt:
        (root / "ckpts" / "cnn").mkdir(parents=True, exist_ok=True)
        (root / "ckpts" / "cnn" / "zz_corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    path = root / "job.yaml"
    path.write_text(
        "# Run with: weightmapper serve job.yaml --cron '0 2 * * *'\n" + yaml.dump(data)
    )
    return path


def _run_deployment(
    client: httpx.Client, deployment: str, params: dict[str, Any], log: Path
) -> Any:
    """Trigger a run of the deployment → the flow run (JSON) once it reached a final state."""
    r = client.post(f"/deployments/{deployment}/create_flow_run", json={"parameters": params})
    r.raise_for_status()
    run_id = r.json()["id"]

    def finished() -> Any:
        run = client.get(f"/flow_runs/{run_id}").json()
        return run if (run.get("state") or {}).get("type") in TERMINAL else None

    return _wait_for(f"flow run {run_id} finishing", finished, RUN_S, log)


def _artifacts_of(client: httpx.Client, run_id: str) -> list[dict[str, Any]]:
    """A flow run id → the artifacts created by it and by its subflow runs."""
    runs = client.post(
        "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}}
    ).json()
    ids = [run_id, *(r["id"] for r in runs)]
    r = client.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": ids}}})
    r.raise_for_status()
    return list(r.json())


def test_serve_trigger_read_state_and_artifacts_then_a_failing_run(
    prefect_api: str, tmp_path: Path
) -> None:
    good, bad = _job(tmp_path / "good"), _job(tmp_path / "bad", corrupt=True)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        cmd = [sys.executable, "-m", "weightmapper", "serve", str(good)]
        serve = subprocess.Popen(
            [*cmd, "--cron", "0 2 * * *", "--name", "ci"],
            env=_env(PREFECT_API_URL=prefect_api),
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        with httpx.Client(base_url=prefect_api, timeout=30) as client:

            def deployment() -> Any:
                if serve.poll() is not None:
                    pytest.fail(f"serve exited {serve.returncode}:\n{log.read_text()[-4000:]}")
                r = client.get("/deployments/name/weightmapper-migrate-job/ci")
                return r.json() if r.status_code == 200 else None

            dep = _wait_for("the deployment being registered", deployment, SERVER_START_S, log)
            assert dep["parameters"] == {"job_path": str(good.resolve())}
            (schedule,) = dep["schedules"]
            assert schedule["schedule"]["cron"] == "0 2 * * *"

            # 1. A run of the served job: Completed, with its artifacts.
            run = _run_deployment(client, dep["id"], {}, log)
            assert run["state"]["type"] == "COMPLETED", (run["state"], log.read_text()[-4000:])
            found = _artifacts_of(client, run["id"])
            by_key = {a["key"]: a for a in found}
            summaries = [a for a in found if a["key"].endswith("-summary")]
            tables = [a for a in found if a["key"].endswith("-mapping")]
            assert len(summaries) == 3 and len(tables) == 3, sorted(by_key)
            assert all(a["type"] == "markdown" for a in summaries)
            assert all(a["type"] == "table" for a in tables)
            out = tmp_path / "good" / "out"
            for a in summaries:
                assert "✓" in a["data"] and ": ok" in a["data"]
                assert "report:" in a["description"] and str(out) in a["description"]
            for a in tables:
                rows = json.loads(a["data"]) if isinstance(a["data"], str) else a["data"]
                pairs = [r for r in rows if r["kind"] == "pair"]
                assert pairs and all(r["source"] and r["target"] for r in pairs)
            batch = by_key["weightmapper-served-batch"]
            assert batch["type"] == "markdown" and "3/3 ok" in batch["data"]

            # 2. The same deployment on a job with a corrupt checkpoint: the run is Failed,
            #    and the artifacts say which checkpoint and why.
            run = _run_deployment(client, dep["id"], {"job_path": str(bad)}, log)
            assert run["state"]["type"] == "FAILED", run["state"]
            found = _artifacts_of(client, run["id"])
            failed = [a for a in found if "zz-corrupt" in a["key"] and a["type"] == "markdown"]
            assert len(failed) == 1 and "failed at | load" in failed[0]["data"]
            batch = next(a for a in found if a["key"] == "weightmapper-served-batch")
            assert "3/4 ok" in batch["data"]
        # The banner once: the served flow's module is imported, never run as a script.
        assert log.read_text().count("is being served") == 1
    finally:
        _stop(serve, signal.SIGINT)
