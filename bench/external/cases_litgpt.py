"""Cases whose truth is litgpt's checkpoint converters (``litgpt.scripts.convert_*_checkpoint``).

litgpt stores one fused ``attn.qkv`` per block: HF q/k/v are concatenated into it (grouped
query attention: unequal parts), a GPT-NeoX ``query_key_value`` whose rows are interleaved per
head is reassembled into it, Phi-3's gate/up is cut in two. The reverse converters split it
again. Each litgpt configuration is a named one of litgpt's, shrunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from bench.external.case import (
    Built,
    ExternalCase,
    logits,
    randomize_,
    register,
    seeded,
    state_dict_of,
    token_ids,
)
from bench.external.cases_hf import hf_loader

VOCAB = 64
SMALL = dict(
    n_layer=2, n_embd=32, n_head=4, vocab_size=VOCAB, padded_vocab_size=VOCAB, block_size=32
)
REQ = ("litgpt.model", "transformers")


def _lit_config(name: str, **kw: Any) -> Any:
    from litgpt.config import Config

    return Config.from_name(name, **{**SMALL, **kw})


def _lit_model(cfg: Any) -> Callable[[], Any]:
    from litgpt.model import GPT

    return seeded(lambda: GPT(cfg))


def _hf_llama_like(cfg: Any, kind: str) -> tuple[Any, Any]:
    """litgpt config + HF family → (HF model class, HF config) with the same function."""
    import transformers as tf

    common = dict(
        vocab_size=VOCAB,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        num_key_value_heads=cfg.n_query_groups,
        max_position_embeddings=cfg.block_size,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=float(cfg.rope_base),
        tie_word_embeddings=False,
    )
    if kind == "llama":
        return tf.LlamaForCausalLM, tf.LlamaConfig(**common)
    if kind == "qwen2":
        return tf.Qwen2ForCausalLM, tf.Qwen2Config(**common)
    if kind == "phi3":
        return tf.Phi3ForCausalLM, tf.Phi3Config(
            **common,
            original_max_position_embeddings=cfg.block_size,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )
    raise ValueError(kind)


def _hf_neox(cfg: Any) -> tuple[Any, Any]:
    import transformers as tf

    return tf.GPTNeoXForCausalLM, tf.GPTNeoXConfig(
        vocab_size=VOCAB,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        rotary_pct=cfg.rotary_percentage,
        max_position_embeddings=cfg.block_size,
        layer_norm_eps=cfg.norm_eps,
        use_parallel_residual=cfg.parallel_residual,
        hidden_act="gelu",
        tie_word_embeddings=False,
    )


def _hf_phi2(cfg: Any) -> tuple[Any, Any]:
    import transformers as tf

    return tf.PhiForCausalLM, tf.PhiConfig(
        vocab_size=VOCAB,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        partial_rotary_factor=cfg.rotary_percentage,
        max_position_embeddings=cfg.block_size,
        layer_norm_eps=cfg.norm_eps,
        hidden_act="gelu_new",
        tie_word_embeddings=False,
    )


def _hf_to_lit(lit_name: str, hf: Callable[[Any], tuple[Any, Any]], copy: str, **kw: Any) -> Built:
    from litgpt.scripts import convert_hf_checkpoint as conv

    cfg = _lit_config(lit_name, **kw)
    cls, hf_cfg = hf(cfg)
    src = randomize_(seeded(lambda: cls(hf_cfg))())
    fn = getattr(conv, copy)

    def converter(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if copy == "copy_weights_gpt_neox":
            # litgpt reads the hub layout (``embed_out``); transformers' own saver writes it
            from transformers.core_model_loading import revert_weight_conversion

            sd = revert_weight_conversion(src, sd)
            fn(cfg, out, sd)
        else:
            fn(cfg, {}, out, sd)
        return out

    return Built(
        source_sd=state_dict_of(src),
        build_target=_lit_model(cfg),
        converter=converter,
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _lit_to_hf(lit_name: str, hf: Callable[[Any], tuple[Any, Any]], copy: str, **kw: Any) -> Built:
    from litgpt.scripts import convert_lit_checkpoint as conv

    cfg = _lit_config(lit_name, **kw)
    cls, hf_cfg = hf(cfg)
    src = randomize_(_lit_model(cfg)())
    fn = getattr(conv, copy)
    load = hf_loader(cls, hf_cfg)

    def converter(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        fn(cfg, out, sd)
        # litgpt writes the hub layout; transformers' loader reads it into today's modules
        return load(out)

    return Built(
        source_sd=state_dict_of(src),
        build_target=seeded(lambda: cls(hf_cfg)),
        converter=converter,
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _lit(name: str, family: str, conv: str, build: Callable[[], Built], desc: str) -> None:
    register(
        ExternalCase(
            name=name,
            family=family,
            converter_name=conv,
            build=build,
            requires=REQ,
            description=desc,
        )
    )


_LLAMA = dict(n_query_groups=2, intermediate_size=48)
_lit(
    "lit-llama-gqa-hf-to-lit",
    "gqa",
    "litgpt.scripts.convert_hf_checkpoint:copy_weights_hf_llama",
    lambda: _hf_to_lit(
        "Llama-2-7b-hf", lambda c: _hf_llama_like(c, "llama"), "copy_weights_hf_llama", **_LLAMA
    ),
    "HF Llama (2 key/value heads) → litgpt: q, k, v concatenated into one qkv (unequal parts)",
)
_lit(
    "lit-llama-gqa-lit-to-hf",
    "gqa",
    "litgpt.scripts.convert_lit_checkpoint:copy_weights_llama",
    lambda: _lit_to_hf(
        "Llama-2-7b-hf", lambda c: _hf_llama_like(c, "llama"), "copy_weights_llama", **_LLAMA
    ),
    "litgpt Llama → HF: the fused qkv split into q, k, v of unequal sizes",
)
_lit(
    "lit-pythia-hf-to-lit",
    "neox",
    "litgpt.scripts.convert_hf_checkpoint:copy_weights_gpt_neox",
    lambda: _hf_to_lit("pythia-14m", _hf_neox, "copy_weights_gpt_neox"),
    "HF GPT-NeoX → litgpt: query_key_value rows interleaved per head → [Q; K; V]",
)
_lit(
    "lit-pythia-lit-to-hf",
    "neox",
    "litgpt.scripts.convert_lit_checkpoint:copy_weights_gpt_neox",
    lambda: _lit_to_hf("pythia-14m", _hf_neox, "copy_weights_gpt_neox"),
    "litgpt GPT-NeoX → HF: [Q; K; V] rows interleaved per head, lm_head → embed_out → lm_head",
)
_lit(
    "lit-phi2-hf-to-lit",
    "phi",
    "litgpt.scripts.convert_hf_checkpoint:copy_weights_phi",
    lambda: _hf_to_lit("phi-2", _hf_phi2, "copy_weights_phi", rotary_percentage=0.5),
    "HF Phi-2 (q/k/v with biases, parallel block, shared norm) → litgpt fused qkv",
)
_lit(
    "lit-phi3-hf-to-lit",
    "phi",
    "litgpt.scripts.convert_hf_checkpoint:copy_weights_phi",
    lambda: _hf_to_lit(
        "Phi-3-mini-4k-instruct",
        lambda c: _hf_llama_like(c, "phi3"),
        "copy_weights_phi",
        intermediate_size=48,
    ),
    "HF Phi-3 → litgpt: fused qkv kept, gate_up_proj cut into fc_1 and fc_2",
)
_lit(
    "lit-qwen2.5-hf-to-lit",
    "gqa",
    "litgpt.scripts.convert_hf_checkpoint:copy_weights_qwen_2_5",
    lambda: _hf_to_lit(
        "Qwen2.5-0.5B",
        lambda c: _hf_llama_like(c, "qwen2"),
        "copy_weights_qwen_2_5",
        n_query_groups=2,
        intermediate_size=48,
    ),
    "HF Qwen2 (q/k/v biases, 2 key/value heads) → litgpt fused qkv weight and bias",
)
