"""One small ResNet written three ways, as three libraries lay it out, plus a detector around it.

- :class:`TvResNet`: torchvision names (``layer1.0.conv1``, ``bn1``), the ``downsample``
  registered *after* the block's convolutions.
- :class:`StagedResNet`: timm-like names (``stages.0.blocks.0.conv_a``), the ``shortcut``
  registered *before* the convolutions.
- :class:`D2ResNet`: detectron2 names (``res2.0.conv1`` with its norm inside the conv as
  ``conv1.norm``), frozen BatchNorm (weight and bias are buffers), shortcut first.
- :class:`Detector`: a torchvision-style detector that reuses a ResNet as ``backbone.body``.

All compute the same function for the same weights (no max-pool, 3×3 stem) so that outputs
can be compared after a conversion.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

Norm = Callable[[int], nn.Module]


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all four stored as buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) → normalized (N, C, H, W)."""
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + shift[None, :, None, None]


def make_norm(kind: str) -> Norm:
    """``bn`` | ``gn`` | ``frozen`` → a constructor of that norm for a channel count."""
    if kind == "bn":
        return nn.BatchNorm2d
    if kind == "gn":
        return lambda c: nn.GroupNorm(4, c)
    if kind == "frozen":
        return FrozenBatchNorm2d
    raise ValueError(f"unknown norm kind {kind!r}; expected bn, gn or frozen")


def _conv3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


def _conv1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, 0, bias=False)


# --- torchvision layout --------------------------------------------------------------------


def stage_blocks(
    block: Callable[[int, int, int, Norm], nn.Module],
    layers: tuple[int, ...],
    widths: tuple[int, ...],
    norm: Norm,
) -> Iterator[list[nn.Module]]:
    """Block class, blocks and width per stage, norm → each stage's blocks, built in order.

    A block takes (in channels, out channels, stride, norm); the first block of every stage
    after the first halves the resolution. Lazy: a stage's blocks are built (and draw their
    initial weights) only when the caller reaches it.
    """
    cin = widths[0]
    for i, (depth, w) in enumerate(zip(layers, widths, strict=True)):
        yield [
            block(cin if j == 0 else w, w, 2 if (i and j == 0) else 1, norm) for j in range(depth)
        ]
        cin = w


