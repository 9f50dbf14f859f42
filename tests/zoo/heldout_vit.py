"""Small vision transformers laid out as torchvision, timm and OpenCLIP write them.

torchvision keeps ``nn.MultiheadAttention`` (fused ``in_proj_weight``), timm a fused
``attn.qkv`` Linear, OpenCLIP ``attn.in_proj_weight`` plus a bare ``proj`` matrix applied as
``x @ proj``; all three compute the same attention with q, k, v stacked in that order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

VIT_DIM = 32
VIT_HEADS = 4
VIT_PATCH = 4
VIT_IMAGE = 16
VIT_TOKENS = (VIT_IMAGE // VIT_PATCH) ** 2 + 1


class TvMLPBlock(nn.Sequential):
    """torchvision ``MLPBlock``: ``0`` Linear, GELU, Dropout, ``3`` Linear, Dropout."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(0.0),
            nn.Linear(hidden, dim),
            nn.Dropout(0.0),
        )


class TvEncoderBlock(nn.Module):
    """torchvision ViT ``EncoderBlock``: ``ln_1``, ``self_attention``, ``ln_2``, ``mlp``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim, eps=1e-6)
        self.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = TvMLPBlock(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        y, _ = self.self_attention(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln_2(x))


class TvEncoder(nn.Module):
    """torchvision ViT ``Encoder``: ``pos_embedding``, ``layers.encoder_layer_I``, ``ln``."""

    def __init__(self, depth: int, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.zeros(1, VIT_TOKENS, dim))
        layers = OrderedDict(
            (f"encoder_layer_{i}", TvEncoderBlock(dim, heads, hidden)) for i in range(depth)
        )
        self.layers = nn.Sequential(layers)
        self.ln = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(x + self.pos_embedding))


class TvViT(nn.Module):
    """torchvision ``vit_b_16`` layout: ``class_token``, ``conv_proj``, ``encoder``, ``heads.head``."""

    def __init__(self, depth: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(3, VIT_DIM, VIT_PATCH, VIT_PATCH)
        self.class_token = nn.Parameter(torch.zeros(1, 1, VIT_DIM))
        self.encoder = TvEncoder(depth, VIT_DIM, VIT_HEADS, 4 * VIT_DIM)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(VIT_DIM, num_classes)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image → patch tokens with the class token in front (no position embedding yet)."""
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        return torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.encoder(self.embed(x))[:, 0])


class TimmAttention(nn.Module):
    """timm ``Attention``: fused ``qkv`` Linear, ``proj``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(y.transpose(1, 2).reshape(b, n, c))


class TimmBlock(nn.Module):
    """timm ViT ``Block``: ``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = TimmAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, hidden)
        self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp.fc2(F.gelu(self.mlp.fc1(self.norm2(x))))


class TimmPatchEmbed(nn.Module):
    """timm ``PatchEmbed``: ``proj`` conv."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, VIT_DIM, VIT_PATCH, VIT_PATCH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class TimmViT(nn.Module):
    """timm ``vit_*`` layout: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.I``,
    ``norm``, ``head``; ``mlp_ratios`` gives each block's MLP width (4 = standard)."""

    def __init__(self, mlp_ratios: Sequence[int] = (4, 4, 4), num_classes: int = 10) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, VIT_DIM))
        self.pos_embed = nn.Parameter(torch.zeros(1, VIT_TOKENS, VIT_DIM))
        self.patch_embed = TimmPatchEmbed()
        self.blocks = nn.Sequential(
            *[TimmBlock(VIT_DIM, VIT_HEADS, r * VIT_DIM) for r in mlp_ratios]
        )
        self.norm = nn.LayerNorm(VIT_DIM, eps=1e-6)
        self.head = nn.Linear(VIT_DIM, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Image → patch tokens with the class token in front (no position embedding yet)."""
        x = self.patch_embed(x)
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.blocks(self.embed(x) + self.pos_embed))
        return self.head(x[:, 0])


def vit_block_pairs(tv_index: int, timm_index: int) -> list[tuple[str, str]]:
    """One torchvision encoder layer and one timm block → (source key, target key) pairs."""
    tv = f"encoder.layers.encoder_layer_{tv_index}"
    tm = f"blocks.{timm_index}"
    pairs = [
        (f"{tv}.self_attention.in_proj_weight", f"{tm}.attn.qkv.weight"),
        (f"{tv}.self_attention.in_proj_bias", f"{tm}.attn.qkv.bias"),
    ]
    for a, b in (
        ("ln_1", "norm1"),
        ("self_attention.out_proj", "attn.proj"),
        ("ln_2", "norm2"),
        ("mlp.0", "mlp.fc1"),
        ("mlp.3", "mlp.fc2"),
    ):
        pairs += [(f"{tv}.{a}.{p}", f"{tm}.{b}.{p}") for p in ("weight", "bias")]
    return pairs


def vit_outer_pairs() -> list[tuple[str, str]]:
    """torchvision ViT ↔ timm ViT keys outside the blocks."""
    return [
        ("class_token", "cls_token"),
        ("conv_proj.weight", "patch_embed.proj.weight"),
        ("conv_proj.bias", "patch_embed.proj.bias"),
        ("encoder.pos_embedding", "pos_embed"),
        ("encoder.ln.weight", "norm.weight"),
        ("encoder.ln.bias", "norm.bias"),
        ("heads.head.weight", "head.weight"),
        ("heads.head.bias", "head.bias"),
    ]


# --- OpenCLIP visual tower -----------------------------------------------------------------


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x), CLIP's activation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class OpenClipResBlock(nn.Module):
    """OpenCLIP ``ResidualAttentionBlock``: ``ln_1``, ``attn`` (MHA), ``ln_2``,
    ``mlp.c_fc``, ``mlp.c_proj``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(dim, hidden), gelu=QuickGELU(), c_proj=nn.Linear(hidden, dim)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class OpenClipVisual(nn.Module):
    """OpenCLIP ``VisionTransformer`` layout: ``class_embedding`` (C,), ``positional_embedding``
    (N, C), ``proj`` (C, D), ``conv1``, ``ln_pre``, ``transformer.resblocks.I``, ``ln_post``.

    Returns (projected class token, tokens before ``ln_post``) like HF's CLIP vision model.
    """

    def __init__(self, depth: int, dim: int, heads: int, hidden: int, proj_dim: int) -> None:
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(dim))
        self.positional_embedding = nn.Parameter(torch.zeros(VIT_TOKENS, dim))
        self.proj = nn.Parameter(torch.zeros(dim, proj_dim))
        self.conv1 = nn.Conv2d(3, dim, VIT_PATCH, VIT_PATCH, bias=False)
        self.ln_pre = nn.LayerNorm(dim)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.Sequential(
            *[OpenClipResBlock(dim, heads, hidden) for _ in range(depth)]
        )
        self.ln_post = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv1(x).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], 1) + self.positional_embedding
        tokens = self.transformer.resblocks(self.ln_pre(x))
        pooled = self.ln_post(tokens[:, 0])
        return pooled @ self.proj, tokens
