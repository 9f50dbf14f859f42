"""A tiny Swin-like transformer written two ways (windows span the whole map; no shift).

- :class:`SwinEndMerge` follows the original Swin layout: ``layers.{i}.downsample`` (patch
  merging) at the *end* of stage i, and a persistent ``relative_position_index`` buffer in
  every attention (no counterpart in the other model: it must stay unmapped).
- :class:`SwinStartMerge` follows the later timm layout: ``stages.{i}.downsample`` at the
  *start* of stage i+1, registered before its blocks; the index is computed, not stored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from zoo.nets_resnet import Head


def relative_position_index(w: int) -> torch.Tensor:
    """Window side → (w², w²) index into a ((2w−1)², heads) relative-bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
    rel[:, :, 0] *= 2 * w - 1
    return rel.sum(-1)


class WindowAttention(nn.Module):
    """Multi-head attention over one window with a learned relative-position bias."""

    def __init__(self, c: int, heads: int, w: int, persistent_index: bool) -> None:
        super().__init__()
        self.heads = heads
        if persistent_index:
            # original order: table and index first, then the projections
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
            self.register_buffer("relative_position_index", relative_position_index(w))
            self.qkv = nn.Linear(c, 3 * c)
            self.proj = nn.Linear(c, c)
        else:
            self.qkv = nn.Linear(c, 3 * c)
            self.proj = nn.Linear(c, c)
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, heads))
            self.register_buffer(
                "relative_position_index", relative_position_index(w), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens of one window → (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * (c // self.heads) ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(n, n, -1).permute(2, 0, 1)[None]
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(y)


class Mlp(nn.Module):
    """fc1, GELU, fc2."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """norm1, attn, norm2, mlp (pre-norm, residual)."""

    def __init__(self, c: int, heads: int, w: int, persistent_index: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(c)
        self.attn = WindowAttention(c, heads, w, persistent_index)
        self.norm2 = nn.LayerNorm(c)
        self.mlp = Mlp(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) → (B, H, W, C)."""
        b, h, w, c = x.shape
        t = x.reshape(b, h * w, c)
        t = t + self.attn(self.norm1(t))
        t = t + self.mlp(self.norm2(t))
        return t.reshape(b, h, w, c)


class PatchMerging(nn.Module):
    """2×2 neighbours concatenated (4C), norm, reduction to 2C."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * c)
        self.reduction = nn.Linear(4 * c, 2 * c, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) → (B, H/2, W/2, 2C)."""
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        return self.reduction(self.norm(x))


class PatchEmbed(nn.Module):
    """proj (strided conv), norm."""

    def __init__(self, c: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, c, patch, patch)
        self.norm = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → (B, H, W, C) tokens."""
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def _dims(embed: int, n: int) -> list[int]:
    return [embed * 2**i for i in range(n)]


class _EndStage(nn.Module):
    """blocks, then downsample (original Swin BasicLayer)."""

    def __init__(self, c: int, heads: int, w: int, depth: int, merge: bool) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(c, heads, w, True) for _ in range(depth))
        self.downsample = PatchMerging(c) if merge else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens (merged at the end)."""
        for b in self.blocks:
            x = b(x)
        return x if self.downsample is None else self.downsample(x)


@dataclass(frozen=True)
class SwinSizes:
    """What both Swin layouts are built from."""

    img: int = 16
    patch: int = 2
    embed: int = 8
    depths: tuple[int, ...] = (2, 2, 2)
    heads: tuple[int, ...] = (2, 4, 8)
    num_classes: int = 10

    @property
    def dims(self) -> list[int]:
        """Width of each stage: the embedding width, doubled at every merge."""
        return _dims(self.embed, len(self.depths))

    @property
    def res(self) -> int:
        """Side of the first stage's token grid."""
        return self.img // self.patch


class _Swin(nn.Module):
    """Swin from its sizes; each layout lays out its stages, norm and head in ``build``."""

    def __init__(self, **sizes: Any) -> None:
        super().__init__()
        s = SwinSizes(**sizes)
        self.patch_embed = PatchEmbed(s.embed, s.patch)
        self.build(s)

    def build(self, s: SwinSizes) -> None:
        """Sizes → the stages, norm and head after the patch embedding."""
        raise NotImplementedError


class SwinEndMerge(_Swin):
    """patch_embed, layers.{i}.blocks/downsample, norm, head (original Swin)."""

    def build(self, s: SwinSizes) -> None:
        """Stages that merge at their end, then norm and head."""
        dims, n = s.dims, len(s.depths)
        self.layers = nn.ModuleList(
            _EndStage(dims[i], s.heads[i], s.res // 2**i, s.depths[i], i < n - 1) for i in range(n)
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.head = nn.Linear(dims[-1], s.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x).mean((1, 2)))


class _StartStage(nn.Module):
    """downsample (registered first), then blocks (timm SwinTransformerStage)."""

    def __init__(self, cin: int, c: int, heads: int, w: int, depth: int, merge: bool) -> None:
        super().__init__()
        self.downsample = PatchMerging(cin) if merge else nn.Identity()
        self.blocks = nn.Sequential(*[SwinBlock(c, heads, w, False) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens (merged at the start)."""
        return self.blocks(self.downsample(x))


class SwinHead(Head):
    """fc on tokens (B, H, W, C) pooled over the grid."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__(c, num_classes, pool=(1, 2))


class SwinStartMerge(_Swin):
    """patch_embed, stages.{i}.downsample/blocks, norm, head.fc (timm Swin)."""

    def build(self, s: SwinSizes) -> None:
        """Stages that merge at their start, then norm and head."""
        dims, res = s.dims, s.res
        self.stages = nn.Sequential(
            *[
                _StartStage(dims[max(0, i - 1)], d, s.heads[i], res // 2**i, s.depths[i], i > 0)
                for i, d in enumerate(dims)
            ]
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.head = SwinHead(dims[-1], s.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        return self.head(self.norm(self.stages(self.patch_embed(x))))
