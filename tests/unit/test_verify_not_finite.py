"""A source whose output holds NaN or inf proves nothing: the check says `not proven`."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from weightmapper import WeightMapper
from weightmapper.proof import prove
from weightmapper.report import build_report, check_headline
from weightmapper.result import status_of
from weightmapper.verify import check_outputs, not_finite_text


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def _poisoned(value: float) -> tuple[nn.Module, nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    source, target = _net(), _net()
    with torch.no_grad():
        source[0].weight.fill_(value)
    return source, target, torch.randn(2, 4)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_poisoned_source_is_never_proven_equal(value: float) -> None:
    source, target, x = _poisoned(value)
    # An empty mapping leaves the target's own weights: no mapping could be proven by NaN.
    check = check_outputs(source, target, {}, x)
    assert not check.equal and check.not_finite is not None
    assert "of 4 values" in check.not_finite
    assert check.first_diverging is None  # nothing can be located downstream of a NaN
    assert status_of(None, check).state == "loads_not_proven"
    assert check.summary().startswith("outputs NOT PROVEN: the source's output holds")
    json.dumps(check.to_dict(), allow_nan=False)


def test_nan_outputs_that_agree_everywhere_are_not_a_proof() -> None:
    """The right mapping onto a copy gives NaN where the source does: still not proven."""
    source, target, x = _poisoned(float("nan"))
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping(verify=True)
    check = result.metadata["functional_check"]
    assert check["equal"] is False and "4 NaN of 4 values" in check["not_finite"]
    report = build_report(result, hash_inputs=False)
    json.dumps(report, allow_nan=False)
    assert report["status"]["state"] == "loads_not_proven"
    ok, headline = check_headline("functional_check", report["functional_check"])
    assert not ok and headline.startswith("outputs not proven: the source's output holds")


def test_the_search_spends_nothing_on_a_source_that_is_not_finite() -> None:
    source, target, x = _poisoned(float("nan"))
    result = WeightMapper(source, target).suggest_mapping()
    proof = prove(source, target, result, x)
    assert proof.state == "loads_not_proven" and not proof.equal
    assert proof.forward_passes == 1 and proof.alternatives_tried == 0
    assert proof.module is None and proof.fixes == ()
    assert proof.status.state == "loads_not_proven"
    assert "NaN" in proof.status.detail
    json.dumps(proof.to_dict(), allow_nan=False)


def test_finite_outputs_are_checked_as_before() -> None:
    torch.manual_seed(0)
    source, target, x = _net(), _net(), torch.randn(2, 4)
    result = WeightMapper(source, target).suggest_mapping()
    check = check_outputs(source, target, result, x)
    assert check.equal and check.not_finite is None
    assert prove(source, target, result, x).state == "proven_equal"


def test_not_finite_text_counts_nan_and_inf() -> None:
    assert not_finite_text(torch.tensor([1.0, 2.0])) is None
    assert not_finite_text(torch.tensor([1, 2])) is None
    text = not_finite_text(torch.tensor([float("nan"), float("inf"), -float("inf"), 0.0]))
    assert text is not None and text.startswith("the source's output holds 1 NaN and 2 inf of 4")
