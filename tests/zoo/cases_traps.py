"""Precision traps: keys that must stay unmapped while the rest still lines up block by block."""

from __future__ import annotations

from zoo.case import Truth, ZooCase, register
from zoo.cases_hf import (
    CHANNELS,
    HEADS,
    HIDDEN,
    IMAGE,
    LAYERS,
    PATCH,
    POSITIONS,
    VOCAB,
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
    staged_name,
    tv_name,
)

register(
    ZooCase(
        name="trap_resized_head",
        category="trap",
        build_source=lambda: TvResNet(RESNET, num_classes=1000),
        build_target=lambda: StagedResNet(RESNET, num_classes=10),
        dummy_input=images,
        truth=lambda: resnet_truth(
            resnet_layers(RESNET),
            resnet_layers(RESNET),
            tv_name,
            staged_name,
            unpaired_roles=("fc",),
        ),
        same_function=False,
        shared_features=(
            lambda m, x: m.forward_features(x),
            lambda m, x: m.forward_features(x),
        ),
        description="1000-class torchvision ResNet → 10-class timm-like ResNet: the classifier "
        "has no partner; the backbone must map completely.",
        hard_cases=("resized_head",),
    )
)
register(
    ZooCase(
        name="trap_batchnorm_to_groupnorm",
        category="trap",
        build_source=lambda: TvResNet(RESNET, norm="bn"),
        build_target=lambda: StagedResNet(RESNET, norm="gn"),
        dummy_input=images,
        truth=lambda: resnet_truth(
            resnet_layers(RESNET),
            resnet_layers(RESNET),
            tv_name,
            staged_name,
            src_norm="bn",
            tgt_norm="gn",
        ),
        same_function=False,
        description="BatchNorm ResNet → GroupNorm ResNet: running statistics have no partner; "
        "convs and the norms' affine weight/bias still line up.",
        hard_cases=("batchnorm_to_groupnorm",),
    )
)

DEEPER = (2, 3, 2, 2)
SHALLOWER_SRC = (2, 2, 3, 2)

register(
    ZooCase(
        name="trap_deeper_target",
        category="trap",
        build_source=lambda: TvResNet(RESNET),
        build_target=lambda: StagedResNet(DEEPER),
        dummy_input=images,
        truth=lambda: resnet_truth(
            resnet_layers(RESNET), resnet_layers(DEEPER), tv_name, staged_name
        ),
        same_function=False,
        description="ResNet with 2 blocks in stage 2 → one with 3: stages.1.blocks.2 has no "
        "partner and every later block must still line up.",
        hard_cases=("deeper_variant", "same_shape_run"),
    )
)
register(
    ZooCase(
        name="trap_shallower_target",
        category="trap",
        build_source=lambda: TvResNet(SHALLOWER_SRC),
        build_target=lambda: D2ResNet(RESNET, norm="bn"),
        dummy_input=images,
        truth=lambda: resnet_truth(
            resnet_layers(SHALLOWER_SRC), resnet_layers(RESNET), tv_name, d2_name
        ),
        same_function=False,
        description="ResNet with 3 blocks in stage 3 → detectron2-like names with 2: layer3.2 "
        "has no partner and res5 must still line up with layer4.",
        hard_cases=("shallower_variant", "same_shape_run"),
    )
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


register(
    ZooCase(
        name="trap_backbone_in_detector",
        category="trap",
        build_source=lambda: TvResNet(RESNET),
        build_target=lambda: Detector(RESNET),
        dummy_input=images,
        truth=_detector_truth,
        same_function=False,
        shared_features=(
            lambda m, x: m.forward_features(x),
            lambda m, x: m.backbone.body(x)[-1],
        ),
        description="classification ResNet → detector reusing it as backbone.body (frozen BN): "
        "fc must not land on roi_heads.box_predictor.cls_score (same shape); FPN and heads "
        "have no partner.",
        hard_cases=("backbone_in_detector", "frozen_batchnorm", "wrapper_prefix"),
    )
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


register(
    ZooCase(
        name="trap_resized_vocab",
        category="trap",
        build_source=hf_gpt2,
        build_target=lambda: HandGpt2(RESIZED_VOCAB, POSITIONS, D, LAYERS, HEADS, fused=True),
        dummy_input=token_ids,
        truth=_resized_vocab_truth,
        same_function=False,
        requires=("transformers",),
        description=f"HF GPT-2 (vocab {VOCAB}) → Linear GPT-2 with {RESIZED_VOCAB} tokens: the "
        "tied embedding and head have no partner; every block still maps (transposed).",
        hard_cases=("resized_embedding", "tied_weights", "conv1d_vs_linear"),
    )
)


def _layer_scale_truth() -> Truth:
    full = vit_truth(fused=False)
    extra = {f"blocks.{i}.ls{j}.gamma" for i in range(LAYERS) for j in (1, 2)}
    return Truth(pairs=full.pairs, unmapped_target=frozenset(extra))


register(
    ZooCase(
        name="trap_extra_layer_scale",
        category="trap",
        build_source=hf_vit,
        build_target=lambda: HandVit(
            IMAGE, PATCH, CHANNELS, D, LAYERS, HEADS, HIDDEN, layer_scale=True
        ),
        dummy_input=pixels,
        truth=_layer_scale_truth,
        same_function=False,
        requires=("transformers",),
        # the target's layer scales start at 1, so the mapped part must compute the same
        shared_features=(
            lambda m, x: model_output(m, x)[0],
            lambda m, x: model_output(m, x)[0],
        ),
        description="HF ViT → timm-like ViT with layer scale: ls1/ls2.gamma (D,) have no "
        "partner yet share their shape with every LayerNorm weight and bias.",
        hard_cases=("extra_same_shape_params", "registration_vs_execution_order"),
    )
)


register(
    ZooCase(
        name="trap_deeper_effnet_stage",
        category="trap",
        build_source=lambda: TimmEffNet(EFF_DEPTH),
        build_target=lambda: TvEffNet(EFF_DEPTH + 1),
        dummy_input=lambda: images(8),
        truth=lambda: effnet_truth(EFF_DEPTH, EFF_DEPTH + 1),
        same_function=False,
        description=f"{EFF_DEPTH} identical timm blocks → {EFF_DEPTH + 1} torchvision blocks: "
        f"features.1.{EFF_DEPTH} has no partner, and with every block the same shape one "
        "misaligned block would shift all later pairs.",
        hard_cases=("deeper_variant", "same_shape_run", "sequential_indices"),
    )
)
