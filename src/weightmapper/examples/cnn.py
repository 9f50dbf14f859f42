"""A small CNN with BatchNorm, twice: ``OldCNN`` (flat Sequential) and ``RefactoredCNN``.

Both compute the same function; only names and nesting differ. Two convolutions of the
same shape follow each other, so shapes alone cannot tell them apart.
"""

from __future__ import annotations

import torch
from torch import nn


class OldCNN(nn.Module):
    """Image batch (N, 3, H, W) → logits (N, num_classes); every layer in one Sequential."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * w),
            nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(4 * w),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvBNAct(nn.Module):
    """(N, C_in, H, W) → (N, C_out, H/stride, W/stride): conv, BatchNorm, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class RefactoredCNN(nn.Module):
    """Image batch (N, 3, H, W) → logits; the same network as OldCNN, organised in stages."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        w = width
        self.stem = ConvBNAct(3, w)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(ConvBNAct(w, 2 * w, stride=2), ConvBNAct(2 * w, 2 * w)),
                nn.Sequential(ConvBNAct(2 * w, 2 * w), ConvBNAct(2 * w, 4 * w, stride=2)),
            ]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.head(self.pool(x).flatten(1))
