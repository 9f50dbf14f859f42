"""The plain-Python batch runner: caching semantics, failures, concurrency, outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from safetensors.torch import load_file

from pipeline_jobs import (
    CNN,
    NOTHING_IS_CERTAIN,
    assert_each_stage_computed_once,
    assert_same_outputs,
    cnn_job_data,
    run_concurrently,
)
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import JobConfig, parse_job
from weightmapper.pipeline.store import ArtifactStore
from weightmapper.pipeline.summary import CHECKPOINT_STAGES


def cnn_job(tmp_path: Path, **mapper: Any) -> JobConfig:
    """A job over the example CNN checkpoints generated into tmp_path."""
    data = cnn_job_data(
        name="t",
        runner={"kind": "threads", "max_workers": 2},
        mapper={"threshold": 0.5, **mapper},
    )
    return parse_job(data, base_dir=tmp_path)


def test_cold_run_converts_validates_and_checks_every_checkpoint(tmp_path: Path) -> None:
    summary = run_batch(cnn_job(tmp_path))
    assert summary.ok, summary.to_dict()
    assert len(summary.items) == 3
    for item in summary.items:
        assert [s.name for s in item.stages] == list(CHECKPOINT_STAGES)
        assert (item.validation, item.functional) == ("passed", "passed")
        assert item.coverage["source"] == item.coverage["target"] == 1.0
        assert 0.0 <= item.coverage["target_confident"] <= item.coverage["target"]
        out = Path(item.output or "")
        assert out.parent == tmp_path / "out" and out.exists()
        assert Path(item.report or "").exists()
        tensors = load_file(str(out))
        assert "stem.conv.weight" in tensors and "head.weight" in tensors
    # Checkpoints of one architecture share the header-keyed stages: scored once.
    assert summary.recomputed()["score"] == 1
    assert summary.recomputed()["convert"] == 3


def test_rerun_reuses_every_stage(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    run_batch(job)
    again = run_batch(job)
    assert again.ok
    assert all(s.cached for i in again.items for s in i.stages)
    assert all(s.cached for recs in again.batch_stages.values() for s in recs)
    assert set(again.recomputed().values()) == {0}


def test_changing_only_the_threshold_reruns_assign_and_later_stages(tmp_path: Path) -> None:
    run_batch(cnn_job(tmp_path, threshold=0.5))
    summary = run_batch(cnn_job(tmp_path, threshold=0.55))
    for item in summary.items:
        cached = {s.name: s.cached for s in item.stages}
        assert cached["load"] and cached["inventory"] and cached["score"], cached
    assert all(s.cached for recs in summary.batch_stages.values() for s in recs)
    # assign ran once for the shared header; everything after it follows the new mapping.
    assert summary.recomputed()["assign"] == 1
    assert summary.recomputed()["load"] == summary.recomputed()["score"] == 0


def test_a_deleted_artifact_makes_its_stage_recompute(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    first = run_batch(job)
    victim = first.items[0]
    convert_key = next(s.key for s in victim.stages if s.name == "convert")
    store = ArtifactStore(job.store)
    assert store.remove("convert", convert_key)
    again = run_batch(job)
    item = next(i for i in again.items if i.source == victim.source)
    assert item.computed_stages == ["convert"]
    assert again.ok
    assert all(not i.computed_stages for i in again.items if i is not item)


def test_a_truncated_artifact_is_recomputed(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    first = run_batch(job)
    key = next(s.key for s in first.items[0].stages if s.name == "load")
    ref = ArtifactStore(job.store).lookup("load", key)
    assert ref is not None
    Path(ref.path).write_text(Path(ref.path).read_text()[:-20])
    again = run_batch(job)
    assert (
        "load" in next(i for i in again.items if i.source == first.items[0].source).computed_stages
    )


def test_a_corrupt_checkpoint_is_reported_and_the_rest_completes(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    run_batch(job)  # generates the examples
    (tmp_path / "ckpts" / "cnn" / "broken.pt").write_bytes(b"\x80\x02 this is not a pickle")
    summary = run_batch(job)
    assert not summary.ok
    by_name = {Path(i.source).name: i for i in summary.items}
    broken = by_name.pop("broken.pt")
    assert broken.status == "failed" and broken.failed_stage == "load"
    assert broken.error and "broken.pt" in broken.error
    assert broken.output is None
    assert all(i.status == "ok" for i in by_name.values())
    assert summary.counts() == {"total": 4, "ok": 3, "check_failed": 0, "failed": 1}


def test_a_missing_source_pattern_is_reported(tmp_path: Path) -> None:
    job = parse_job(
        {
            "store": "store",
            "sources": ["nowhere/*.pt"],
            "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
            "output": "out",
        },
        base_dir=tmp_path,
    )
    summary = run_batch(job)
    (item,) = summary.items
    assert item.status == "failed" and "no checkpoint matches" in (item.error or "")


def test_a_target_that_does_not_fit_is_a_check_failure(tmp_path: Path) -> None:
    data = {
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/old_cnn_seed0.pt"],
        # The target has another class count: its head cannot be filled, validation fails.
        "target": {
            "module": "weightmapper.examples.cnn:RefactoredCNN",
            "kwargs": {"num_classes": 12, "width": 8},
        },
        "output": "out",
    }
    summary = run_batch(parse_job(data, base_dir=tmp_path))
    (item,) = summary.items
    assert item.status == "check_failed"
    assert item.validation == "failed"
    assert item.coverage["source"] < 1.0


def test_two_concurrent_runs_give_identical_outputs(tmp_path: Path) -> None:
    job = cnn_job(tmp_path)
    from weightmapper.pipeline.batch import prepare_examples

    prepare_examples(job)
    # Separate store objects, as two processes would have; they share the files.
    a, b = run_concurrently(lambda: run_batch(job, store=ArtifactStore(job.store)))
    assert a.ok and b.ok
    assert_each_stage_computed_once(a, b)
    assert_same_outputs(a, run_batch(cnn_job(tmp_path / "single")), reports=True)


def test_outputs_do_not_depend_on_where_the_store_is(tmp_path: Path) -> None:
    a = run_batch(cnn_job(tmp_path / "a"))
    b = run_batch(cnn_job(tmp_path / "b"))
    for x, y in zip(a.items, b.items, strict=True):
        assert [s.key for s in x.stages if s.key] == [s.key for s in y.stages if s.key]


@pytest.mark.parametrize("kind", ["sequential"])
def test_sequential_runner(tmp_path: Path, kind: str) -> None:
    job = cnn_job(tmp_path)
    import dataclasses

    job = dataclasses.replace(job, runner=dataclasses.replace(job.runner, kind=kind))
    summary = run_batch(job)
    assert summary.ok and summary.runner == kind


def test_a_threshold_that_changes_the_pairs_reruns_convert_and_checks(tmp_path: Path) -> None:
    run_batch(cnn_job(tmp_path, threshold=0.5))
    strict = run_batch(cnn_job(tmp_path, threshold=NOTHING_IS_CERTAIN))
    ran = strict.recomputed()
    assert ran["load"] == ran["inventory"] == ran["score"] == 0
    assert ran["assign"] == 1 and ran["convert"] == 3 and ran["validate"] == 3
    # Fewer pairs: the target can no longer be filled, which the summary reports.
    assert all(i.status == "check_failed" and i.validation == "failed" for i in strict.items)
    assert all((i.coverage["source"] or 0) < 1.0 for i in strict.items)
