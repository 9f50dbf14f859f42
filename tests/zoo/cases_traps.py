"""Precision traps: keys that must stay unmapped while the rest still lines up block by block."""

from __future__ import annotations

from zoo.case import Truth, declare
from zoo.cases_hf import (
    CHANNELS,
    HEADS,
    HIDDEN,
    IMAGE,
    LAYERS,
    PATCH,
    POSITIONS,
    D,
    gpt2_truth,
    hf_gpt2,
    hf_vit,
    pixels,
    token_ids,
    vit_truth,
)
from zoo.cases_vision import EFF_DEPTH, RESNET, effnet_truth, images
from zoo.check import model_output
from zoo.nets_effnet import TimmEffNet, TvEffNet
from zoo.nets_resnet import D2ResNet, Detector, StagedResNet, TvResNet
from zoo.nets_text import HandGpt2
from zoo.nets_vit import HandVit
from zoo.resnet_truth import (
    d2_name,
    resnet_layers,
    resnet_truth,
    resnets_truth,
    staged_name,
    tv_name,
)

declare(
    "trap_resized_head",
    lambda: TvResNet(RESNET, num_classes=1000),
    lambda: StagedResNet(RESNET, num_classes=10),
    images,
    resnets_truth(RESNET, RESNET, tv_name, staged_name, unpaired_roles=("fc",)),
    shared_features=(
        lambda m, x: m.forward_features(x),
        lambda m, x: m.forward_features(x),
    ),
)
declare(
    "trap_batchnorm_to_groupnorm",
    lambda: TvResNet(RESNET, norm="bn"),
    lambda: StagedResNet(RESNET, norm="gn"),
    images,
    resnets_truth(RESNET, RESNET, tv_name, staged_name, src_norm="bn", tgt_norm="gn"),
)

DEEPER = (2, 3, 2, 2)
SHALLOWER_SRC = (2, 2, 3, 2)

declare(
    "trap_deeper_target",
    lambda: TvResNet(RESNET),
    lambda: StagedResNet(DEEPER),
    images,
    resnets_truth(RESNET, DEEPER, tv_name, staged_name),
)
declare(
    "trap_shallower_target",
    lambda: TvResNet(SHALLOWER_SRC),
    lambda: D2ResNet(RESNET, norm="bn"),
    images,
    resnets_truth(SHALLOWER_SRC, RESNET, tv_name, d2_name),
)


def _detector_truth() -> Truth:
    body = resnet_truth(
        resnet_layers(RESNET),
        resnet_layers(RESNET, head=False),
        tv_name,
        lambda layer: f"backbone.body.{tv_name(layer)}",
        src_norm="bn",
        tgt_norm="frozen",
    )
    extra = {k for k in Detector(RESNET).state_dict() if not k.startswith("backbone.body.")}
    return Truth(
        pairs=body.pairs,
        unmapped_source=body.unmapped_source,
        unmapped_target=body.unmapped_target | frozenset(extra),
    )


declare(
    "trap_backbone_in_detector",
    lambda: TvResNet(RESNET),
    lambda: Detector(RESNET),
    images,
    _detector_truth,
    shared_features=(
        lambda m, x: m.forward_features(x),
        lambda m, x: m.backbone.body(x)[-1],
    ),
)


# --- traps across libraries ----------------------------------------------------------------

RESIZED_VOCAB = 120


def _resized_vocab_truth() -> Truth:
    full = gpt2_truth(fused=True)
    embed = {"transformer.wte.weight", "lm_head.weight"}
    pairs = {s: t for s, t in full.pairs.items() if s not in embed}
    return Truth(
        pairs=pairs,
        transforms={s: v for s, v in full.transforms.items() if s in pairs},
        unmapped_source=frozenset(embed),
        unmapped_target=frozenset({"tok_emb.weight", "head.weight"}),
    )


declare(
    "trap_resized_vocab",
    hf_gpt2,
    lambda: HandGpt2(RESIZED_VOCAB, POSITIONS, D, LAYERS, HEADS, fused=True),
    token_ids,
    _resized_vocab_truth,
)


def _layer_scale_truth() -> Truth:
    full = vit_truth(fused=False)
    extra = {f"blocks.{i}.ls{j}.gamma" for i in range(LAYERS) for j in (1, 2)}
    return Truth(pairs=full.pairs, unmapped_target=frozenset(extra))


declare(
    "trap_extra_layer_scale",
    hf_vit,
    lambda: HandVit(IMAGE, PATCH, CHANNELS, D, LAYERS, HEADS, HIDDEN, layer_scale=True),
    pixels,
    _layer_scale_truth,
    shared_features=(
        lambda m, x: model_output(m, x)[0],
        lambda m, x: model_output(m, x)[0],
    ),
)


declare(
    "trap_deeper_effnet_stage",
    lambda: TimmEffNet(EFF_DEPTH),
    lambda: TvEffNet(EFF_DEPTH + 1),
    lambda: images(8),
    lambda: effnet_truth(EFF_DEPTH, EFF_DEPTH + 1),
)
