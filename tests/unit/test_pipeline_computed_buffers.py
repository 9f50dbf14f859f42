"""The functional check loads a source checkpoint that holds a buffer its module computes."""

from __future__ import annotations

import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.pipeline.ops import functional_check
from weightmapper.result import MappingResult


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        # Saved by an older version as persistent, registered here as computed (as
        # transformers 5 does with BERT's position_ids).
        self.register_buffer("positions", torch.arange(4), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x + self.positions)


def test_a_saved_computed_buffer_does_not_fail_the_strict_load(tmp_path) -> None:
    source = _Net()
    old = {**source.state_dict(), "positions": torch.arange(4)}
    save_file(old, tmp_path / "old.safetensors")
    save_file(dict(source.state_dict()), tmp_path / "new.safetensors")
    mapping = MappingResult.from_simple({"fc.weight": "fc.weight", "fc.bias": "fc.bias"})
    out = functional_check(
        str(tmp_path / "old.safetensors"),
        str(tmp_path / "new.safetensors"),
        _Net(),
        _Net(),
        torch.randn(2, 4),
        mapping,
    )
    assert out["ok"] and out["max_abs_diff"] == 0.0
