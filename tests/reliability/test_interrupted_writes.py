"""SIGKILL at random points: no half-written file under a final name; the rerun completes.

A conversion of a ~6 MB checkpoint into ~1 MB shards, and a YAML batch job, are started in
forked children and killed after a seeded random delay. After every kill, each file under
a final output name must be complete and hold exactly the expected tensors, the output
directory must never open as a checkpoint unless it is whole, and a rerun must finish with
output byte-identical to an uninterrupted run.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kill_targets
import pytest
import torch
import yaml
from safetensors import safe_open

from weightmapper.checkpoint import open_checkpoint
from weightmapper.convert import convert_checkpoint, load_converted
from weightmapper.errors import OutputError, WeightMapperError
from weightmapper.result import MappingResult

pytestmark = pytest.mark.reliability

CONVERT_KILLS = 40
BATCH_KILLS = 8
SHARD_SIZE = 1_000_000
THROTTLE_S = 0.01


@pytest.fixture(scope="module")
def ctx() -> Any:
    """A forkserver context whose server has imported torch and weightmapper already."""
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(kill_targets.PRELOAD)
    assert _run(context, kill_targets.noop, kill_after=None) == 0  # start the server now
    return context


def _run(ctx: Any, fn: Callable[..., None], *args: Any, kill_after: float | None) -> int | None:
    """Run fn(*args) in a child; SIGKILL it after ``kill_after`` s → its exit code."""
    proc = ctx.Process(target=fn, args=args, daemon=True)
    proc.start()
    if kill_after is None:
        proc.join(timeout=300)
    else:
        proc.join(timeout=kill_after)
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=60)
    return proc.exitcode


def _timed(ctx: Any, fn: Callable[..., None], *args: Any) -> float:
    t0 = time.perf_counter()
    assert _run(ctx, fn, *args, kill_after=None) == 0
    return time.perf_counter() - t0


def _final_names(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob("*") if p.is_file() and not p.name.startswith("."))


def _check_final_files(out: Path, expected: dict[str, torch.Tensor]) -> str:
    """Output dir after a kill → ``none``, ``shards only`` or ``complete``; asserts soundness."""
    finals = _final_names(out)
    for f in finals:
        if f.suffix == ".safetensors":
            with safe_open(str(f), framework="pt") as sf:  # loads only when whole
                for k in sf.keys():  # noqa: SIM118 - safe_open has no __iter__
                    assert torch.equal(sf.get_tensor(k), expected[k]), (f, k)
    if not finals:
        return "none"
    index = [f for f in finals if f.name.endswith(".index.json")]
    if index:
        got = load_converted(index[0])
        assert sorted(got) == sorted(expected)
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        return "complete"
    # Shards without their index: the directory must not pass for a checkpoint.
    with pytest.raises(WeightMapperError):
        open_checkpoint(out)
    return "shards only"


def test_killed_conversion_leaves_nothing_untrusted(
    ctx: Any, tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    source = tmp_path / "source.safetensors"
    kill_targets.write_source(source)
    mapping = kill_targets.mapping_for(list(open_checkpoint(source)))
    mapping_json = tmp_path / "mapping.json"
    mapping_json.write_text(mapping.to_json())
    reference = tmp_path / "reference"
    convert_checkpoint(source, mapping, reference, shard_size=SHARD_SIZE)
    expected = load_converted(reference)
    ref_bytes = {p.name: p.read_bytes() for p in _final_names(reference)}
    assert len(ref_bytes) > 3  # several shards and an index: kills land between renames too

    args = (str(source), str(mapping_json))
    duration = _timed(ctx, kill_targets.convert, *args, str(tmp_path / "t"), SHARD_SIZE, THROTTLE_S)
    rng = random.Random(1234)
    outcomes: dict[str, int] = {}
    for trial in range(CONVERT_KILLS):
        out = tmp_path / f"killed{trial}"
        delay = rng.uniform(0.0, duration)
        code = _run(ctx, kill_targets.convert, *args, str(out), SHARD_SIZE, THROTTLE_S,
                    kill_after=delay)  # fmt: skip
        state = _check_final_files(out, expected)
        outcomes[state] = outcomes.get(state, 0) + 1
        temps = [p for p in out.rglob(".*.tmp")] if out.exists() else []
        tally["interrupted writes: state left by the kill"]["temp files (never trusted)"] += len(
            temps
        )
        if state == "shards only":  # a plain rerun refuses the orphans; --force is needed
            with pytest.raises(OutputError):
                convert_checkpoint(source, mapping, out, shard_size=SHARD_SIZE)
        # The rerun: leftovers of the killed run (temp files, orphan shards) must not stop it.
        convert_checkpoint(source, MappingResult.from_dict(mapping.to_dict()), out,
                           shard_size=SHARD_SIZE, overwrite=True)  # fmt: skip
        assert {p.name: p.read_bytes() for p in _final_names(out)} == ref_bytes
        tally["interrupted writes: conversions SIGKILLed"]["killed mid-run" if code == -9 else
                                                          "finished before the kill"] += 1  # fmt: skip
        tally["interrupted writes: state left by the kill"][state] += 1
        shutil.rmtree(out)
    assert outcomes.get("none", 0) + outcomes.get("shards only", 0) > 0  # kills did interrupt


def _job(root: Path, source: Path, target: Path) -> Path:
    job = {
        "name": "killed",
        "store": str(root / "store"),
        "sources": [str(source)],
        "target": {"checkpoint": str(target)},
        "output": {"dir": str(root / "out"), "naming": "{stem}.safetensors"},
        "runner": {"kind": "sequential"},
    }
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def test_killed_batch_reruns_to_the_same_output(
    ctx: Any, tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    source = tmp_path / "source.safetensors"
    kill_targets.write_source(source, tensors=12)
    target = tmp_path / "target.safetensors"
    kill_targets.write_source(target, tensors=12, seed=1)  # same names and shapes
    (tmp_path / "ref").mkdir()
    ref_job = _job(tmp_path / "ref", source, target)
    duration = _timed(ctx, kill_targets.batch, str(ref_job))
    reference = (tmp_path / "ref" / "out" / "source.safetensors").read_bytes()

    (tmp_path / "run").mkdir()
    job = _job(tmp_path / "run", source, target)
    out = tmp_path / "run" / "out" / "source.safetensors"
    expected = load_converted(tmp_path / "ref" / "out" / "source.safetensors")
    rng = random.Random(99)
    for trial in range(BATCH_KILLS):
        code = _run(ctx, kill_targets.batch, str(job), kill_after=rng.uniform(0.0, duration))
        # Whatever the kill left, the final name holds a whole, correct checkpoint or nothing.
        if out.exists():
            got = load_converted(out)
            assert all(torch.equal(got[k], expected[k]) for k in expected)
        tally["interrupted writes: batch runs SIGKILLed"]["killed mid-run" if code == -9 else
                                                         "finished before the kill"] += 1  # fmt: skip
        if out.exists() and trial % 2 == 0:
            out.unlink()  # the next run must rebuild it from the store, not find it done
    assert _run(ctx, kill_targets.batch, str(job), kill_after=None) == 0
    assert out.read_bytes() == reference
