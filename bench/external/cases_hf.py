"""Cases whose truth is transformers' own legacy-checkpoint conversion (``conversion_mapping``).

transformers reads checkpoints saved by earlier versions (old ViT/DINOv2 key names, a fused
SwiGLU ``weights_in``, per-expert MoE weights, GPT-NeoX ``embed_out``, BERT ``gamma``/``beta``)
through ``WeightConverter`` / ``WeightRenaming`` rules applied in ``from_pretrained``. The old
layout is written by transformers' reverse of those rules (``revert_weight_conversion``) and
read back by ``from_pretrained`` from a local folder: both directions are transformers' code,
nothing is downloaded. The source is a checkpoint layout with no module of its own.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import torch

from bench.external.case import (
    Built,
    ExternalCase,
    hf_model,
    logits,
    randomize_,
    register,
    seeded,
    token_ids,
)

REQ = ("transformers",)


def hf_loader(
    cls: Any, config: Any
) -> Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """HF model class + config → converter: checkpoint in any layout transformers reads → the
    state dict ``from_pretrained`` loads from it (keys it had to initialise left out)."""

    def convert(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        from safetensors.torch import save_file

        with tempfile.TemporaryDirectory() as d:
            save_file(
                {k: v.detach().contiguous().clone() for k, v in sd.items()},
                f"{d}/model.safetensors",
            )
            config.save_pretrained(d)
            model, info = cls.from_pretrained(d, output_loading_info=True)
        missing = set(info["missing_keys"])
        return {k: v.detach().clone() for k, v in model.state_dict().items() if k not in missing}

    return convert


def legacy_checkpoint(model: Any, *, with_legacy_renames: bool = False) -> dict[str, torch.Tensor]:
    """HF model → its state dict in the layout transformers' reverse conversion writes."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import revert_weight_conversion

    if with_legacy_renames:
        model._weight_conversions = get_model_conversion_mapping(model, add_legacy=True)
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = revert_weight_conversion(model, sd)
    if with_legacy_renames:
        del model._weight_conversions
    return {k: v.detach().clone() for k, v in out.items()}


def _pixels(size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn(1, 3, size, size, generator=g)


def _ids(length: int = 7) -> Callable[[], torch.Tensor]:
    return lambda: token_ids(64, length=length)


_SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
_IMAGE = dict(_SIZES, image_size=16, patch_size=8)
_TEXT = dict(_SIZES, vocab_size=64, tie_word_embeddings=False)
_DECODER = dict(_TEXT, num_key_value_heads=2, intermediate_size=48, num_experts_per_tok=2)
_CONFIGS: dict[str, dict[str, Any]] = {
    # transformers config class: its fields, tiny
    "ViTConfig": dict(_IMAGE, intermediate_size=64),
    "Dinov2Config": dict(_IMAGE, mlp_ratio=2, use_swiglu_ffn=True),
    "GPTNeoXConfig": dict(_TEXT, intermediate_size=64),
    "MixtralConfig": dict(_DECODER, num_local_experts=3),
    "Qwen2MoeConfig": dict(
        _DECODER, moe_intermediate_size=24, shared_expert_intermediate_size=40, num_experts=3
    ),
    "BertConfig": dict(_TEXT, intermediate_size=64, max_position_embeddings=16),
}


def _legacy(
    cls: str,
    config: str,
    inputs: Callable[[], Any],
    *,
    with_legacy_renames: bool = False,
    target_cls: str = "",
) -> Callable[[], Built]:
    """transformers class and config names (+ another head class of the family as the target)
    → a legacy-checkpoint case: the source in the layout transformers' reverse conversion writes."""

    def build() -> Built:
        import transformers as tf

        model_cls, cfg = hf_model(cls, config, **_CONFIGS[config])
        model = randomize_(seeded(lambda: model_cls(cfg))())
        tcls = getattr(tf, target_cls) if target_cls else model_cls
        return Built(
            source_sd=legacy_checkpoint(model, with_legacy_renames=with_legacy_renames),
            build_target=seeded(lambda: tcls(cfg)),
            converter=hf_loader(tcls, cfg),
            inputs=inputs(),
            run_target=logits,
        )

    return build


for name, family, make, description in (
    (
        "hf-legacy-vit",
        "vision",
        _legacy("ViTModel", "ViTConfig", _pixels),
        "old ViT keys (encoder.layer.N.attention.attention.query, intermediate.dense) → today's",
    ),
    (
        "hf-legacy-dinov2-swiglu",
        "vision",
        _legacy("Dinov2Model", "Dinov2Config", _pixels),
        "old DINOv2 with SwiGLU: one fused mlp.weights_in chunked into gate_proj and up_proj",
    ),
    (
        "hf-legacy-gptneox",
        "neox",
        _legacy("GPTNeoXForCausalLM", "GPTNeoXConfig", _ids()),
        "GPT-NeoX hub layout: embed_out → lm_head, fused query_key_value kept",
    ),
    (
        "hf-legacy-mixtral-experts",
        "moe",
        _legacy("MixtralForCausalLM", "MixtralConfig", _ids()),
        "Mixtral per-expert w1/w3/w2 → stacked experts.gate_up_proj and experts.down_proj",
    ),
    (
        "hf-legacy-qwen2moe-experts",
        "moe",
        _legacy("Qwen2MoeForCausalLM", "Qwen2MoeConfig", _ids()),
        "Qwen2-MoE per-expert gate/up/down → stacked experts, beside a shared expert",
    ),
    (
        "hf-legacy-bert-gamma-beta",
        "encoder",
        _legacy("BertForMaskedLM", "BertConfig", _ids(8), with_legacy_renames=True),
        "BERT MLM saved with LayerNorm.gamma/beta → LayerNorm.weight/bias",
    ),
    (
        "hf-legacy-bert-pretraining-to-mlm",
        "encoder",
        _legacy(
            "BertForPreTraining",
            "BertConfig",
            _ids(8),
            with_legacy_renames=True,
            target_cls="BertForMaskedLM",
        ),
        "BERT pre-training checkpoint (gamma/beta) → BertForMaskedLM: pooler and NSP head stay unmapped",
    ),
    (
        "hf-legacy-bert-mlm-to-classifier",
        "encoder",
        _legacy(
            "BertForMaskedLM",
            "BertConfig",
            _ids(8),
            with_legacy_renames=True,
            target_cls="BertForSequenceClassification",
        ),
        "BERT MLM checkpoint → BertForSequenceClassification: MLM head unmapped, pooler and classifier new",
    ),
):
    register(
        ExternalCase(
            name=name,
            family=family,
            converter_name="transformers.conversion_mapping (from_pretrained)",
            build=make,
            requires=REQ,
            description=description,
        )
    )
