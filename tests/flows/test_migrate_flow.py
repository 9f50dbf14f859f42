"""The Prefect flows: stage states on reruns, selective recomputation, failures, Dask."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest

from pipeline_jobs import (
    CNN,
    NOTHING_IS_CERTAIN,
    assert_each_stage_computed_once,
    assert_same_outputs,
    cnn_job_data,
    run_concurrently,
)
from weightmapper.pipeline.batch import prepare_examples, run_batch
from weightmapper.pipeline.config import JobConfig, RunnerSpec, parse_job
from weightmapper.pipeline.store import ArtifactStore
from weightmapper.pipeline.summary import BatchSummary

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_server")]


def cnn_job(root: Path, **mapper: Any) -> JobConfig:
    data = cnn_job_data(name="flowtest", mapper={"threshold": 0.5, **mapper})
    return parse_job(data, base_dir=root)


def run_flow(job: JobConfig) -> BatchSummary:
    from flows.migrate import migrate_batch_flow, summary_of, task_runner_for

    flow_fn = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    return summary_of(flow_fn(job, return_state=True))


def states(summary: BatchSummary) -> dict[str, set[str | None]]:
    out: dict[str, set[str | None]] = {}
    for item in summary.items:
        for s in item.stages:
            out.setdefault(s.name, set()).add(s.state)
    for recs in summary.batch_stages.values():
        for s in recs:
            out.setdefault(s.name, set()).add(s.state)
    return out


def test_rerun_is_all_cached_then_threshold_and_deletion_rerun_only_what_changed(
    tmp_path: Path,
) -> None:
    job = cnn_job(tmp_path)
    first = run_flow(job)
    assert first.ok, first.to_dict()
    assert len(first.items) == 3
    assert "Completed" in states(first)["convert"]

    # 1. A rerun: every task of every checkpoint, and of the target, is Cached.
    second = run_flow(job)
    assert second.ok
    assert all(v == {"Cached"} for v in states(second).values()), states(second)

    # 2. A deleted artifact: its stage runs again (Completed), nothing before it does.
    victim = second.items[0]
    key = next(s.key for s in victim.stages if s.name == "validate")
    assert ArtifactStore(job.store).remove("validate", key)
    third = run_flow(job)
    item = next(i for i in third.items if i.source == victim.source)
    by_stage = {s.name: s.state for s in item.stages}
    assert by_stage["validate"] == "Completed"
    assert all(v == "Cached" for k, v in by_stage.items() if k != "validate"), by_stage
    assert third.ok

    # 3. Only the threshold changes: load, inventory, score and the target stay Cached;
    #    assign runs again.
    fourth = run_flow(cnn_job(tmp_path, threshold=0.55))
    st = states(fourth)
    for name in ("load", "inventory", "score", "target", "trace_target"):
        assert st[name] == {"Cached"}, (name, st[name])
    assert "Completed" in st["assign"]
    assert fourth.ok


def test_a_rerun_of_stored_stages_submits_no_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.migrate

    submitted: list[str] = []
    real = flows.migrate.make_tasks

    class Counted:
        def __init__(self, name: str, task: Any) -> None:
            self.name, self.task = name, task

        def submit(self, **kwargs: Any) -> Any:
            submitted.append(self.name)
            return self.task.submit(**kwargs)

    monkeypatch.setattr(
        flows.migrate,
        "make_tasks",
        lambda store: {k: Counted(k, t) for k, t in real(store).items()},
    )
    job = cnn_job(tmp_path)
    assert run_flow(job).ok
    assert "convert" in submitted and "target" in submitted
    submitted.clear()
    # Everything is in the store: the flow reuses it (verified) without a task run.
    again = run_flow(job)
    assert again.ok and submitted == []
    assert all(v == {"Cached"} for v in states(again).values())
    # One artifact gone: its stage runs as a task, and so does each stage reading it.
    victim = again.items[0]
    key = next(s.key for s in victim.stages if s.name == "report")
    assert ArtifactStore(job.store).remove("report", key)
    third = run_flow(job)
    assert third.ok and sorted(submitted) == ["export", "report"]


def test_a_corrupt_checkpoint_fails_alone(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    prepare_examples(job)
    (tmp_path / "ckpts" / "cnn" / "zz_corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    summary = run_flow(job)
    by_name = {Path(i.source).name: i for i in summary.items}
    bad = by_name.pop("zz_corrupt.pt")
    assert bad.status == "failed" and bad.failed_stage == "load"
    assert "zz_corrupt.pt" in (bad.error or "")
    assert [i.status for i in by_name.values()] == ["ok", "ok", "ok"]
    assert all(Path(i.output or "").exists() for i in by_name.values())


def test_two_concurrent_flow_runs_compute_each_stage_once(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    prepare_examples(job)
    a, b = run_concurrently(lambda: run_flow(job))
    assert a.ok and b.ok
    assert_each_stage_computed_once(a, b)
    assert_same_outputs(a, run_batch(cnn_job(tmp_path / "plain")))


def test_dask_runner_on_a_local_cluster(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    job = dataclasses.replace(job, runner=RunnerSpec(kind="dask", n_workers=2))
    summary = run_flow(job)
    assert summary.ok, summary.to_dict()
    assert summary.runner == "dask"
    reference = run_batch(cnn_job(tmp_path / "plain"))
    for x, y in zip(summary.items, reference.items, strict=True):
        assert Path(x.output or "").read_bytes() == Path(y.output or "").read_bytes()


def test_single_checkpoint_flow_reuses_the_batch_artifacts(tmp_path: Path) -> None:
    from flows.migrate import migrate_checkpoint_flow, summary_of

    job = cnn_job(tmp_path)
    batch = run_batch(job)  # the plain runner fills the store; the flow must reuse it
    item = batch.items[0]
    state = migrate_checkpoint_flow(
        job.migrations[0], item.source, item.output or "", str(job.store), return_state=True
    )
    assert state.is_completed()
    summary = summary_of(state)
    assert summary.status == "ok"
    assert all(s.cached for s in summary.stages), [s.to_dict() for s in summary.stages]
    assert summary.output == item.output


def test_lock_manager_waits_for_a_lock_file_still_being_written(tmp_path: Path) -> None:
    import time

    from flows.tasks import SafeFileSystemLockManager

    locks = SafeFileSystemLockManager(tmp_path)
    lock = tmp_path / "k.lock"
    lock.touch()  # what Prefect's manager does first; the holder is written afterwards

    def write_holder() -> None:
        time.sleep(0.2)
        lock.write_bytes(b'{"holder": "other", "expiration": null}')

    writer = threading.Thread(target=write_holder)
    writer.start()
    assert locks.is_locked("k")
    assert not locks.is_lock_holder("k", "me")
    writer.join()


def test_the_flow_run_fails_when_a_checkpoint_fails(tmp_path: Path) -> None:
    from flows.migrate import migrate_batch_flow, summary_of, task_runner_for

    job = cnn_job(tmp_path)
    prepare_examples(job)
    (tmp_path / "ckpts" / "cnn" / "zz_corrupt.pt").write_bytes(b"PK\x03\x04 truncated zip")
    flow_fn = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    state = flow_fn(job, return_state=True)
    assert state.is_failed() and "1 of 4 checkpoint(s)" in (state.message or "")
    summary = summary_of(state)
    assert summary.counts()["failed"] == 1 and summary.counts()["ok"] == 3


def test_a_failing_threshold_keeps_the_good_outputs_under_prefect(tmp_path: Path) -> None:
    first = run_flow(cnn_job(tmp_path))
    assert first.ok
    good = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    failing = run_flow(cnn_job(tmp_path, threshold=NOTHING_IS_CERTAIN))
    assert {(i.status, i.export) for i in failing.items} == {("check_failed", "kept")}
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == good


def test_an_unimportable_target_is_reported_once_under_prefect(tmp_path: Path) -> None:
    data = {
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/*.pt"],
        "target": {"module": "no_such_package.models:Net"},
        "output": "out",
    }
    summary = run_flow(parse_job(data, base_dir=tmp_path))
    (error,) = summary.errors.values()
    assert "no_such_package" in error
    assert {(i.status, i.failed_stage) for i in summary.items} == {("failed", "target")}
    assert all("no_such_package" not in (i.error or "") for i in summary.items)


def test_cli_exits_1_when_a_check_fails_under_prefect(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import yaml

    from weightmapper.cli.main import main

    job = {
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/*.pt"],
        "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
        "mapper": {"threshold": NOTHING_IS_CERTAIN},
        "output": "out",
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    assert main(["migrate", str(path), "--json"]) == 1
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is False and summary["counts"]["check_failed"] == 3
    assert {i["export"] for i in summary["checkpoints"]} == {"withheld"}


def test_the_summary_time_includes_prefect_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.migrate
    from flows.embedded import run_job

    # A flow that reports no time of its own: what run_job reports is its own wall time.
    monkeypatch.setattr(
        flows.migrate,
        "run_batch_flow",
        lambda job, api_url=None: BatchSummary(job="j", runner="threads"),
    )
    assert run_job(cnn_job(tmp_path)).seconds > 0.0


@pytest.mark.parametrize("clash", ["output over a source", "output folder is a file"])
def test_a_job_refused_inside_the_flow_raises_our_error(tmp_path: Path, clash: str) -> None:
    """The flow's exception used to come back as the 'summary', and the CLI died on it."""
    from weightmapper.errors import OutputError

    if clash == "output over a source":
        output = {"dir": "ckpts", "naming": "{stem}.safetensors"}
        data = cnn_job_data(name="flowtest", examples=None, output=output)
        data["sources"] = ["ckpts/*.safetensors"]
        (tmp_path / "ckpts").mkdir()
        (tmp_path / "ckpts" / "a.safetensors").write_bytes(b"never read, never replaced")
        match = "would destroy an input"
    else:
        data = cnn_job_data(name="flowtest", output={"dir": "out"})
        (tmp_path / "out").write_text("a file where the output folder goes")
        match = "is a file, not a folder"
    with pytest.raises(OutputError, match=match):
        run_flow(parse_job(data, base_dir=tmp_path))
