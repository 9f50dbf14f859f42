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

from bench.external.case import Built, ExternalCase, logits, randomize_, register, seeded, token_ids

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


def _legacy(
    make: Callable[[], tuple[Any, Any]],
    inputs: Callable[[], Any],
    *,
    with_legacy_renames: bool = False,
    target_cls: str = "",
) -> Callable[[], Built]:
    """Model family (+ another head class of it as the target) → a legacy-checkpoint case."""

    def build() -> Built:
        import transformers as tf

        cls, cfg = make()
        model = randomize_(seeded(lambda: cls(cfg))())
        tcls = getattr(tf, target_cls) if target_cls else cls
        return Built(
            source_sd=legacy_checkpoint(model, with_legacy_renames=with_legacy_renames),
            build_target=seeded(lambda: tcls(cfg)),
            converter=hf_loader(tcls, cfg),
            inputs=inputs(),
            run_target=logits,
        )

    return build


def _vit() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=16,
        patch_size=8,
    )
    return tf.ViTModel, cfg


def _dinov2() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        image_size=16,
        patch_size=8,
        use_swiglu_ffn=True,
    )
    return tf.Dinov2Model, cfg


def _neox() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.GPTNeoXConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        tie_word_embeddings=False,
    )
    return tf.GPTNeoXForCausalLM, cfg


def _mixtral() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.MixtralConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        num_local_experts=3,
        num_experts_per_tok=2,
        tie_word_embeddings=False,
    )
    return tf.MixtralForCausalLM, cfg


def _qwen2_moe() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.Qwen2MoeConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=3,
        num_experts_per_tok=2,
        tie_word_embeddings=False,
    )
    return tf.Qwen2MoeForCausalLM, cfg


def _bert() -> tuple[Any, Any]:
    import transformers as tf

    cfg = tf.BertConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    return tf.BertForMaskedLM, cfg


def _bert_pretraining() -> tuple[Any, Any]:
    import transformers as tf

    return tf.BertForPreTraining, _bert()[1]


def _hf(name: str, family: str, build: Callable[[], Built], desc: str) -> None:
    register(
        ExternalCase(
            name=name,
            family=family,
            converter_name="transformers.conversion_mapping (from_pretrained)",
            build=build,
            requires=REQ,
            description=desc,
        )
    )


_hf(
    "hf-legacy-vit",
    "vision",
    _legacy(_vit, _pixels),
    "old ViT keys (encoder.layer.N.attention.attention.query, intermediate.dense) → today's",
)
_hf(
    "hf-legacy-dinov2-swiglu",
    "vision",
    _legacy(_dinov2, _pixels),
    "old DINOv2 with SwiGLU: one fused mlp.weights_in chunked into gate_proj and up_proj",
)
_hf(
    "hf-legacy-gptneox",
    "neox",
    _legacy(_neox, lambda: token_ids(64)),
    "GPT-NeoX hub layout: embed_out → lm_head, fused query_key_value kept",
)
_hf(
    "hf-legacy-mixtral-experts",
    "moe",
    _legacy(_mixtral, lambda: token_ids(64)),
    "Mixtral per-expert w1/w3/w2 → stacked experts.gate_up_proj and experts.down_proj",
)
_hf(
    "hf-legacy-qwen2moe-experts",
    "moe",
    _legacy(_qwen2_moe, lambda: token_ids(64)),
    "Qwen2-MoE per-expert gate/up/down → stacked experts, beside a shared expert",
)
_hf(
    "hf-legacy-bert-gamma-beta",
    "encoder",
    _legacy(_bert, lambda: token_ids(64, length=8), with_legacy_renames=True),
    "BERT MLM saved with LayerNorm.gamma/beta → LayerNorm.weight/bias",
)
_hf(
    "hf-legacy-bert-pretraining-to-mlm",
    "encoder",
    _legacy(
        _bert_pretraining,
        lambda: token_ids(64, length=8),
        with_legacy_renames=True,
        target_cls="BertForMaskedLM",
    ),
    "BERT pre-training checkpoint (gamma/beta) → BertForMaskedLM: pooler and NSP head stay unmapped",
)
_hf(
    "hf-legacy-bert-mlm-to-classifier",
    "encoder",
    _legacy(
        _bert,
        lambda: token_ids(64, length=8),
        with_legacy_renames=True,
        target_cls="BertForSequenceClassification",
    ),
    "BERT MLM checkpoint → BertForSequenceClassification: MLM head unmapped, pooler and classifier new",
)
