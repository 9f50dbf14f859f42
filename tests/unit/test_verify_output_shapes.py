"""`verify=True` onto a target with a resized head says the output shapes and names the head."""

from __future__ import annotations

import torch
from torch import nn

from weightmapper import WeightMapper
from weightmapper.proof import prove
from weightmapper.report import build_report
from weightmapper.result import shapes_text


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
    assert "the outputs differ in shape: target (1, 12), source (1, 10)" in proof.check.summary()
