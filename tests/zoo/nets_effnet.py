"""An EfficientNet-like stage of many identical blocks, written as timm and as torchvision do.

Every block has the same shapes, so shape alone pairs them arbitrarily and one misaligned
block shifts every pair after it: the names differ entirely (``blocks.3.conv_dw`` against
``features.1.3.block.1.0``) and only structure and order can line them up.
"""

from __future__ import annotations

import torch
from torch import nn


class TimmSqueezeExcite(nn.Module):
    """timm SE: conv_reduce, conv_expand (1×1 convs), sigmoid gate."""

    def __init__(self, c: int, rd: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(c, rd, 1)
        self.act = nn.SiLU()
        self.conv_expand = nn.Conv2d(rd, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → gated feature map."""
        s = self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class TimmInvertedResidual(nn.Module):
    """timm InvertedResidual: conv_pw, bn1, conv_dw, bn2, se, conv_pwl, bn3."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.conv_pw = nn.Conv2d(c, e, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(e)
        self.conv_dw = nn.Conv2d(e, e, 3, padding=1, groups=e, bias=False)
        self.bn2 = nn.BatchNorm2d(e)
        self.se = TimmSqueezeExcite(e, max(1, c // 4))
        self.conv_pwl = nn.Conv2d(e, c, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map (residual)."""
        y = self.act(self.bn1(self.conv_pw(x)))
        y = self.se(self.act(self.bn2(self.conv_dw(y))))
        return x + self.bn3(self.conv_pwl(y))


class TimmEffNet(nn.Module):
    """timm-like: conv_stem, bn1, blocks.{i}, conv_head, bn2, classifier."""

    def __init__(self, depth: int = 12, c: int = 8, e: int = 24, num_classes: int = 10) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.blocks = nn.Sequential(*[TimmInvertedResidual(c, e) for _ in range(depth)])
        self.conv_head = nn.Conv2d(c, 2 * c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * c)
        self.classifier = nn.Linear(2 * c, num_classes)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        x = self.blocks(self.act(self.bn1(self.conv_stem(x))))
        x = self.act(self.bn2(self.conv_head(x)))
        return self.classifier(x.mean((2, 3)))


def _conv_bn_act(cin: int, cout: int, k: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class TvSqueezeExcitation(nn.Module):
    """torchvision SqueezeExcitation: fc1, fc2 (1×1 convs)."""

    def __init__(self, c: int, rd: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, rd, 1)
        self.fc2 = nn.Conv2d(rd, c, 1)
        self.activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → gated feature map."""
        s = self.fc2(self.activation(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * s.sigmoid()


class TvMBConv(nn.Module):
    """torchvision MBConv: block.0 expand, block.1 depthwise, block.2 SE, block.3 project."""

    def __init__(self, c: int, e: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            _conv_bn_act(c, e, 1),
            _conv_bn_act(e, e, 3, groups=e),
            TvSqueezeExcitation(e, max(1, c // 4)),
            _conv_bn_act(e, c, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map (residual)."""
        return x + self.block(x)


class TvEffNet(nn.Module):
    """torchvision-like: features.0 stem, features.1.{i} blocks, features.2 head, classifier.1."""

    def __init__(self, depth: int = 12, c: int = 8, e: int = 24, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_act(3, c, 3),
            nn.Sequential(*[TvMBConv(c, e) for _ in range(depth)]),
            _conv_bn_act(c, 2 * c, 1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(2 * c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        return self.classifier(self.features(x).mean((2, 3)))
