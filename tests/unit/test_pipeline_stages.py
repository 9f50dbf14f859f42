"""Single stages: keys follow content, not paths; targets given as checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from weightmapper.examples.cnn import RefactoredCNN
from weightmapper.examples.generate import ensure_example_checkpoints
from weightmapper.pipeline import stages
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import InputSpec, parse_job
from weightmapper.pipeline.store import ArtifactStore


def test_a_copied_checkpoint_hits_the_same_artifacts(tmp_path: Path) -> None:
    (a, *_rest) = ensure_example_checkpoints(tmp_path / "x", per_family=1)
    b = tmp_path / "elsewhere" / "renamed.pt"
    b.parent.mkdir()
    shutil.copy(a, b)
    store = ArtifactStore(tmp_path / "store")
    first = stages.LoadStage(str(a)).run(store)
    second = stages.LoadStage(str(b)).run(store)
    assert (first.cached, second.cached) == (False, True)
    assert first.key == second.key == stages.LoadStage(str(b)).key(store)
    assert first.info["checkpoint_sha256"] == second.info["checkpoint_sha256"]


def test_an_edited_checkpoint_misses(tmp_path: Path) -> None:
    path = tmp_path / "c.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    store = ArtifactStore(tmp_path / "store")
    before = stages.LoadStage(str(path)).run(store)
    save_file({"w": torch.ones(3)}, str(path))
    after = stages.LoadStage(str(path)).run(store)
    assert not after.cached and after.key != before.key
    # Same names, shapes and dtypes: the header-keyed inventory is shared.
    assert stages.InventoryStage(before).key(store) == stages.InventoryStage(after).key(store)


def test_dummy_inputs_are_deterministic() -> None:
    spec = InputSpec(shape=(2, 5), dtype="int64", kind="randint", high=7, seed=3)
    x, y = stages.make_dummy_input(spec), stages.make_dummy_input(spec)
    assert x.dtype == torch.int64 and torch.equal(x, y) and int(x.max()) < 7


def test_target_given_as_a_checkpoint(tmp_path: Path) -> None:
    ensure_example_checkpoints(tmp_path / "ckpts", per_family=1)
    target = tmp_path / "target.safetensors"
    save_file(RefactoredCNN(num_classes=10, width=8).state_dict(), str(target))
    job = parse_job(
        {
            "store": "store",
            "sources": ["ckpts/cnn/*.pt"],
            "target": {"checkpoint": "target.safetensors"},
            # Without a module, names and order carry less evidence: a lower bar.
            "mapper": {"threshold": 0.3},
            "output": "out",
        },
        base_dir=tmp_path,
    )
    summary = run_batch(job)
    (item,) = summary.items
    assert item.status == "ok", item.to_dict()
    assert item.validation == "passed" and item.functional == "skipped"
    assert "verify" not in [s.name for s in item.stages]


def test_functional_check_names_the_first_diverging_module(tmp_path: Path) -> None:
    from weightmapper.convert import convert_checkpoint
    from weightmapper.examples.cnn import OldCNN
    from weightmapper.pipeline.ops import functional_check
    from weightmapper.result import MappingResult

    (src, *_rest) = ensure_example_checkpoints(tmp_path / "x", per_family=1)
    old, new = OldCNN(10, 8).state_dict(), RefactoredCNN(10, 8).state_dict()
    truth = dict(zip(old, new, strict=True))
    # Swap two convolutions of the same shape: loads strictly, computes something else.
    truth["features.6.weight"], truth["features.9.weight"] = (
        truth["features.9.weight"],
        truth["features.6.weight"],
    )
    mapping = MappingResult.from_simple(truth)
    out = tmp_path / "wrong.safetensors"
    convert_checkpoint(str(src), mapping, out)
    result = functional_check(
        str(src),
        str(out),
        OldCNN(10, 8),
        RefactoredCNN(10, 8),
        torch.randn(2, 3, 16, 16),
        mapping,
    )
    assert result["ok"] is False and result["max_abs_diff"] > 0
    assert result["first_diverging_target"] == "stages.0.1.conv"
