"""The Prefect flows: stage states on reruns, selective recomputation, failures, Dask."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from weightmapper.pipeline.batch import prepare_examples, run_batch
from weightmapper.pipeline.config import JobConfig, RunnerSpec, parse_job
from weightmapper.pipeline.store import ArtifactStore
from weightmapper.pipeline.summary import BatchSummary

pytestmark = [pytest.mark.flows, pytest.mark.usefixtures("prefect_server")]

CNN = {"num_classes": 10, "width": 8}


def cnn_job(root: Path, **mapper: Any) -> JobConfig:
    data = {
        "name": "flowtest",
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/*.pt"],
        "source_module": {"spec": "weightmapper.examples.cnn:OldCNN", "kwargs": CNN},
        "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
        "dummy_input": {"shape": [2, 3, 16, 16]},
        "mapper": {"threshold": 0.5, **mapper},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
    }
    return parse_job(data, base_dir=root)


def run_flow(job: JobConfig) -> BatchSummary:
    from flows.migrate import migrate_batch_flow, task_runner_for

    return migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))(job)


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
    results: list[BatchSummary] = []
    threads = [threading.Thread(target=lambda: results.append(run_flow(job))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    a, b = results
    assert a.ok and b.ok
    for x, y in zip(a.items, b.items, strict=True):
        for sx, sy in zip(x.stages, y.stages, strict=True):
            if sx.name != "export":
                assert sx.cached or sy.cached, (x.source, sx.name)
    reference = run_batch(cnn_job(tmp_path / "plain"))
    for x, y in zip(a.items, reference.items, strict=True):
        got, want = load_file(x.output or ""), load_file(y.output or "")
        assert got.keys() == want.keys()
        for k in got:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)


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
    from flows.migrate import migrate_checkpoint_flow

    job = cnn_job(tmp_path)
    batch = run_batch(job)  # the plain runner fills the store; the flow must reuse it
    item = batch.items[0]
    summary = migrate_checkpoint_flow(
        job.migrations[0], item.source, item.output or "", str(job.store)
    )
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
