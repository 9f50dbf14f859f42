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


class TorchvisionViTBlock(nn.Module):
    """A torchvision-style encoder block (no forward: only its tensors' names matter)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.self_attention = nn.Linear(dim, dim)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class TimmViTBlock(nn.Module):
    """A timm-style block: the same tensors under other names."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)


def torchvision_vit_stack(ratios: tuple[int, ...], dim: int = 8) -> nn.Module:
    """MLP ratio per block → ``layers.encoder_layer_{i}`` stack of torchvision-style blocks."""
    net = nn.Module()
    net.layers = nn.Sequential()
    for i, r in enumerate(ratios):
        net.layers.add_module(f"encoder_layer_{i}", TorchvisionViTBlock(dim, r * dim))
    return net


def timm_vit_stack(ratios: tuple[int, ...], dim: int = 8) -> nn.Module:
    """MLP ratio per block → ``blocks.{i}`` stack of timm-style blocks."""
    net = nn.Module()
    net.blocks = nn.ModuleList(TimmViTBlock(dim, r * dim) for r in ratios)
    return net


def randomized(m: nn.Module, seed: int) -> nn.Module:
    """Module + seed → the same module in eval mode, every float tensor drawn from [0.5, 1.5)
    (no zeros or ones, so a wrong pairing shows in the outputs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in m.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
    return m.eval()
