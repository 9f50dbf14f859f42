"""Cases whose truth is litgpt's checkpoint converters (``litgpt.scripts.convert_*_checkpoint``).

litgpt stores one fused ``attn.qkv`` per block: HF q/k/v are concatenated into it (grouped
query attention: unequal parts), a GPT-NeoX ``query_key_value`` whose rows are interleaved per
head is reassembled into it, Phi-3's gate/up is cut in two. The reverse converters split it
again. Each litgpt configuration is a named one of litgpt's, shrunk.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from bench.external.case import (
    Built,
    from_module,
    function,
    hf_model,
    randomize_,
    register_converted,
    seeded,
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


def _rope_rms(cfg: Any) -> dict[str, Any]:
    """litgpt config → the fields of a Llama-like transformers config beyond the sizes."""
    return dict(
        num_key_value_heads=cfg.n_query_groups,
        rms_norm_eps=cfg.norm_eps,
        rope_theta=float(cfg.rope_base),
    )


_HF: dict[str, tuple[str, str, Callable[[Any], dict[str, Any]]]] = {
    # family: transformers class, its config, litgpt config → the config's other fields
    "llama": ("LlamaForCausalLM", "LlamaConfig", _rope_rms),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", _rope_rms),
    "phi3": (
        "Phi3ForCausalLM",
        "Phi3Config",
        lambda c: dict(
            **_rope_rms(c),
            original_max_position_embeddings=c.block_size,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
    "neox": (
        "GPTNeoXForCausalLM",
        "GPTNeoXConfig",
        lambda c: dict(
            rotary_pct=c.rotary_percentage,
            layer_norm_eps=c.norm_eps,
            use_parallel_residual=c.parallel_residual,
            hidden_act="gelu",
        ),
    ),
    "phi2": (
        "PhiForCausalLM",
        "PhiConfig",
        lambda c: dict(
            partial_rotary_factor=c.rotary_percentage,
            layer_norm_eps=c.norm_eps,
            hidden_act="gelu_new",
        ),
    ),
}


def _hf_like(cfg: Any, family: str) -> tuple[Any, Any]:
    """litgpt config + transformers family → (HF model class, HF config) with the same function."""
    cls, config, fields = _HF[family]
    return hf_model(
        cls,
        config,
        vocab_size=VOCAB,
        hidden_size=cfg.n_embd,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.n_layer,
        num_attention_heads=cfg.n_head,
        max_position_embeddings=cfg.block_size,
        tie_word_embeddings=False,
        **fields(cfg),
    )


def _hf_to_lit(lit_name: str, family: str, kw: dict[str, Any], convert: str) -> Built:
    cfg = _lit_config(lit_name, **kw)
    cls, hf_cfg = _hf_like(cfg, family)
    src = randomize_(seeded(lambda: cls(hf_cfg))())
    fn = function(convert)

    def converter(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if family == "neox":
            # litgpt reads the hub layout (``embed_out``); transformers' own saver writes it
            from transformers.core_model_loading import revert_weight_conversion

            sd = revert_weight_conversion(src, sd)
            fn(cfg, out, sd)
        else:
            fn(cfg, {}, out, sd)
        return out

    return from_module(src, _lit_model(cfg), converter, token_ids(VOCAB))


def _lit_to_hf(lit_name: str, family: str, kw: dict[str, Any], convert: str) -> Built:
    cfg = _lit_config(lit_name, **kw)
    cls, hf_cfg = _hf_like(cfg, family)
    src = randomize_(_lit_model(cfg)())
    fn = function(convert)
    load = hf_loader(cls, hf_cfg)

    def converter(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        fn(cfg, out, sd)
        # litgpt writes the hub layout; transformers' loader reads it into today's modules
        return load(out)

    return from_module(src, seeded(lambda: cls(hf_cfg)), converter, token_ids(VOCAB))


_FROM_HF = "litgpt.scripts.convert_hf_checkpoint"
_TO_HF = "litgpt.scripts.convert_lit_checkpoint"
_LLAMA = dict(n_query_groups=2, intermediate_size=48)
register_converted(
    (
        (
            "lit-llama-gqa-hf-to-lit",
            "gqa",
            f"{_FROM_HF}:copy_weights_hf_llama",
            functools.partial(_hf_to_lit, "Llama-2-7b-hf", "llama", _LLAMA),
            "HF Llama (2 key/value heads) → litgpt: q, k, v concatenated into one qkv (unequal parts)",
        ),
        (
            "lit-llama-gqa-lit-to-hf",
            "gqa",
            f"{_TO_HF}:copy_weights_llama",
            functools.partial(_lit_to_hf, "Llama-2-7b-hf", "llama", _LLAMA),
            "litgpt Llama → HF: the fused qkv split into q, k, v of unequal sizes",
        ),
        (
            "lit-pythia-hf-to-lit",
            "neox",
            f"{_FROM_HF}:copy_weights_gpt_neox",
            functools.partial(_hf_to_lit, "pythia-14m", "neox", {}),
            "HF GPT-NeoX → litgpt: query_key_value rows interleaved per head → [Q; K; V]",
        ),
        (
            "lit-pythia-lit-to-hf",
            "neox",
            f"{_TO_HF}:copy_weights_gpt_neox",
            functools.partial(_lit_to_hf, "pythia-14m", "neox", {}),
            "litgpt GPT-NeoX → HF: [Q; K; V] rows interleaved per head, lm_head → embed_out → lm_head",
        ),
        (
            "lit-phi2-hf-to-lit",
            "phi",
            f"{_FROM_HF}:copy_weights_phi",
            functools.partial(_hf_to_lit, "phi-2", "phi2", dict(rotary_percentage=0.5)),
            "HF Phi-2 (q/k/v with biases, parallel block, shared norm) → litgpt fused qkv",
        ),
        (
            "lit-phi3-hf-to-lit",
            "phi",
            f"{_FROM_HF}:copy_weights_phi",
            functools.partial(
                _hf_to_lit, "Phi-3-mini-4k-instruct", "phi3", dict(intermediate_size=48)
            ),
            "HF Phi-3 → litgpt: fused qkv kept, gate_up_proj cut into fc_1 and fc_2",
        ),
        (
            "lit-qwen2.5-hf-to-lit",
            "gqa",
            f"{_FROM_HF}:copy_weights_qwen_2_5",
            functools.partial(_hf_to_lit, "Qwen2.5-0.5B", "qwen2", _LLAMA),
            "HF Qwen2 (q/k/v biases, 2 key/value heads) → litgpt fused qkv weight and bias",
        ),
    ),
    REQ,
)
