"""Small CNNs laid out exactly as torchvision and timm write them, for the held-out zoo.

Each builder reproduces one library's state-dict keys (module names, nesting, registration
order) at toy widths; the forward passes compute the same function as the library's, so two
layouts of one network agree once the weights are moved with the ground truth.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

NormFactory = Callable[[int], nn.Module]


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (torchvision/timm ``LayerNorm2d``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def _bn(c: int) -> nn.Module:
    return nn.BatchNorm2d(c)


# --- MobileNetV2 ---------------------------------------------------------------------------

# (expand ratio, out channels, repeats, first stride) per stage after the stem; stage 0 has
# expand ratio 1 (a depthwise-separable block), as in MobileNetV2.
MBV2_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 8, 1, 1),
    (6, 12, 2, 2),
    (6, 16, 2, 2),
)
MBV2_STEM = 8
MBV2_HEAD = 32


def _conv_norm_act(
    cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
) -> nn.Sequential:
    """torchvision ``Conv2dNormActivation``: keys ``0`` (conv), ``1`` (BatchNorm)."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class TvInvertedResidual(nn.Module):
    """torchvision ``InvertedResidual``: ``conv.0.0``/``conv.0.1`` ... ``conv.2``/``conv.3``."""

    def __init__(self, inp: int, oup: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_norm_act(inp, hidden, 1))
        layers += [
            _conv_norm_act(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class TvMobileNetV2(nn.Module):
    """torchvision ``mobilenet_v2`` layout: ``features.N...``, ``classifier.1``."""

    def __init__(
        self,
        stages: Sequence[tuple[int, int, int, int]] = MBV2_STAGES,
        head: int = MBV2_HEAD,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        feats: list[nn.Module] = [_conv_norm_act(3, MBV2_STEM, 3, 2)]
        cin = MBV2_STEM
        for t, c, n, s in stages:
            for i in range(n):
                feats.append(TvInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        feats.append(_conv_norm_act(cin, head, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(head, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class TimmDepthwiseSeparable(nn.Module):
    """timm ``DepthwiseSeparableConv``: ``conv_dw``, ``bn1``, ``conv_pw``, ``bn2``."""

    def __init__(self, cin: int, cout: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = norm(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = norm(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.conv_dw(x)))
        y = self.bn2(self.conv_pw(y))
        return x + y if self.has_skip else y


class TimmInvertedResidual(nn.Module):
    """timm ``InvertedResidual``: ``conv_pw``, ``bn1``, ``conv_dw``, ``bn2``, ``conv_pwl``, ``bn3``."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, norm: NormFactory) -> None:
        super().__init__()
        mid = cin * expand
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = norm(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = norm(mid)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = norm(cout)
        self.has_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.bn1(self.conv_pw(x)))
        y = F.relu6(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.has_skip else y


class TimmMobileNetV2(nn.Module):
    """timm ``mobilenetv2_100`` layout: ``conv_stem``, ``bn1``, ``blocks.S.B``, ``conv_head``."""

    def __init__(
        self,
        stages: Sequence[tuple[int, int, int, int]] = MBV2_STAGES,
        head: int = MBV2_HEAD,
        num_classes: int = 10,
        norm: NormFactory = _bn,
    ) -> None:
        super().__init__()
        self.conv_stem = nn.Conv2d(3, MBV2_STEM, 3, 2, 1, bias=False)
        self.bn1 = norm(MBV2_STEM)
        cin = MBV2_STEM
        blocks: list[nn.Module] = []
        for t, c, n, s in stages:
            stage: list[nn.Module] = []
            for i in range(n):
                stride = s if i == 0 else 1
                if t == 1:
                    stage.append(TimmDepthwiseSeparable(cin, c, stride, norm))
                else:
                    stage.append(TimmInvertedResidual(cin, c, stride, t, norm))
                cin = c
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head = nn.Conv2d(cin, head, 1, bias=False)
        self.bn2 = norm(head)
        self.classifier = nn.Linear(head, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = F.relu6(self.bn2(self.conv_head(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


def mbv2_layer_pairs(stages: Sequence[tuple[int, int, int, int]]) -> list[tuple[str, str]]:
    """MobileNetV2 stage spec → (torchvision module, timm module) for every conv/norm/linear."""
    pairs = [("features.0.0", "conv_stem"), ("features.0.1", "bn1")]
    f = 1
    for si, (t, _, n, _) in enumerate(stages):
        for b in range(n):
            tv, tm = f"features.{f}.conv", f"blocks.{si}.{b}"
            if t == 1:
                pairs += [
                    (f"{tv}.0.0", f"{tm}.conv_dw"),
                    (f"{tv}.0.1", f"{tm}.bn1"),
                    (f"{tv}.1", f"{tm}.conv_pw"),
                    (f"{tv}.2", f"{tm}.bn2"),
                ]
            else:
                pairs += [
                    (f"{tv}.0.0", f"{tm}.conv_pw"),
                    (f"{tv}.0.1", f"{tm}.bn1"),
                    (f"{tv}.1.0", f"{tm}.conv_dw"),
                    (f"{tv}.1.1", f"{tm}.bn2"),
                    (f"{tv}.2", f"{tm}.conv_pwl"),
                    (f"{tv}.3", f"{tm}.bn3"),
                ]
            f += 1
    pairs += [(f"features.{f}.0", "conv_head"), (f"features.{f}.1", "bn2")]
    pairs.append(("classifier.1", "classifier"))
    return pairs


# --- RegNetY -------------------------------------------------------------------------------

# (width, depth, group width) per stage; bottleneck ratio 1 and SE ratio 0.25, as in RegNetY.
REGNET_STAGES: tuple[tuple[int, int, int], ...] = ((8, 1, 4), (16, 2, 8), (24, 2, 8))
REGNET_STEM = 8
REGNET_SE = 0.25


class TvSqueezeExcitation(nn.Module):
    """torchvision ``SqueezeExcitation``: ``fc1``, ``fc2`` (1x1 convs with bias)."""

    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s))))


class TvResBottleneckBlock(nn.Module):
    """torchvision RegNet ``ResBottleneckBlock``: ``proj.0/1``, ``f.a``, ``f.b``, ``f.se``, ``f.c``."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.proj: nn.Module | None = None
        if cin != cout or stride != 1:
            self.proj = _conv_norm_act(cin, cout, 1, stride, act=False)
        f = OrderedDict()
        f["a"] = _relu_cna(cin, cout, 1)
        f["b"] = _relu_cna(cout, cout, 3, stride, groups=cout // group_width)
        f["se"] = TvSqueezeExcitation(cout, round(REGNET_SE * cin))
        f["c"] = _conv_norm_act(cout, cout, 1, act=False)
        self.f = nn.Sequential(f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.proj(x) if self.proj is not None else x
        return F.relu(short + self.f(x))


def _relu_cna(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv + BatchNorm + ReLU as ``0``/``1``/``2`` (torchvision with ReLU activation)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(),
    )


class TvRegNet(nn.Module):
    """torchvision ``regnet_y_*`` layout: ``stem``, ``trunk_output.blockI.blockI-J``, ``fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _relu_cna(3, REGNET_STEM, 3, 2)
        stages = OrderedDict()
        cin = REGNET_STEM
        for i, (w, d, g) in enumerate(REGNET_STAGES, start=1):
            blocks = OrderedDict()
            for j in range(d):
                blocks[f"block{i}-{j}"] = TvResBottleneckBlock(cin, w, 2 if j == 0 else 1, g)
                cin = w
            stages[f"block{i}"] = nn.Sequential(blocks)
        self.trunk_output = nn.Sequential(stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk_output(self.stem(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TimmConvNormAct(nn.Module):
    """timm ``ConvNormAct``: ``conv``, ``bn``."""

    def __init__(
        self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.act else x


class TimmSEModule(nn.Module):
    """timm ``SEModule``: ``fc1``, ``fc2``."""

    def __init__(self, c: int, rd: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(c, rd, 1)
        self.fc2 = nn.Conv2d(rd, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.relu(self.fc1(x.mean((2, 3), keepdim=True)))
        return x * torch.sigmoid(self.fc2(s))


class TimmRegBottleneck(nn.Module):
    """timm RegNet ``Bottleneck``: ``conv1``, ``conv2``, ``se``, ``conv3``, ``downsample``."""

    def __init__(self, cin: int, cout: int, stride: int, group_width: int) -> None:
        super().__init__()
        self.conv1 = TimmConvNormAct(cin, cout, 1)
        self.conv2 = TimmConvNormAct(cout, cout, 3, stride, groups=cout // group_width)
        self.se = TimmSEModule(cout, round(REGNET_SE * cin))
        self.conv3 = TimmConvNormAct(cout, cout, 1, act=False)
        self.downsample: nn.Module | None = None
        if cin != cout or stride != 1:
            self.downsample = TimmConvNormAct(cin, cout, 1, stride, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        short = self.downsample(x) if self.downsample is not None else x
        y = self.conv3(self.se(self.conv2(self.conv1(x))))
        return F.relu(y + short)


class TimmRegNet(nn.Module):
    """timm ``regnety_*`` layout: ``stem.conv``, ``sI.bJ...`` (1-based), ``head.fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = TimmConvNormAct(3, REGNET_STEM, 3, 2)
        cin = REGNET_STEM
        for i, (w, d, g) in enumerate(REGNET_STAGES, start=1):
            stage = nn.Module()
            for j in range(1, d + 1):
                stage.add_module(f"b{j}", TimmRegBottleneck(cin, w, 2 if j == 1 else 1, g))
                cin = w
            self.add_module(f"s{i}", stage)
        self.head = nn.Module()
        self.head.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for i, (_, d, _) in enumerate(REGNET_STAGES, start=1):
            stage = getattr(self, f"s{i}")
            for j in range(1, d + 1):
                x = getattr(stage, f"b{j}")(x)
        return self.head.fc(x.mean((2, 3)))


def regnet_layer_pairs() -> list[tuple[str, str]]:
    """(torchvision module, timm module) for every conv/norm/linear of the RegNetY pair."""
    pairs = [("stem.0", "stem.conv"), ("stem.1", "stem.bn")]
    cin = REGNET_STEM
    for i, (w, d, _) in enumerate(REGNET_STAGES, start=1):
        for j in range(d):
            tv, tm = f"trunk_output.block{i}.block{i}-{j}", f"s{i}.b{j + 1}"
            if cin != w or j == 0:
                pairs += [(f"{tv}.proj.0", f"{tm}.downsample.conv")]
                pairs += [(f"{tv}.proj.1", f"{tm}.downsample.bn")]
            for a, b in (("a", "conv1"), ("b", "conv2"), ("c", "conv3")):
                pairs += [(f"{tv}.f.{a}.0", f"{tm}.{b}.conv"), (f"{tv}.f.{a}.1", f"{tm}.{b}.bn")]
            pairs += [(f"{tv}.f.se.fc1", f"{tm}.se.fc1"), (f"{tv}.f.se.fc2", f"{tm}.se.fc2")]
            cin = w
    pairs.append(("fc", "head.fc"))
    return pairs


# --- ConvNeXt ------------------------------------------------------------------------------

CONVNEXT_DIMS: tuple[int, ...] = (8, 16, 24, 32)
CONVNEXT_DEPTHS: tuple[int, ...] = (1, 1, 2, 1)


class TvCNBlock(nn.Module):
    """torchvision ``CNBlock``: ``layer_scale`` (C, 1, 1), ``block.0`` dwconv, ``block.2`` LN,
    ``block.3``/``block.5`` Linear."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.layer_scale = nn.Parameter(torch.full((dim, 1, 1), 1e-6))
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            _Permute((0, 2, 3, 1)),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            _Permute((0, 3, 1, 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer_scale * self.block(x)


class _Permute(nn.Module):
    def __init__(self, dims: tuple[int, ...]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(*self.dims)


class TvConvNeXt(nn.Module):
    """torchvision ``convnext_*`` layout: ``features.0`` stem, stages at odd indices,
    downsamples at even indices, ``classifier.0`` LN2d, ``classifier.2`` Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        d = CONVNEXT_DIMS
        feats: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(3, d[0], 4, 4), LayerNorm2d(d[0], eps=1e-6))
        ]
        for i, depth in enumerate(CONVNEXT_DEPTHS):
            feats.append(nn.Sequential(*[TvCNBlock(d[i]) for _ in range(depth)]))
            if i + 1 < len(d):
                feats.append(
                    nn.Sequential(LayerNorm2d(d[i], eps=1e-6), nn.Conv2d(d[i], d[i + 1], 2, 2))
                )
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(
            LayerNorm2d(d[-1], eps=1e-6), nn.Flatten(1), nn.Linear(d[-1], num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x)


class TimmConvNeXtBlock(nn.Module):
    """timm ``ConvNeXtBlock``: ``gamma`` (C,), ``conv_dw``, ``norm``, ``mlp.fc1``, ``mlp.fc2``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.conv_dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Module()
        self.mlp.fc1 = nn.Linear(dim, 4 * dim)
        self.mlp.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.conv_dw(x).permute(0, 2, 3, 1))
        y = self.mlp.fc2(F.gelu(self.mlp.fc1(y))).permute(0, 3, 1, 2)
        return x + y * self.gamma.reshape(1, -1, 1, 1)


class TimmConvNeXt(nn.Module):
    """timm ``convnext_*`` layout: ``stem.0/1``, ``stages.I.downsample.0/1``,
    ``stages.I.blocks.J``, ``head.norm``, ``head.fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        d = CONVNEXT_DIMS
        self.stem = nn.Sequential(nn.Conv2d(3, d[0], 4, 4), LayerNorm2d(d[0], eps=1e-6))
        stages: list[nn.Module] = []
        for i, depth in enumerate(CONVNEXT_DEPTHS):
            stage = nn.Module()
            stage.downsample = (
                nn.Identity()
                if i == 0
                else nn.Sequential(LayerNorm2d(d[i - 1], eps=1e-6), nn.Conv2d(d[i - 1], d[i], 2, 2))
            )
            stage.blocks = nn.Sequential(*[TimmConvNeXtBlock(d[i]) for _ in range(depth)])
            stages.append(stage)
        self.stages = nn.Sequential(*stages)
        self.head = nn.Module()
        self.head.norm = LayerNorm2d(d[-1], eps=1e-6)
        self.head.fc = nn.Linear(d[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage.blocks(stage.downsample(x))
        x = self.head.norm(x.mean((2, 3), keepdim=True)).flatten(1)
        return self.head.fc(x)


def convnext_layer_pairs() -> list[tuple[str, str]]:
    """(torchvision module, timm module) for every layer of the ConvNeXt pair; the layer-scale
    parameters are paired as modules ``features.I.J`` ↔ ``stages.S.blocks.J``."""
    pairs = [("features.0.0", "stem.0"), ("features.0.1", "stem.1")]
    for s, depth in enumerate(CONVNEXT_DEPTHS):
        if s > 0:
            pairs += [(f"features.{2 * s}.0", f"stages.{s}.downsample.0")]
            pairs += [(f"features.{2 * s}.1", f"stages.{s}.downsample.1")]
        for j in range(depth):
            tv, tm = f"features.{2 * s + 1}.{j}", f"stages.{s}.blocks.{j}"
            pairs += [
                (f"{tv}.block.0", f"{tm}.conv_dw"),
                (f"{tv}.block.2", f"{tm}.norm"),
                (f"{tv}.block.3", f"{tm}.mlp.fc1"),
                (f"{tv}.block.5", f"{tm}.mlp.fc2"),
            ]
    pairs += [("classifier.0", "head.norm"), ("classifier.2", "head.fc")]
    return pairs


# --- Inception (torchvision) vs TF-slim scope names -----------------------------------------


class BasicConv2d(nn.Module):
    """torchvision Inception ``BasicConv2d``: ``conv``, ``bn`` (eps 0.001), ReLU."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


# InceptionA widths at 1/8 of torchvision's: branch1x1 and branch3x3dbl_1 share a shape.
INC_A = {"b1": 8, "b5a": 6, "b5": 8, "b3": 8, "b3b": 12, "pool": 4}
INC_STEM = (8, 8)
INC_OUT = INC_A["b1"] + INC_A["b5"] + INC_A["b3b"] + INC_A["pool"]


class TvInceptionA(nn.Module):
    """torchvision ``InceptionA``: ``branch1x1``, ``branch5x5_1/2``, ``branch3x3dbl_1/2/3``,
    ``branch_pool``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        w = INC_A
        self.branch1x1 = BasicConv2d(cin, w["b1"], 1)
        self.branch5x5_1 = BasicConv2d(cin, w["b5a"], 1)
        self.branch5x5_2 = BasicConv2d(w["b5a"], w["b5"], 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, w["b3"], 1)
        self.branch3x3dbl_2 = BasicConv2d(w["b3"], w["b3b"], 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w["b3b"], w["b3b"], 3, padding=1)
        self.branch_pool = BasicConv2d(cin, w["pool"], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b1, b5, b3, bp], 1)


class TvInceptionAux(nn.Module):
    """torchvision ``InceptionAux``: ``conv0``, ``conv1``, ``fc`` (used only in training)."""

    def __init__(self, cin: int, num_classes: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(cin, 8, 1)
        self.conv1 = BasicConv2d(8, 16, 3)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 3, 2)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class TvInception(nn.Module):
    """torchvision ``inception_v3`` layout (truncated): ``Conv2d_1a_3x3``, ``Conv2d_2a_3x3``,
    ``Mixed_5b``, ``AuxLogits`` (registered between the mixed blocks), ``Mixed_5c``, ``fc``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, INC_STEM[0], 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(INC_STEM[0], INC_STEM[1], 3)
        self.Mixed_5b = TvInceptionA(INC_STEM[1])
        self.AuxLogits = TvInceptionAux(INC_OUT, num_classes)
        self.Mixed_5c = TvInceptionA(INC_OUT)
        self.fc = nn.Linear(INC_OUT, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        x = self.Mixed_5b(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        aux = self.AuxLogits(x) if self.training else None
        x = self.Mixed_5c(x)
        logits = self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
        return (logits, aux) if aux is not None else logits


class SlimInceptionA(nn.Module):
    """InceptionA under TF-slim scope names: ``Branch_0.Conv2d_0a_1x1`` ... ``Branch_3``."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        w = INC_A
        self.Branch_0 = nn.Module()
        self.Branch_0.Conv2d_0a_1x1 = BasicConv2d(cin, w["b1"], 1)
        self.Branch_1 = nn.Module()
        self.Branch_1.Conv2d_0a_1x1 = BasicConv2d(cin, w["b5a"], 1)
        self.Branch_1.Conv2d_0b_5x5 = BasicConv2d(w["b5a"], w["b5"], 5, padding=2)
        self.Branch_2 = nn.Module()
        self.Branch_2.Conv2d_0a_1x1 = BasicConv2d(cin, w["b3"], 1)
        self.Branch_2.Conv2d_0b_3x3 = BasicConv2d(w["b3"], w["b3b"], 3, padding=1)
        self.Branch_2.Conv2d_0c_3x3 = BasicConv2d(w["b3b"], w["b3b"], 3, padding=1)
        self.Branch_3 = nn.Module()
        self.Branch_3.Conv2d_0b_1x1 = BasicConv2d(cin, w["pool"], 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b0 = self.Branch_0.Conv2d_0a_1x1(x)
        b1 = self.Branch_1.Conv2d_0b_5x5(self.Branch_1.Conv2d_0a_1x1(x))
        b2 = self.Branch_2
        b2 = b2.Conv2d_0c_3x3(b2.Conv2d_0b_3x3(b2.Conv2d_0a_1x1(x)))
        b3 = self.Branch_3.Conv2d_0b_1x1(F.avg_pool2d(x, 3, 1, 1))
        return torch.cat([b0, b1, b2, b3], 1)


class SlimInception(nn.Module):
    """Inception under TF-slim names, no auxiliary head, logits as a 1x1 conv
    (``Logits.Conv2d_1c_1x1``, weight (classes, C, 1, 1))."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, INC_STEM[0], 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(INC_STEM[0], INC_STEM[1], 3)
        self.Mixed_5b = SlimInceptionA(INC_STEM[1])
        self.Mixed_5c = SlimInceptionA(INC_OUT)
        self.Logits = nn.Module()
        self.Logits.Conv2d_1c_1x1 = nn.Conv2d(INC_OUT, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Mixed_5c(self.Mixed_5b(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.Logits.Conv2d_1c_1x1(x).flatten(1)


def inception_layer_pairs() -> list[tuple[str, str]]:
    """(torchvision BasicConv2d, TF-slim BasicConv2d) for every conv block of the pair."""
    pairs = [("Conv2d_1a_3x3", "Conv2d_1a_3x3"), ("Conv2d_2a_3x3", "Conv2d_2a_3x3")]
    names = (
        ("branch1x1", "Branch_0.Conv2d_0a_1x1"),
        ("branch5x5_1", "Branch_1.Conv2d_0a_1x1"),
        ("branch5x5_2", "Branch_1.Conv2d_0b_5x5"),
        ("branch3x3dbl_1", "Branch_2.Conv2d_0a_1x1"),
        ("branch3x3dbl_2", "Branch_2.Conv2d_0b_3x3"),
        ("branch3x3dbl_3", "Branch_2.Conv2d_0c_3x3"),
        ("branch_pool", "Branch_3.Conv2d_0b_1x1"),
    )
    for mixed in ("Mixed_5b", "Mixed_5c"):
        pairs += [(f"{mixed}.{a}", f"{mixed}.{b}") for a, b in names]
    return pairs


# --- DenseNet: torchvision nesting vs Keras flat layer names ----------------------------------

DENSE_INIT = 8
DENSE_GROWTH = 4
DENSE_BN_SIZE = 2
DENSE_BLOCKS: tuple[int, ...] = (2, 3)


class TvDenseLayer(nn.Module):
    """torchvision ``_DenseLayer``: ``norm1``, ``conv1`` (1x1), ``norm2``, ``conv2`` (3x3)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        mid = DENSE_BN_SIZE * DENSE_GROWTH
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, DENSE_GROWTH, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        return torch.cat([x, self.conv2(F.relu(self.norm2(y)))], 1)


class TvTransition(nn.Sequential):
    """torchvision ``_Transition``: ``norm``, ReLU, ``conv`` (1x1, halves), 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            OrderedDict(
                norm=nn.BatchNorm2d(cin),
                relu=nn.ReLU(),
                conv=nn.Conv2d(cin, cout, 1, bias=False),
                pool=nn.AvgPool2d(2, 2),
            )
        )


class TvDenseNet(nn.Module):
    """torchvision ``densenet121`` layout: ``features.conv0/norm0``,
    ``features.denseblockI.denselayerJ`` (1-based), ``features.transitionI``,
    ``features.norm5``, ``classifier``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        f: OrderedDict[str, nn.Module] = OrderedDict()
        f["conv0"] = nn.Conv2d(3, DENSE_INIT, 7, 2, 3, bias=False)
        f["norm0"] = nn.BatchNorm2d(DENSE_INIT)
        f["relu0"] = nn.ReLU()
        f["pool0"] = nn.MaxPool2d(3, 2, 1)
        c = DENSE_INIT
        for i, n in enumerate(DENSE_BLOCKS, start=1):
            block = nn.Sequential()
            for j in range(1, n + 1):
                block.add_module(f"denselayer{j}", TvDenseLayer(c))
                c += DENSE_GROWTH
            f[f"denseblock{i}"] = block
            if i < len(DENSE_BLOCKS):
                f[f"transition{i}"] = TvTransition(c, c // 2)
                c //= 2
        f["norm5"] = nn.BatchNorm2d(c)
        self.features = nn.Sequential(f)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.features(x))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class KerasDenseNet(nn.Module):
    """Keras ``DenseNet121`` layer names as flat modules: ``conv1_conv``, ``conv1_bn``,
    ``conv2_block1_0_bn``, ``conv2_block1_1_conv``, ``conv2_block1_1_bn``,
    ``conv2_block1_2_conv``, ``pool2_bn``, ``pool2_conv``, ``bn``, ``predictions``."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        mid = DENSE_BN_SIZE * DENSE_GROWTH
        self.conv1_conv = nn.Conv2d(3, DENSE_INIT, 7, 2, 3, bias=False)
        self.conv1_bn = nn.BatchNorm2d(DENSE_INIT)
        c = DENSE_INIT
        for i, n in enumerate(DENSE_BLOCKS, start=2):
            for j in range(1, n + 1):
                p = f"conv{i}_block{j}"
                self.add_module(f"{p}_0_bn", nn.BatchNorm2d(c))
                self.add_module(f"{p}_1_conv", nn.Conv2d(c, mid, 1, bias=False))
                self.add_module(f"{p}_1_bn", nn.BatchNorm2d(mid))
                self.add_module(
                    f"{p}_2_conv", nn.Conv2d(mid, DENSE_GROWTH, 3, padding=1, bias=False)
                )
                c += DENSE_GROWTH
            if i - 1 < len(DENSE_BLOCKS):
                self.add_module(f"pool{i}_bn", nn.BatchNorm2d(c))
                self.add_module(f"pool{i}_conv", nn.Conv2d(c, c // 2, 1, bias=False))
                c //= 2
        self.bn = nn.BatchNorm2d(c)
        self.predictions = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1_bn(self.conv1_conv(x)))
        x = F.max_pool2d(x, 3, 2, 1)
        for i, n in enumerate(DENSE_BLOCKS, start=2):
            for j in range(1, n + 1):
                m = {
                    k: getattr(self, f"conv{i}_block{j}_{k}")
                    for k in ("0_bn", "1_conv", "1_bn", "2_conv")
                }
                y = m["1_conv"](F.relu(m["0_bn"](x)))
                x = torch.cat([x, m["2_conv"](F.relu(m["1_bn"](y)))], 1)
            if i - 1 < len(DENSE_BLOCKS):
                x = getattr(self, f"pool{i}_conv")(F.relu(getattr(self, f"pool{i}_bn")(x)))
                x = F.avg_pool2d(x, 2, 2)
        x = F.relu(self.bn(x))
        return self.predictions(F.adaptive_avg_pool2d(x, 1).flatten(1))


def densenet_layer_pairs() -> list[tuple[str, str]]:
    """(torchvision module, Keras-named module) for every conv/norm/linear of the DenseNet pair."""
    pairs = [("features.conv0", "conv1_conv"), ("features.norm0", "conv1_bn")]
    for i, n in enumerate(DENSE_BLOCKS, start=1):
        for j in range(1, n + 1):
            tv, k = f"features.denseblock{i}.denselayer{j}", f"conv{i + 1}_block{j}"
            pairs += [
                (f"{tv}.norm1", f"{k}_0_bn"),
                (f"{tv}.conv1", f"{k}_1_conv"),
                (f"{tv}.norm2", f"{k}_1_bn"),
                (f"{tv}.conv2", f"{k}_2_conv"),
            ]
        if i < len(DENSE_BLOCKS):
            pairs += [(f"features.transition{i}.norm", f"pool{i + 1}_bn")]
            pairs += [(f"features.transition{i}.conv", f"pool{i + 1}_conv")]
    pairs += [("features.norm5", "bn"), ("classifier", "predictions")]
    return pairs
