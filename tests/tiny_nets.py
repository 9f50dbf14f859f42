"""Tiny networks more than one test file builds (each test still builds its own instance)."""

from __future__ import annotations

import torch
from torch import nn


class TiedLM(nn.Module):
    """Token ids → logits; the token embedding and the output head share one weight, as in
    GPT-2."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.block = nn.Linear(6, 6)
        self.lm_head = nn.Linear(6, 10, bias=False)
        self.lm_head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(torch.relu(self.block(self.embed(ids))))
