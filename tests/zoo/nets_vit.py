"""A hand-written timm-style ViT: cls_token, pos_embed, patch_embed.proj, blocks.{i}, norm.

Same function as HF's ``ViTModel`` without pooler (pre-norm, exact GELU, eps 1e-12); the
attention is fused (``attn.qkv``, a merge of HF's q/k/v) or separate (``attn.query`` ...).
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.nets_text import BertFfn, SdpaAttention


class VitAttention(SdpaAttention):
    """qkv or query/key/value, then proj."""

    out_name = "proj"


class VitMlp(BertFfn):
    """fc1, GELU, fc2 (the same computation as BERT's feed-forward)."""


class LayerScale(nn.Module):
    """timm LayerScale: a learned per-channel ``gamma``, initialised to ``init``."""

    def __init__(self, d: int, init: float = 1.0) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((d,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → scaled tokens."""
        return x * self.gamma


class VitBlock(nn.Module):
    """norm1, attn, [ls1], norm2, mlp, [ls2] (timm order)."""

    def __init__(
        self, d: int, heads: int, hidden: int, eps: float, fused: bool, layer_scale: bool = False
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.attn = VitAttention(d, heads, fused)
        self.ls1 = LayerScale(d) if layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(d, eps=eps)
        self.mlp = VitMlp(d, hidden)
        self.ls2 = LayerScale(d) if layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchProj(nn.Module):
    """proj: a strided conv turning an image into patch tokens."""

    def __init__(self, channels: int, d: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, d, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, N, D)."""
        return self.proj(x).flatten(2).transpose(1, 2)


class HandVit(nn.Module):
    """cls_token, pos_embed, patch_embed, blocks.{i}, norm; returns all tokens."""

    def __init__(
        self,
        image: int,
        patch: int,
        channels: int,
        d: int,
        layers: int,
        heads: int,
        hidden: int,
        eps: float = 1e-12,
        fused: bool = False,
        layer_scale: bool = False,
    ) -> None:
        super().__init__()
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, d))
        self.patch_embed = PatchProj(channels, d, patch)
        self.blocks = nn.ModuleList(
            VitBlock(d, heads, hidden, eps, fused, layer_scale) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images → (B, N + 1, D) normalized tokens."""
        t = self.patch_embed(x)
        t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1) + self.pos_embed
        for b in self.blocks:
            t = b(t)
        return self.norm(t)
