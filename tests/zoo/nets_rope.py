"""A single attention with RoPE written either way, for tests of layouts: rotate-half (HF) or
interleaved pairs (Meta, torchtune). Same names, same shapes, other row order."""

from __future__ import annotations

import torch
from torch import nn


class RopeAttention(nn.Module):
    """One attention with RoPE written either way: rotate-half, or on interleaved pairs."""

    def __init__(self, interleaved: bool, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(dim, dim) for _ in range(3))
        self.o = nn.Linear(dim, dim)
        self.heads, self.interleaved = heads, interleaved

    def rope(self, x: torch.Tensor) -> torch.Tensor:
        n, d = x.shape[-2], x.shape[-1]
        angle = torch.arange(n)[:, None] * torch.arange(d // 2)[None, :] * 0.1
        cos, sin = angle.cos(), angle.sin()
        if self.interleaved:
            pairs = x.reshape(*x.shape[:-1], d // 2, 2)
            a, b = pairs[..., 0], pairs[..., 1]
            return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
        a, b = x[..., : d // 2], x[..., d // 2 :]
        cos, sin = torch.cat([cos, cos], -1), torch.cat([sin, sin], -1)
        return x * cos + torch.cat([-b, a], dim=-1) * sin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        split = lambda t: t.view(b, n, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = torch.softmax(self.rope(q) @ self.rope(k).transpose(-1, -2), dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(b, n, d))
