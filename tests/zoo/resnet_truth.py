"""Ground truth between the ResNet layouts of :mod:`zoo.nets_resnet`.

Every layout names the same canonical layers (stem conv/norm, per-block conv_a/norm_a/conv_b/
norm_b and shortcut conv/norm, the classifier); a truth is the layer-by-layer product of two
namings, expanded to tensors by each side's norm kind, so BatchNorm → FrozenBatchNorm leaves
``num_batches_tracked`` partnerless and BatchNorm → GroupNorm leaves the running statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from zoo.case import Truth, truth_from_pairs

Layer = tuple[str, int, int, str]
"""(kind, stage, block, role); kind is conv, norm or linear; stage/block −1 outside stages."""
Namer = Callable[[Layer], str | None]

NORM_TENSORS = {
    "bn": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
    "frozen": ("weight", "bias", "running_mean", "running_var"),
    "gn": ("weight", "bias"),
}


def resnet_layers(layers: tuple[int, ...], head: bool = True) -> list[Layer]:
    """Blocks per stage → the canonical layer list of a basic-block ResNet."""
    out: list[Layer] = [("conv", -1, -1, "stem_conv"), ("norm", -1, -1, "stem_norm")]
    for i, depth in enumerate(layers):
        for j in range(depth):
            out += [
                ("conv", i, j, "conv_a"),
                ("norm", i, j, "norm_a"),
                ("conv", i, j, "conv_b"),
                ("norm", i, j, "norm_b"),
            ]
            if i > 0 and j == 0:
                out += [("conv", i, j, "short_conv"), ("norm", i, j, "short_norm")]
    if head:
        out.append(("linear", -1, -1, "fc"))
    return out


_TV = {"conv_a": "conv1", "norm_a": "bn1", "conv_b": "conv2", "norm_b": "bn2"}
_TV |= {"short_conv": "downsample.0", "short_norm": "downsample.1"}
_D2 = {"conv_a": "conv1", "norm_a": "conv1.norm", "conv_b": "conv2", "norm_b": "conv2.norm"}
_D2 |= {"short_conv": "shortcut", "short_norm": "shortcut.norm"}


def tv_name(layer: Layer) -> str:
    """Canonical layer → torchvision module path."""
    _, i, j, role = layer
    top = {"stem_conv": "conv1", "stem_norm": "bn1", "fc": "fc"}
    return top[role] if role in top else f"layer{i + 1}.{j}.{_TV[role]}"


def staged_name(layer: Layer) -> str:
    """Canonical layer → timm-like module path."""
    _, i, j, role = layer
    top = {"stem_conv": "stem.conv", "stem_norm": "stem.norm", "fc": "head.fc"}
    if role in top:
        return top[role]
    role = {"short_conv": "shortcut.conv", "short_norm": "shortcut.norm"}.get(role, role)
    return f"stages.{i}.blocks.{j}.{role}"


def d2_name(layer: Layer) -> str:
    """Canonical layer → detectron2-like module path."""
    _, i, j, role = layer
    top = {"stem_conv": "stem.conv1", "stem_norm": "stem.conv1.norm", "fc": "linear"}
    return top[role] if role in top else f"res{i + 2}.{j}.{_D2[role]}"


def _tensors(kind: str, norm: str) -> tuple[str, ...]:
    if kind == "conv":
        return ("weight",)
    if kind == "linear":
        return ("weight", "bias")
    return NORM_TENSORS[norm]


def resnet_truth(
    src_layers: list[Layer],
    tgt_layers: list[Layer],
    src_name: Namer,
    tgt_name: Namer,
    src_norm: str = "bn",
    tgt_norm: str = "bn",
    *,
    unpaired_roles: tuple[str, ...] = (),
) -> Truth:
    """Two canonical layer lists + their namings and norms → Truth.

    A layer present on both sides is paired tensor by tensor (unless its role is in
    ``unpaired_roles``, e.g. a resized classifier); everything else is partnerless.
    """
    tgt_set = set(tgt_layers)
    src_set = set(src_layers)
    pairs: list[tuple[str, str]] = []
    lone_src: list[str] = []
    lone_tgt: list[str] = []
    for layer in src_layers:
        s = src_name(layer)
        s_t = _tensors(layer[0], src_norm)
        if layer not in tgt_set or layer[3] in unpaired_roles:
            lone_src += [f"{s}.{n}" for n in s_t]
            continue
        t = tgt_name(layer)
        t_t = _tensors(layer[0], tgt_norm)
        pairs += [(f"{s}.{n}", f"{t}.{n}") for n in s_t if n in t_t]
        lone_src += [f"{s}.{n}" for n in s_t if n not in t_t]
        lone_tgt += [f"{t}.{n}" for n in t_t if n not in s_t]
    for layer in tgt_layers:
        if layer not in src_set or layer[3] in unpaired_roles:
            lone_tgt += [f"{tgt_name(layer)}.{n}" for n in _tensors(layer[0], tgt_norm)]
    return truth_from_pairs(pairs, unmapped_source=lone_src, unmapped_target=lone_tgt)


def resnets_truth(
    src: tuple[int, ...], tgt: tuple[int, ...], src_name: Namer, tgt_name: Namer, **kw: Any
) -> Callable[[], Truth]:
    """Blocks per stage of two classifier ResNets + their namings (+ :func:`resnet_truth`'s
    norms and unpaired roles) → the function giving their truth."""
    return lambda: resnet_truth(resnet_layers(src), resnet_layers(tgt), src_name, tgt_name, **kw)
