"""A small VGG-like net built from ``nn.Sequential`` indices (``features.3``, ``classifier.3``)."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int, eps: float) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout, eps=eps), nn.ReLU()]


class VggLike(nn.Module):
    """features (conv, bn, relu ×5, two max-pools), classifier (Linear, ReLU, Dropout, Linear)."""

    def __init__(self, num_classes: int = 10, image: int = 16, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn_relu(3, 16, bn_eps),
            *_conv_bn_relu(16, 16, bn_eps),
            nn.MaxPool2d(2),
            *_conv_bn_relu(16, 32, bn_eps),
            *_conv_bn_relu(32, 32, bn_eps),
            *_conv_bn_relu(32, 32, bn_eps),
            nn.MaxPool2d(2),
        )
        side = image // 4
        self.classifier = nn.Sequential(
            nn.Linear(32 * side * side, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        return self.classifier(self.features(x).flatten(1))
