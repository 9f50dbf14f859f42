"""`verify=True` onto a target with a resized head says the output shapes and names the head."""

from __future__ import annotations

import json

import torch
from torch import nn

from weightmapper import WeightMapper
from weightmapper.proof import prove
from weightmapper.report import build_report, check_headline
from weightmapper.result import diff_text, shapes_text


class _Old(nn.Module):
    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_verify_says_the_output_shapes_and_the_unmapped_head() -> None:
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    source, target = _Old().eval(), _Old(classes=12).eval()
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping(verify=True)
    check = result.metadata["functional_check"]
    assert check["output_shapes"] == [[1, 12], [1, 10]]
    assert check["first_diverging_target"] == "fc"
    status = build_report(result, hash_inputs=False)["status"]
    assert status["state"] == "differs" and status["module"] == "fc"
    assert f"the outputs differ in shape ({shapes_text(((1, 12), (1, 10)))})" in status["detail"]
    assert "target (1, 12), source (1, 10)" in status["detail"]
    assert "fc (not mapped: it keeps its initial values)" in status["detail"]
    # The search says the shapes in the same words.
    proof = prove(source, target, result, x)
    assert proof.check.output_shapes == ((1, 12), (1, 10))
    assert "(target (1, 12), source (1, 10))" in proof.status.detail
    assert "the outputs differ in shape (target (1, 12), source (1, 10))" in proof.check.summary()


def test_outputs_of_another_shape_give_no_infinite_difference_anywhere() -> None:
    """Different output shapes have no element-wise difference: the check's dict says None
    (strict JSON has no infinity), and no text prints ``inf`` or says the shapes twice."""
    torch.manual_seed(0)
    x = torch.randn(1, 3, 8, 8)
    source, target = _Old().eval(), _Old(classes=12).eval()
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping(verify=True)
    check = result.metadata["functional_check"]
    assert check["max_abs_diff"] is None and check["max_rel_diff"] is None
    report = build_report(result, hash_inputs=False)
    json.dumps(report, allow_nan=False)  # raises on inf or NaN anywhere in the report
    proof = prove(source, target, result, x)
    json.dumps(proof.to_dict(), allow_nan=False)
    one_line = [
        proof.check.summary().splitlines()[0],
        check_headline("functional_check", report["functional_check"])[1],
        report["status"]["detail"],
        diff_text(check),
    ]
    for text in [*one_line, proof.check.summary(), proof.summary()]:
        assert "inf" not in text.replace(",", " ").split(), text
    for text in [*one_line, proof.check.summary()]:
        assert text.count("(1, 12)") <= 1, text  # the shapes said once, not again as a note
    assert "no element-wise difference" in diff_text(check)


def test_diff_text_gives_the_numbers_or_says_why_there_are_none() -> None:
    assert diff_text({"max_abs_diff": 3e-7, "max_rel_diff": 1e-7}) == (
        "max abs diff 3e-07, max rel diff 1e-07"
    )
    assert diff_text({"max_abs_diff": 0.0}) == "max abs diff 0"
    assert diff_text({"max_abs_diff": None}) == "differences not measured"
    assert diff_text({"max_abs_diff": float("inf")}) == "differences not measured"
    shapes = {"max_abs_diff": None, "output_shapes": [[2], [3]]}
    assert diff_text(shapes) == (
        "no element-wise difference: the outputs differ in shape (target (2,), source (3,))"
    )
