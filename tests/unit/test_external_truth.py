"""The external-truth bench reads ground truth back from a converter (bench/external/truth.py).

No accuracy is asserted here: these tests check that the truth derivation reads every layout
a converter produces, and that one real case (transformers' own legacy DINOv2 conversion, a
fused SwiGLU tensor chunked in two) derives and verifies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)  # bench/ is a package of the repository, not of the install

from bench.external.truth import derive  # noqa: E402


def _layouts_converter(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A converter doing one of each layout the bench labels (stands in for another project's)."""
    q, k = sd["attn.q"], sd["attn.k"]
    perm = torch.tensor([0, 2, 1, 3])
    a, b = sd["mlp.fused"].chunk(2, dim=0)
    return {
        "q": q[perm],
        "k_t": k.t().contiguous(),
        "gate": a,
        "up": b,
        "qk": torch.cat([q, k]),
        "norm": sd["norm"],
    }


def test_derive_reads_every_layout_back() -> None:
    shapes = {
        "attn.q": torch.Size([4, 3]),
        "attn.k": torch.Size([4, 3]),
        "mlp.fused": torch.Size([6, 3]),
        "norm": torch.Size([3]),
        "dropped": torch.Size([2]),
    }
    truth = derive(shapes, _layouts_converter, ["q", "k_t", "gate", "up", "qk", "norm", "extra"])
    u = truth.units
    assert (u["q"].sources, u["q"].layout) == (("attn.q",), "rows permuted")
    assert (u["k_t"].sources, u["k_t"].layout) == (("attn.k",), "transpose")
    assert (u["gate"].layout, u["up"].layout) == ("slice", "slice")
    assert u["up"].sources == ("mlp.fused",)
    assert (u["qk"].sources, u["qk"].layout) == (("attn.q", "attn.k"), "concat")
    assert u["norm"].layout == "identity"
    assert truth.unmapped_source == {"dropped"}
    assert truth.unmapped_target == {"extra"}
    # the gather reproduces the converter on other values exactly
    g = torch.Generator().manual_seed(0)
    real = {k: torch.randn(s, generator=g) for k, s in shapes.items()}
    expected = _layouts_converter(real)
    for key, tensor in truth.convert(real).items():
        assert torch.equal(tensor, expected[key]), key


def test_derive_rejects_a_converter_that_computes_values() -> None:
    with pytest.raises(ValueError, match="no source tensor held"):
        derive({"a": torch.Size([2, 2])}, lambda sd: {"b": sd["a"] * 0.5})


def test_transformers_legacy_case_derives_and_verifies() -> None:
    pytest.importorskip("transformers")
    from bench.external.case import CASES
    from bench.external.cases_hf import legacy_checkpoint  # noqa: F401  (registers the cases)
    from bench.external.evaluate import verify_truth

    case = CASES["hf-legacy-dinov2-swiglu"]
    if case.available() is not None:
        pytest.skip(f"needs {case.available()}")
    built = case.build()
    target = built.build_target()
    truth = derive(
        {k: v.shape for k, v in built.source_sd.items()}, built.converter, list(target.state_dict())
    )
    ok, how, _ = verify_truth(built, truth)
    assert ok, how
    fused = [t for t in truth.units.values() if t.layout == "slice"]
    # each block's weights_in (weight and bias) is chunked into gate_proj and up_proj
    assert fused and all(len(t.sources) == 1 and "weights_in" in t.sources[0] for t in fused)
    assert {t.target.rsplit(".", 2)[-2] for t in fused} == {"gate_proj", "up_proj"}


def test_an_unknown_case_name_lists_the_known_cases() -> None:
    from bench.external.run import load_cases, pick_cases

    known = sorted(load_cases())
    chosen, error = pick_cases("no-such-case")
    assert chosen == []
    assert "no-such-case" in error and all(name in error for name in known)
    chosen, error = pick_cases(known[0])
    assert [c.name for c in chosen] == [known[0]] and error == ""
