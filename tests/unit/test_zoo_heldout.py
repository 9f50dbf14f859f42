"""The held-out zoo: every case's ground truth is complete and proven by equal outputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from zoo import cases, model_output, randomize_
from zoo.case import ZooCase

HELDOUT = cases(split="heldout")

ALL = [
    pytest.param(
        c,
        id=c.name,
        marks=pytest.mark.skipif(not c.available(), reason=f"needs {', '.join(c.requires)}"),
    )
    for c in HELDOUT
]


def _converted_target(case: ZooCase, seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Case → (randomized source, target loaded strictly from the ground-truth conversion).

    Target keys without a true partner keep the target's own (randomized) values.
    """
    source = randomize_(case.build_source(), seed).eval()
    target = randomize_(case.build_target(), seed + 1).eval()
    converted = case.convert_with_ground_truth(source.state_dict())
    own = target.state_dict()
    assert set(own) - set(converted) == case.must_stay_unmapped["target"]
    converted.update({k: own[k] for k in case.must_stay_unmapped["target"]})
    target.load_state_dict(converted, strict=True)
    return source, target


def test_heldout_cases_stay_out_of_the_tuning_split() -> None:
    assert len(HELDOUT) >= 8
    assert not {c.name for c in HELDOUT} & {c.name for c in cases()}
    assert len(cases(split=None)) == len(cases()) + len(HELDOUT)
    assert {c.category for c in HELDOUT} == {"cross_library", "transform", "trap"}


@pytest.mark.parametrize("case", ALL)
def test_truth_covers_both_state_dicts_exactly(case: ZooCase) -> None:
    src = case.build_source().state_dict()
    tgt = case.build_target().state_dict()
    lone = case.must_stay_unmapped
    src_claimed = list(case.ground_truth) + [s for m in case.expected_multi for s in m.sources]
    tgt_claimed = list(case.ground_truth.values()) + [
        t for m in case.expected_multi for t in m.targets
    ]
    src_claimed += sorted(lone["source"])
    tgt_claimed += sorted(lone["target"])
    assert len(src_claimed) == len(set(src_claimed)) == len(src)
    assert len(tgt_claimed) == len(set(tgt_claimed)) == len(tgt)
    assert set(src_claimed) == set(src) and set(tgt_claimed) == set(tgt)
    if case.category == "cross_library":
        assert case.one_to_one and not lone["source"] and not lone["target"]
    for k, v in case.convert_with_ground_truth(src).items():
        assert v.shape == tgt[k].shape and v.dtype == tgt[k].dtype, k


def _outputs(case: ZooCase, model: torch.nn.Module, x: Any, side: int) -> tuple[torch.Tensor, ...]:
    """The whole model's outputs, or for a trap the features both models share."""
    if case.same_function:
        return model_output(model, x)
    assert case.shared_features is not None, "a trap must prove its pairs on shared features"
    with torch.no_grad():
        return (case.shared_features[side](model, x),)


@pytest.mark.parametrize("case", ALL)
def test_ground_truth_gives_equal_outputs(case: ZooCase) -> None:
    source, target = _converted_target(case)
    x = case.dummy_input()
    a, b = _outputs(case, source, x, 0), _outputs(case, target, x, 1)
    assert len(a) == len(b)
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(v, u, rtol=1e-4, atol=1e-5)

    # dead activations would make the proof vacuous: the outputs must depend on the input
    for out in model_output(source, x):
        assert float((out[0] - out[1]).abs().max()) > 1e-2 * max(1.0, float(out.abs().max()))

    # the proof has teeth: exchanging two same-shape converted tensors is visible
    sd = dict(target.state_dict())
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for k in case.ground_truth.values():
        if sd[k].dim() >= 2:
            by_shape.setdefault(tuple(sd[k].shape), []).append(k)
    p, q = next(v[:2] for v in by_shape.values() if len(v) >= 2)
    sd[p], sd[q] = sd[q].clone(), sd[p].clone()
    target.load_state_dict(sd, strict=True)
    swapped = _outputs(case, target, x, 1)[0]
    assert not torch.allclose(swapped, a[0], rtol=1e-4, atol=1e-5), (p, q)


def test_dummy_inputs_are_deterministic() -> None:
    for case in HELDOUT:
        assert torch.equal(case.dummy_input(), case.dummy_input()), case.name
