"""`checks.require: proven` and the verify stage's search: only outputs with equal outputs are
placed, and a conversion that differs gets a diagnosis and, when one exists, a proven mapping."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.errors import ConfigError
from weightmapper.examples.cnn import OldCNN, RefactoredCNN
from weightmapper.examples.generate import trained_like
from weightmapper.mapper import WeightMapper
from weightmapper.pipeline import ops
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import JobConfig, parse_job
from weightmapper.pipeline.policy import refusal
from weightmapper.result import MappingResult

CNN = {"num_classes": 10, "width": 8}


def cnn_job(root: Path, **extra: Any) -> JobConfig:
    data = {
        "name": "t",
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/*.pt"],
        "source_module": {"spec": "weightmapper.examples.cnn:OldCNN", "kwargs": CNN},
        "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
        "dummy_input": {"shape": [2, 3, 16, 16]},
        "mapper": {"threshold": 0.5},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
        **extra,
    }
    return parse_job(data, base_dir=root)


def test_require_proven_places_outputs_whose_outputs_are_equal(tmp_path: Path) -> None:
    summary = run_batch(cnn_job(tmp_path, checks={"require": "proven"}))
    assert summary.ok
    for item in summary.items:
        assert item.functional == "passed" and item.mapping_status == "proven equal"
        assert item.export == "placed" and Path(item.output or "").exists()


def test_require_proven_needs_the_source_architecture(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        cnn_job(tmp_path, checks={"require": "proven"}, source_module=None)
    assert "proven compares outputs with the source" in str(err.value)
    with pytest.raises(ConfigError) as err:
        cnn_job(tmp_path, checks={"require": "proven", "functional": False})
    assert "needs the functional check" in str(err.value)


def test_require_proven_refuses_an_output_whose_outputs_were_not_compared() -> None:
    assert refusal("proven", validation=True, functional=True) is None
    assert "functional did not run" in (refusal("proven", validation=True, functional=None) or "")
    assert "functional failed" in (refusal("proven", validation=True, functional=False) or "")
    assert refusal("loads", validation=True, functional=None) is None


def test_verify_stage_searches_and_keeps_the_proven_mapping(tmp_path: Path) -> None:
    source = trained_like(OldCNN(**CNN), seed=1).eval()
    src_path = tmp_path / "old.safetensors"
    save_file(source.state_dict(), src_path)
    target = RefactoredCNN(**CNN).eval()
    dummy = torch.randn(2, 3, 16, 16)
    good = WeightMapper(source, target, dummy_input=dummy).suggest_mapping()
    # the two same-shape convolutions in a row, exchanged: it loads, it computes otherwise
    convs = [p for p in good.pairs if p.source_shape == (16, 16, 3, 3)]
    a, b = convs[0], convs[1]
    pairs = [
        replace(p, target=b.target) if p is a else replace(p, target=a.target) if p is b else p
        for p in good.pairs
    ]
    broken = MappingResult(pairs, multi=list(good.multi))
    converted = tmp_path / "new.safetensors"
    save_file(broken.convert(source.state_dict()), converted)
    out = ops.functional_check(
        str(src_path), str(converted), OldCNN(**CNN), RefactoredCNN(**CNN), dummy, broken
    )
    assert out["ok"] is False
    assert out["proof"]["state"] == "proven_equal" and out["proof"]["fixes"]
    assert out["status"]["state"] == "differs" and "proven_mapping" in out
    fixed = MappingResult.from_dict(out["proven_mapping"])
    proven = RefactoredCNN(**CNN).eval()
    proven.load_state_dict(fixed.convert(source.state_dict()))
    torch.testing.assert_close(proven(dummy), source(dummy))
