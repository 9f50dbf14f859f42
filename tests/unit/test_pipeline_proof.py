"""`checks.require: proven` and the verify stage's search: only outputs with equal outputs are
placed, and a conversion that differs gets a diagnosis and, when one exists, a proven mapping."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import save_file

from pipeline_jobs import CNN, cnn_job_data
from weightmapper.errors import ConfigError
from weightmapper.examples.cnn import OldCNN, RefactoredCNN
from weightmapper.examples.generate import trained_like
from weightmapper.mapper import WeightMapper
from weightmapper.pipeline import ops
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import JobConfig, parse_job
from weightmapper.pipeline.policy import refusal
from weightmapper.result import MappingResult
from weightmapper.targets import build_module


def cnn_job(root: Path, **extra: Any) -> JobConfig:
    data = cnn_job_data(name="t", mapper={"threshold": 0.5}, **extra)
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


LLAMA = "weightmapper.examples.llama"
HIDDEN = "hidden_rope:HiddenRopeLlama"
"""transformers' names over RoPE on pairs written so no forward pass shows it
(``tests/hidden_rope.py``): the first pass follows the names and is wrong; the search fixes it."""


def llama_job(root: Path, n: int = 2, source: str = HIDDEN, **extra: Any) -> JobConfig:
    """Checkpoints trained-like in a source architecture (by default one whose RoPE layout the
    first pass cannot read) → transformers' layout (rotate-half): names map every tensor, only
    the outputs show the row order."""
    (root / "meta").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        model = build_module(source)
        save_file(trained_like(model, seed=i + 1).state_dict(), root / f"meta/m{i}.safetensors")
    data = {
        "name": "llama",
        "store": "store",
        "sources": ["meta/*.safetensors"],
        "source_module": {"spec": source},
        "target": {"module": f"{LLAMA}:HFLlama"},
        "dummy_input": {"shape": [2, 16], "dtype": "int64", "kind": "randint", "high": 64},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
        **extra,
    }
    return parse_job(data, base_dir=root)


def _outputs_equal(source_path: Path, converted: Path, source: str = HIDDEN) -> bool:
    from safetensors.torch import load_file

    from weightmapper.examples.llama import HFLlama

    src, tgt = build_module(source).eval(), HFLlama().eval()
    src.load_state_dict(load_file(str(source_path)))
    tgt.load_state_dict(load_file(str(converted)))
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return torch.allclose(src(ids), tgt(ids), atol=1e-5, rtol=1e-4)


def _stage(item: Any, name: str) -> Any:
    return next(s for s in item.stages if s.name == name)


@pytest.mark.parametrize("require", ["proven", "loads", "none"])
def test_the_prove_stage_fixes_the_mapping_and_the_proven_file_is_exported(
    tmp_path: Path, require: str
) -> None:
    job = llama_job(tmp_path, checks={"require": require})
    summary = run_batch(job)
    assert summary.ok, summary.to_dict()
    for item in summary.items:
        assert [s.name for s in item.stages][3:6] == ["assign", "prove", "convert"]
        assert item.functional == "passed" and item.mapping_status == "proven equal"
        assert item.export == "placed" and item.search_fixes == 2
        # what was placed computes the source's function: the search's mapping, not the first
        assert _outputs_equal(Path(item.source), Path(item.output or ""))
        report = json.loads(Path(item.report or "").read_text())
        fixes = report["mapping"]["metadata"]["proof"]["fixes"]
        assert fixes and all("rope_permute" in f for f in fixes)
        assert report["mapping"]["status"]["state"] == "proven_equal"


def test_a_layout_both_forward_passes_show_is_right_at_first_pass(tmp_path: Path) -> None:
    """Meta's Llama → transformers': RoPE read on both sides, nothing left for the search."""
    summary = run_batch(llama_job(tmp_path, n=1, source=f"{LLAMA}:MetaLlama"))
    item = summary.items[0]
    assert summary.ok and item.mapping_status == "proven equal" and item.search_fixes == 0
    assert _outputs_equal(Path(item.source), Path(item.output or ""), f"{LLAMA}:MetaLlama")
    report = json.loads(Path(item.report or "").read_text())
    pairs = {p["source"]: p for p in report["mapping"]["pairs"]}
    q = pairs["layers.0.attention.wq.weight"]
    assert q["transform"]["name"] == "rope_permute" and q["confidence"] == "high"
    assert "read from both forward passes" in q["note"]


def test_a_layout_the_first_pass_could_not_read_is_said_on_the_pair(tmp_path: Path) -> None:
    job = llama_job(tmp_path, n=1, checks={"require": "none", "functional": False})
    item = run_batch(job).items[0]
    report = json.loads(Path(item.report or "").read_text())
    pairs = {p["source"]: p for p in report["mapping"]["pairs"]}
    q = pairs["model.layers.0.self_attn.q_proj.weight"]
    assert q["transform"]["name"] == "identity" and q["confidence"] == "ambiguous"
    assert q["note"].startswith("layout assumed from names: RoPE rotate_half on both sides")
    assert "source's forward pass did not show it" in q["note"]


def test_the_proven_mapping_is_cached_and_its_key_follows_what_decides_it(tmp_path: Path) -> None:
    job = llama_job(tmp_path, n=1)
    first = run_batch(job)
    again = run_batch(job)
    assert not _stage(first.items[0], "prove").cached and _stage(again.items[0], "prove").cached
    assert _stage(again.items[0], "convert").cached
    # another input is another proof: the stage runs again
    other = replace(
        job,
        migrations=(
            replace(job.migrations[0], dummy_input=replace(job.migrations[0].dummy_input, seed=3)),
        ),
    )
    rerun = run_batch(other)
    assert not _stage(rerun.items[0], "prove").cached
    assert rerun.items[0].mapping_status == "proven equal"


def test_require_proven_withholds_an_output_no_search_can_prove(tmp_path: Path) -> None:
    # the target computes another function (a different head count): nothing is placed
    job = llama_job(
        tmp_path,
        n=1,
        target={"module": f"{LLAMA}:HFLlama", "kwargs": {"n_heads": 2, "n_kv_heads": 1}},
        checks={"require": "proven"},
    )
    summary = run_batch(job)
    item = summary.items[0]
    assert item.functional == "failed" and (item.mapping_status or "").startswith("differs at")
    assert item.export == "withheld" and not (tmp_path / "out" / "m0.safetensors").exists()
    # a check that ran and failed refuses the output at every level but none
    loads = run_batch(replace(job, migrations=(replace(job.migrations[0], require="loads"),)))
    assert loads.items[0].export == "withheld"
    anyway = run_batch(replace(job, migrations=(replace(job.migrations[0], require="none"),)))
    assert anyway.items[0].export == "placed"
    assert (anyway.items[0].mapping_status or "").startswith("differs at")


def test_the_summary_says_the_search_fixed_the_mapping(tmp_path: Path, capsys: Any) -> None:
    from weightmapper.cli.migrate import render_summary

    summary = run_batch(llama_job(tmp_path, n=1))
    assert summary.to_dict()["checkpoints"][0]["search_fixes"] == 2
    render_summary(summary)
    out = capsys.readouterr().out
    assert "proven m0.safetensors: the search fixed 2 place(s)" in " ".join(out.split())
