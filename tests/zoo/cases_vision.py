"""Vision cases across libraries: ResNet three ways, EfficientNet stage, Swin, ConvNeXt."""

from __future__ import annotations

from typing import Any

import torch

from zoo.case import Truth, declare, truth_from_pairs
from zoo.nets_convnext import ConvMlpConvNeXt, OfficialConvNeXt
from zoo.nets_effnet import TimmEffNet, TvEffNet
from zoo.nets_resnet import D2ResNet, StagedResNet, TvResNet
from zoo.nets_swin import SwinEndMerge, SwinStartMerge
from zoo.resnet_truth import d2_name, resnets_truth, staged_name, tv_name

RESNET = (2, 2, 2, 2)


def images(size: int = 16) -> torch.Tensor:
    """Side → a deterministic (2, 3, side, side) image batch."""
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


def _wb(src: str, tgt: str) -> list[tuple[str, str]]:
    return [(f"{src}.weight", f"{tgt}.weight"), (f"{src}.bias", f"{tgt}.bias")]


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(src: str, tgt: str) -> list[tuple[str, str]]:
    return [(f"{src}.{n}", f"{tgt}.{n}") for n in _BN]


def _w(src: str, tgt: str) -> list[tuple[str, str]]:
    return [(f"{src}.weight", f"{tgt}.weight")]


# --- ResNet --------------------------------------------------------------------------------

declare(
    "resnet_tv_to_timm_names",
    lambda: TvResNet(RESNET),
    lambda: StagedResNet(RESNET),
    images,
    resnets_truth(RESNET, RESNET, tv_name, staged_name),
)
declare(
    "resnet_tv_to_d2_frozen_bn",
    lambda: TvResNet(RESNET),
    lambda: D2ResNet(RESNET, norm="frozen"),
    images,
    resnets_truth(RESNET, RESNET, tv_name, d2_name, src_norm="bn", tgt_norm="frozen"),
)


# --- EfficientNet stage --------------------------------------------------------------------

EFF_DEPTH = 12


def effnet_truth(depth: int = EFF_DEPTH, target_depth: int | None = None) -> Truth:
    """Blocks in the timm-like source (and torchvision-like target) → truth; extra target
    blocks (a deeper target) have no partner."""
    pairs = _w("conv_stem", "features.0.0") + _bn("bn1", "features.0.1")
    for i in range(depth):
        s, t = f"blocks.{i}", f"features.1.{i}.block"
        pairs += _w(f"{s}.conv_pw", f"{t}.0.0") + _bn(f"{s}.bn1", f"{t}.0.1")
        pairs += _w(f"{s}.conv_dw", f"{t}.1.0") + _bn(f"{s}.bn2", f"{t}.1.1")
        pairs += _wb(f"{s}.se.conv_reduce", f"{t}.2.fc1") + _wb(f"{s}.se.conv_expand", f"{t}.2.fc2")
        pairs += _w(f"{s}.conv_pwl", f"{t}.3.0") + _bn(f"{s}.bn3", f"{t}.3.1")
    pairs += _w("conv_head", "features.2.0") + _bn("bn2", "features.2.1")
    pairs += _wb("classifier", "classifier.1")
    lone = []
    for i in range(depth, target_depth or depth):
        t = f"features.1.{i}.block"
        lone += [f"{t}.0.0.weight", f"{t}.1.0.weight", f"{t}.3.0.weight"]
        lone += [f"{t}.{k}.1.{n}" for k in (0, 1, 3) for n in _BN]
        lone += [f"{t}.2.fc{k}.{n}" for k in (1, 2) for n in ("weight", "bias")]
    return truth_from_pairs(pairs, unmapped_target=lone)


declare(
    "effnet_timm_to_torchvision",
    lambda: TimmEffNet(EFF_DEPTH),
    lambda: TvEffNet(EFF_DEPTH),
    lambda: images(8),
    effnet_truth,
)


# --- Swin ----------------------------------------------------------------------------------

SWIN_DEPTHS = (2, 2, 2)


def _swin_truth() -> Truth:
    pairs = _wb("patch_embed.proj", "patch_embed.proj") + _wb(
        "patch_embed.norm", "patch_embed.norm"
    )
    lone = []
    for i, depth in enumerate(SWIN_DEPTHS):
        for j in range(depth):
            s, t = f"layers.{i}.blocks.{j}", f"stages.{i}.blocks.{j}"
            for n in ("norm1", "attn.qkv", "attn.proj", "norm2", "mlp.fc1", "mlp.fc2"):
                pairs += _wb(f"{s}.{n}", f"{t}.{n}")
            pairs.append(
                (f"{s}.attn.relative_position_bias_table", f"{t}.attn.relative_position_bias_table")
            )
            lone.append(f"{s}.attn.relative_position_index")
        if i < len(SWIN_DEPTHS) - 1:
            # merging at the end of stage i is the merging at the start of stage i + 1
            s, t = f"layers.{i}.downsample", f"stages.{i + 1}.downsample"
            pairs += _wb(f"{s}.norm", f"{t}.norm") + _w(f"{s}.reduction", f"{t}.reduction")
    pairs += _wb("norm", "norm") + _wb("head", "head.fc")
    return truth_from_pairs(pairs, unmapped_source=lone)


declare(
    "swin_end_merge_to_start_merge",
    lambda: SwinEndMerge(depths=SWIN_DEPTHS),
    lambda: SwinStartMerge(depths=SWIN_DEPTHS),
    images,
    _swin_truth,
)


# --- ConvNeXt: Linear ↔ 1×1 conv and (C,) ↔ (C, 1, 1) layer scale -------------------------

CNX_DEPTHS, CNX_DIMS = (2, 2), (8, 16)


def _convnext_truth() -> Truth:
    pairs = _wb("downsample_layers.0.0", "stem.0") + _wb("downsample_layers.0.1", "stem.1")
    transforms: dict[str, tuple[str, dict[str, Any]]] = {}
    for i, (depth, c) in enumerate(zip(CNX_DEPTHS, CNX_DIMS, strict=True)):
        if i:
            for k in ("0", "1"):
                pairs += _wb(f"downsample_layers.{i}.{k}", f"stages.{i}.downsample.{k}")
        for j in range(depth):
            s, t = f"stages.{i}.{j}", f"stages.{i}.blocks.{j}"
            pairs += _wb(f"{s}.dwconv", f"{t}.conv_dw") + _wb(f"{s}.norm", f"{t}.norm")
            pairs += _wb(f"{s}.pwconv1", f"{t}.mlp.fc1") + _wb(f"{s}.pwconv2", f"{t}.mlp.fc2")
            pairs.append((f"{s}.gamma", f"{t}.gamma"))
            transforms[f"{s}.pwconv1.weight"] = ("reshape", {"shape": [4 * c, c, 1, 1]})
            transforms[f"{s}.pwconv2.weight"] = ("reshape", {"shape": [c, 4 * c, 1, 1]})
            transforms[f"{s}.gamma"] = ("reshape", {"shape": [c, 1, 1]})
    pairs += _wb("norm", "head.norm") + _wb("head", "head.fc")
    return truth_from_pairs(pairs, transforms=transforms)


declare(
    "convnext_linear_to_conv_mlp",
    lambda: OfficialConvNeXt(CNX_DEPTHS, CNX_DIMS),
    lambda: ConvMlpConvNeXt(CNX_DEPTHS, CNX_DIMS),
    images,
    _convnext_truth,
)
