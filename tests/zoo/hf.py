"""Hugging Face models for the zoo, built from small configs: nothing is downloaded.

transformers is imported inside these functions only, so the zoo imports without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from zoo.nets_text import LMConfig


def hf_class(name: str) -> Any:
    """``"LlamaConfig"`` (top level of transformers) or ``"module.path:Name"`` → the class."""
    module, _, attr = name.rpartition(":")
    return getattr(importlib.import_module(module or "transformers"), attr)


def hf_model(model: str, config: str, /, **fields: Any) -> nn.Module:
    """Model and config class names plus config fields → a freshly initialised model."""
    return hf_class(model)(hf_class(config)(**fields))


def rope_theta(config: Any, default: float) -> float:
    """HF config → its RoPE base (``rope_parameters`` in transformers 5, else ``default``)."""
    return float((getattr(config, "rope_parameters", None) or {}).get("rope_theta", default))


def lm_fields(c: LMConfig, /, **extra: Any) -> dict[str, Any]:
    """Sizes of a decoder-only LM → the config fields the HF Llama family shares (``extra`` wins).

    Untied head, no KV cache and eager attention: outputs comparable with a re-implementation.
    """
    return {
        "vocab_size": c.vocab,
        "hidden_size": c.dim,
        "intermediate_size": c.hidden,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads,
        "rms_norm_eps": c.eps,
        "tie_word_embeddings": False,
        "use_cache": False,
        "attn_implementation": "eager",
        **extra,
    }


def gpt2_fields(
    *, layers: int, d: int, heads: int, vocab: int, positions: int, **extra: Any
) -> dict[str, Any]:
    """Sizes of a GPT-2 → its config fields, token 0 as begin and end (``extra`` wins)."""
    return {
        "n_layer": layers,
        "n_embd": d,
        "n_head": heads,
        "vocab_size": vocab,
        "n_positions": positions,
        "bos_token_id": 0,
        "eos_token_id": 0,
        **extra,
    }


TINY_LLAMA = {
    "vocab_size": 64,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 32,
}
"""Config fields of the smallest Llama the file-format tests save (2 key/value heads)."""