class TvBlock(nn.Module):
    """torchvision BasicBlock: conv1, bn1, conv2, bn2, then downsample (conv, bn)."""

    def __init__(self, cin: int, cout: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = _conv3(cin, cout, stride)
        self.bn1 = norm(cout)
        self.relu = nn.ReLU()
        self.conv2 = _conv3(cout, cout)
        self.bn2 = norm(cout)
        self.downsample = (
            nn.Sequential(_conv1(cin, cout, stride), norm(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + idt)


Sizes = tuple[int, ...]


class _ResNet(nn.Module):
    """A ResNet from its sizes and norm; each layout lays out its modules in ``build``."""

    default_norm = "bn"

    def __init__(
        self,
        layers: Sizes = (2, 2, 2, 2),
        widths: Sizes = (8, 16, 32, 64),
        num_classes: int = 10,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.build(layers, widths, num_classes, make_norm(norm or self.default_norm))

    def build(self, layers: Sizes, widths: Sizes, num_classes: int, n: Norm) -> None:
        """Blocks and width per stage, classes (0: no head), norm → the network's modules."""
        raise NotImplementedError


class TvResNet(_ResNet):
    """torchvision-style ResNet: conv1, bn1, layer1..layerN, fc."""

    def build(self, layers: Sizes, widths: Sizes, num_classes: int, n: Norm) -> None:
        """Stem conv and norm, layer1..layerN, fc."""
        self.conv1 = _conv3(3, widths[0])
        self.bn1 = n(widths[0])
        self.relu = nn.ReLU()
        for i, blocks in enumerate(stage_blocks(TvBlock, layers, widths, n)):
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)
        self.fc = nn.Linear(widths[-1], num_classes) if num_classes else None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → last stage's feature map."""
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits (or pooled features when built without a head)."""
        x = self.forward_features(x).mean((2, 3))
        return x if self.fc is None else self.fc(x)


# --- timm-like layout ----------------------------------------------------------------------


class ConvNorm(nn.Module):
    """A conv followed by its norm, as ``conv`` and ``norm``."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → normalized conv output."""
        return self.norm(self.conv(x))


class StagedBlock(nn.Module):
    """Residual block, shortcut registered first: shortcut, conv_a, norm_a, conv_b, norm_b."""

    def __init__(self, cin: int, cout: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.shortcut = (
            ConvNorm(_conv1(cin, cout, stride), norm(cout)) if stride != 1 or cin != cout else None
        )
        self.conv_a = _conv3(cin, cout, stride)
        self.norm_a = norm(cout)
        self.conv_b = _conv3(cout, cout)
        self.norm_b = norm(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        idt = x if self.shortcut is None else self.shortcut(x)
        y = F.relu(self.norm_a(self.conv_a(x)))
        return F.relu(self.norm_b(self.conv_b(y)) + idt)


class Stage(nn.Module):
    """A list of blocks as ``blocks``."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        for b in self.blocks:
            x = b(x)
        return x


class Head(nn.Module):
    """Global average pool (over the ``pool`` axes: a feature map's by default) + ``fc``."""

    def __init__(self, cin: int, num_classes: int, pool: tuple[int, ...] = (2, 3)) -> None:
        super().__init__()
        self.pool = pool
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Features → logits."""
        return self.fc(x.mean(self.pool))


class StagedResNet(_ResNet):
    """timm-like ResNet: stem.conv/norm, stages.{i}.blocks.{j}.{shortcut,conv_a,...}, head.fc."""

    def build(self, layers: Sizes, widths: Sizes, num_classes: int, n: Norm) -> None:
        """Stem, stages of blocks, head."""
        self.stem = ConvNorm(_conv3(3, widths[0]), n(widths[0]))
        self.stages = nn.ModuleList(
            Stage(blocks) for blocks in stage_blocks(StagedBlock, layers, widths, n)
        )
        self.head = Head(widths[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → last stage's feature map."""
        x = F.relu(self.stem(x))
        for s in self.stages:
            x = s(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        return self.head(self.forward_features(x))


# --- detectron2-like layout ----------------------------------------------------------------


class D2Conv(nn.Conv2d):
    """detectron2's Conv2d: a convolution carrying its norm as the child ``norm``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, norm: nn.Module) -> None:
        super().__init__(cin, cout, k, stride, k // 2, bias=False)
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → normalized conv output."""
        return self.norm(super().forward(x))


class D2Block(nn.Module):
    """detectron2 BasicBlock: shortcut (registered first), conv1, conv2."""

    def __init__(self, cin: int, cout: int, stride: int, norm: Norm) -> None:
        super().__init__()
        self.shortcut = (
            D2Conv(cin, cout, 1, stride, norm(cout)) if stride != 1 or cin != cout else None
        )
        self.conv1 = D2Conv(cin, cout, 3, stride, norm(cout))
        self.conv2 = D2Conv(cout, cout, 3, 1, norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map → feature map."""
        idt = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv2(F.relu(self.conv1(x))) + idt)


class D2Stem(nn.Module):
    """detectron2 BasicStem: ``conv1`` with its norm."""

    def __init__(self, cout: int, norm: Norm) -> None:
        super().__init__()
        self.conv1 = D2Conv(3, cout, 3, 1, norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → stem features."""
        return F.relu(self.conv1(x))


class D2ResNet(_ResNet):
    """detectron2-like ResNet: stem.conv1(.norm), res2..res5, optional ``linear`` classifier."""

    default_norm = "frozen"

    def build(self, layers: Sizes, widths: Sizes, num_classes: int, n: Norm) -> None:
        """Stem, res2..res5, linear."""
        self.stem = D2Stem(widths[0], n)
        self.stage_names = []
        for i, blocks in enumerate(stage_blocks(D2Block, layers, widths, n)):
            self.add_module(f"res{i + 2}", nn.Sequential(*blocks))
            self.stage_names.append(f"res{i + 2}")
        self.linear = nn.Linear(widths[-1], num_classes) if num_classes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → logits."""
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = x.mean((2, 3))
        return x if self.linear is None else self.linear(x)


# --- a detector reusing the backbone -------------------------------------------------------


class _Body(nn.Module):
    """torchvision IntermediateLayerGetter-like body: a headless ResNet returning all stages."""

    def __init__(self, layers: tuple[int, ...], widths: tuple[int, ...]) -> None:
        super().__init__()
        net = TvResNet(layers, widths, num_classes=0, norm="frozen")
        # Same attribute names as the classifier, so the checkpoint keys line up by name.
        for name, child in net.named_children():
            if name != "fc":
                self.add_module(name, child)
        self.num_stages = len(layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Image batch → feature map of every stage."""
        x = self.relu(self.bn1(self.conv1(x)))
        feats = []
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
            feats.append(x)
        return feats


class _Fpn(nn.Module):
    """Feature pyramid: inner 1×1 convs and 3×3 output convs, as torchvision names them."""

    def __init__(self, widths: tuple[int, ...], out: int) -> None:
        super().__init__()
        self.inner_blocks = nn.ModuleList(nn.Conv2d(w, out, 1) for w in widths)
        self.layer_blocks = nn.ModuleList(nn.Conv2d(out, out, 3, padding=1) for _ in widths)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Stage features → pyramid features, coarse to fine merged top-down."""
        last = self.inner_blocks[-1](feats[-1])
        outs = [self.layer_blocks[-1](last)]
        for i in range(len(feats) - 2, -1, -1):
            lat = self.inner_blocks[i](feats[i])
            last = lat + F.interpolate(last, size=lat.shape[-2:], mode="nearest")
            outs.insert(0, self.layer_blocks[i](last))
        return outs


class Detector(nn.Module):
    """A torchvision-like detector: backbone.body (frozen-BN ResNet), backbone.fpn, heads."""

    def __init__(
        self,
        layers: tuple[int, ...] = (2, 2, 2, 2),
        widths: tuple[int, ...] = (8, 16, 32, 64),
        num_classes: int = 10,
        fpn_width: int = 16,
    ) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.body = _Body(layers, widths)
        self.backbone.fpn = _Fpn(widths, fpn_width)
        self.rpn = nn.Module()
        self.rpn.head = nn.Module()
        self.rpn.head.conv = nn.Conv2d(fpn_width, fpn_width, 3, padding=1)
        self.rpn.head.cls_logits = nn.Conv2d(fpn_width, 3, 1)
        self.roi_heads = nn.Module()
        self.roi_heads.box_predictor = nn.Module()
        # Same shape as the classifier's fc on purpose: a trap for shape-only matching.
        self.roi_heads.box_predictor.cls_score = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image batch → objectness logits of the finest level plus class scores (flattened)."""
        feats = self.backbone.body(x)
        pyr = self.backbone.fpn(feats)
        obj = self.rpn.head.cls_logits(F.relu(self.rpn.head.conv(pyr[0])))
        cls = self.roi_heads.box_predictor.cls_score(feats[-1].mean((2, 3)))
        return torch.cat([obj.flatten(1), cls], dim=1)
