"""A ResNet-50-shaped network, twice: torchvision-style names and a refactored layout.

Used by ``bench/pipeline.py``: at ``width=64`` a checkpoint holds about 25.6 M float32
parameters (about 100 MB); smaller widths shrink it. Dozens of bottleneck blocks share
their shapes, the hard case for a mapper.
"""

from __future__ import annotations

import torch
from torch import nn

_LAYERS = (3, 4, 6, 3)


def _stages(block: type[nn.Module], width: int) -> list[nn.Sequential]:
    """Bottleneck class + stem width → ResNet-50's four stages of blocks (the first block of
    every stage but the first halves the resolution; each block widens its planes fourfold)."""
    stages, c = [], width
    for i, n in enumerate(_LAYERS):
        planes = width * 2**i
        blocks = []
        for j in range(n):
            blocks.append(block(c, planes, stride=2 if j == 0 and i > 0 else 1))
            c = planes * 4
        stages.append(nn.Sequential(*blocks))
    return stages


class Bottleneck(nn.Module):
    """(N, C_in, H, W) → (N, 4·planes, H/stride, W/stride); torchvision's block names."""

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or c_in != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(c_in, planes * 4, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * 4),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + idt)


class ResNet50(nn.Module):
    """Images (N, 3, H, W) → logits; torchvision's ResNet-50 layout and names."""

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, stage in enumerate(_stages(Bottleneck, width)):
            setattr(self, f"layer{i + 1}", stage)
        self.fc = nn.Linear(4 * width * 2 ** (len(_LAYERS) - 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(len(_LAYERS)):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


class _ConvNorm(nn.Module):
    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=k // 2, bias=False)
        self.norm = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class _Block(nn.Module):
    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.shortcut: nn.Module | None = None
        if stride != 1 or c_in != planes * 4:
            self.shortcut = _ConvNorm(c_in, planes * 4, 1, stride)
        self.reduce = _ConvNorm(c_in, planes, 1)
        self.spatial = _ConvNorm(planes, planes, 3, stride)
        self.expand = _ConvNorm(planes, planes * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.shortcut is None else self.shortcut(x)
        y = torch.relu(self.reduce(x))
        y = torch.relu(self.spatial(y))
        return torch.relu(self.expand(y) + idt)


class RefactoredResNet50(nn.Module):
    """Images → logits; the same network as ResNet50 with stages, blocks and other names."""

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        self.stem = _ConvNorm(3, width, 7, stride=2)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stages = nn.ModuleList(_stages(_Block, width))
        self.classifier = nn.Linear(4 * width * 2 ** (len(_LAYERS) - 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.stem(x)))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x.mean((2, 3)))


def width_for_size(size_mb: float) -> int:
    """Wanted checkpoint size in MB → the ResNet-50 width that comes closest (64 ≈ 100 MB)."""
    # Parameters grow with width², plus the 1000-class head.
    return max(4, round(64 * (size_mb / 102.0) ** 0.5))
