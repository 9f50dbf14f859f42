"""A tiny ConvNeXt written as the official repository and as a conv-MLP timm-like variant.

The official layout keeps every downsample layer in ``downsample_layers`` (registered before
all stages), uses Linear point-wise layers and a ``(C,)`` layer scale. The other puts each
downsample at the start of its stage, uses 1×1 convolutions (weights ``(O, I, 1, 1)``) and a
``(C, 1, 1)`` layer scale: a reshape for every MLP weight and every layer scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNormCF(nn.Module):
    """Official ConvNeXt LayerNorm over channels of an (N, C, H, W) tensor."""

    def __init__(self, c: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → normalized over C."""
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LayerNorm2d(nn.LayerNorm):
    """timm LayerNorm2d: F.layer_norm on channels-last, back to channels-first."""

    def __init__(self, c: int) -> None:
        super().__init__(c, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → normalized over C."""
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class OfficialBlock(nn.Module):
    """dwconv, norm (channels-last LN), pwconv1, pwconv2 (Linear), gamma (C,)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.pwconv1 = nn.Linear(c, 4 * c)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * c, c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map (residual)."""
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


Sizes = tuple[int, ...]


class _ConvNeXt(nn.Module):
    """ConvNeXt from its sizes; each layout lays out its modules in ``build``."""

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 2),
        dims: tuple[int, ...] = (8, 16),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        self.build(depths, dims, num_classes)

    def build(self, depths: Sizes, dims: Sizes, num_classes: int) -> None:
        """Blocks and width per stage, classes → the network's modules."""
        raise NotImplementedError


class OfficialConvNeXt(_ConvNeXt):
    """downsample_layers.{i}, stages.{i}.{j}, norm, head."""

    def build(self, depths: Sizes, dims: Sizes, num_classes: int) -> None:
        """All downsamples first, then the stages, norm and head."""
        self.downsample_layers = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNormCF(dims[0]))]
            + [
                nn.Sequential(LayerNormCF(dims[i - 1]), nn.Conv2d(dims[i - 1], dims[i], 2, 2))
                for i in range(1, len(dims))
            ]
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[OfficialBlock(d) for _ in range(n)])
            for n, d in zip(depths, dims, strict=True)
        )
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        for ds, st in zip(self.downsample_layers, self.stages, strict=True):
            x = st(ds(x))
        return self.head(self.norm(x.mean((2, 3))))


class ConvMlp(nn.Module):
    """fc1, fc2 as 1×1 convolutions."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, 4 * c, 1)
        self.act = nn.GELU()
        self.fc2 = nn.Conv2d(4 * c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        return self.fc2(self.act(self.fc1(x)))


class ConvMlpBlock(nn.Module):
    """conv_dw, norm (LayerNorm2d), mlp.fc1/fc2 (1×1 convs), gamma (C, 1, 1)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(c, c, 7, padding=3, groups=c)
        self.norm = LayerNorm2d(c)
        self.mlp = ConvMlp(c)
        self.gamma = nn.Parameter(1e-6 * torch.ones(c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map (residual)."""
        return x + self.gamma * self.mlp(self.norm(self.conv_dw(x)))


class ConvMlpStage(nn.Module):
    """downsample (registered first; empty in the first stage), blocks."""

    def __init__(self, cin: int, c: int, depth: int, first: bool) -> None:
        super().__init__()
        self.downsample = (
            nn.Identity() if first else nn.Sequential(LayerNorm2d(cin), nn.Conv2d(cin, c, 2, 2))
        )
        self.blocks = nn.Sequential(*[ConvMlpBlock(c) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        return self.blocks(self.downsample(x))


class ConvMlpHead(nn.Module):
    """norm, fc."""

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(c, eps=1e-6)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → logits."""
        return self.fc(self.norm(x.mean((2, 3))))


class ConvMlpConvNeXt(_ConvNeXt):
    """stem.{0,1}, stages.{i}.downsample/blocks.{j}, head.norm/fc."""

    def build(self, depths: Sizes, dims: Sizes, num_classes: int) -> None:
        """Stem, stages each starting with its downsample, head."""
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.stages = nn.Sequential(
            *[
                ConvMlpStage(dims[max(0, i - 1)], d, n, first=i == 0)
                for i, (n, d) in enumerate(zip(depths, dims, strict=True))
            ]
        )
        self.head = ConvMlpHead(dims[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        return self.head(self.stages(self.stem(x)))
