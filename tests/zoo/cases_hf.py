"""Cases pairing HF transformers models (built from small configs) with hand-written twins.

transformers is imported inside the builders only, so the zoo imports without it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.case import ExpectedMulti, Truth, declare, per_layer, truth_from_pairs
from zoo.hf import gpt2_fields, hf_class, hf_model, rope_theta
from zoo.nets_text import HandBert, HandGpt2, HandLlama, LMConfig, MetaLlama
from zoo.nets_vit import HandVit

VOCAB, POSITIONS, D, LAYERS, HEADS, KV_HEADS, HIDDEN = 100, 32, 32, 2, 4, 2, 64
IMAGE, PATCH, CHANNELS = 16, 4, 3
T = ("transpose", {"dim0": 0, "dim1": 1})


def token_ids() -> torch.Tensor:
    """() → a deterministic (2, 8) batch of token ids."""
    return torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(0))


def pixels() -> torch.Tensor:
    """() → a deterministic (2, 3, 16, 16) image batch."""
    return torch.randn(2, CHANNELS, IMAGE, IMAGE, generator=torch.Generator().manual_seed(0))


def _weight_bias(src: str, tgt: str, bias: bool = True) -> list[tuple[str, str]]:
    out = [(f"{src}.weight", f"{tgt}.weight")]
    if bias:
        out.append((f"{src}.bias", f"{tgt}.bias"))
    return out


# --- GPT-2: HF Conv1D (weights stored (in, out)) against Linear ----------------------------


def hf_gpt2() -> nn.Module:
    """() → HF GPT2LMHeadModel from the small config."""
    fields = gpt2_fields(layers=LAYERS, d=D, heads=HEADS, vocab=VOCAB, positions=POSITIONS)
    return hf_model("GPT2LMHeadModel", "GPT2Config", **fields)


def gpt2_truth(fused: bool) -> Truth:
    """Fused qkv or separate → truth from HF GPT-2 to :class:`HandGpt2`."""
    pairs = [
        ("transformer.wte.weight", "tok_emb.weight"),
        ("transformer.wpe.weight", "pos_emb.weight"),
        ("lm_head.weight", "head.weight"),
        *_weight_bias("transformer.ln_f", "norm_final"),
    ]
    transforms: dict[str, tuple[str, dict[str, Any]]] = {}
    multi: list[tuple[ExpectedMulti, dict[str, Any]]] = []
    for i in range(LAYERS):
        s, t = f"transformer.h.{i}", f"blocks.{i}"
        pairs += _weight_bias(f"{s}.ln_1", f"{t}.norm_attn")
        pairs += _weight_bias(f"{s}.ln_2", f"{t}.norm_mlp")
        for hf, mine in (
            ("attn.c_proj", "attention.out"),
            ("mlp.c_fc", "mlp.up"),
            ("mlp.c_proj", "mlp.down"),
        ):
            pairs += _weight_bias(f"{s}.{hf}", f"{t}.{mine}")
            transforms[f"{s}.{hf}.weight"] = T
        if fused:
            pairs += _weight_bias(f"{s}.attn.c_attn", f"{t}.attention.qkv")
            transforms[f"{s}.attn.c_attn.weight"] = T
        else:
            for p, dim, tr in (("weight", 1, True), ("bias", 0, False)):
                m = ExpectedMulti(
                    (f"{s}.attn.c_attn.{p}",),
                    tuple(f"{t}.attention.{n}.{p}" for n in ("query", "key", "value")),
                    "split",
                )
                multi.append((m, {"dim": dim, "sizes": [D, D, D], "transpose": tr}))
    return truth_from_pairs(pairs, transforms=transforms, multi=multi)


declare(
    "gpt2_hf_to_linear_fused",
    hf_gpt2,
    lambda: HandGpt2(VOCAB, POSITIONS, D, LAYERS, HEADS, fused=True),
    token_ids,
    lambda: gpt2_truth(fused=True),
)
declare(
    "gpt2_hf_to_linear_split",
    hf_gpt2,
    lambda: HandGpt2(VOCAB, POSITIONS, D, LAYERS, HEADS, fused=False),
    token_ids,
    lambda: gpt2_truth(fused=False),
)


# --- BERT: HF BertModel against fairseq-like names -----------------------------------------


def _hf_bert() -> nn.Module:
    return hf_model(
        "BertModel",
        "BertConfig",
        num_hidden_layers=LAYERS,
        hidden_size=D,
        num_attention_heads=HEADS,
        intermediate_size=HIDDEN,
        vocab_size=VOCAB,
        max_position_embeddings=POSITIONS,
    )


def _bert_truth() -> Truth:
    pairs = [
        ("embeddings.word_embeddings.weight", "embeddings.word.weight"),
        ("embeddings.position_embeddings.weight", "embeddings.position.weight"),
        ("embeddings.token_type_embeddings.weight", "embeddings.token_type.weight"),
        *_weight_bias("embeddings.LayerNorm", "embeddings.norm"),
        *_weight_bias("pooler.dense", "pooler.proj"),
    ]
    modules = {
        "attention.self.query": "self_attn.q_proj",
        "attention.self.key": "self_attn.k_proj",
        "attention.self.value": "self_attn.v_proj",
        "attention.output.dense": "self_attn.out_proj",
        "attention.output.LayerNorm": "norm1",
        "intermediate.dense": "ffn.fc1",
        "output.dense": "ffn.fc2",
        "output.LayerNorm": "norm2",
    }
    for s, t in per_layer(LAYERS, "encoder.layer.{i}", "encoder.layers.{i}", modules):
        pairs += _weight_bias(s, t)
    return truth_from_pairs(pairs)


declare(
    "bert_hf_to_fairseq_names",
    _hf_bert,
    lambda: HandBert(VOCAB, POSITIONS, D, LAYERS, HEADS, HIDDEN),
    token_ids,
    _bert_truth,
)


# --- Llama: HF LlamaForCausalLM against litgpt-like names ----------------------------------


def decoder_config(config: str, layers: int, hidden: int, **fields: Any) -> Any:
    """HF config class name + layers and MLP width (+ other fields) → the config at the zoo's
    width, heads, key/value heads and vocabulary."""
    return hf_class(config)(
        num_hidden_layers=layers, hidden_size=D, num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS, intermediate_size=hidden, vocab_size=VOCAB, **fields,
    )  # fmt: skip


def _llama_config(tied: bool) -> Any:
    return decoder_config(
        "LlamaConfig", LAYERS, HIDDEN, max_position_embeddings=POSITIONS, tie_word_embeddings=tied
    )


def _hf_llama(tied: bool) -> nn.Module:
    return hf_class("LlamaForCausalLM")(_llama_config(tied))


def _hand_llama(tied: bool, fused: bool) -> nn.Module:
    cfg = _llama_config(tied)
    return HandLlama(_llama_sizes(cfg), fused=fused, tied=tied)


def _llama_sizes(cfg: Any) -> LMConfig:
    """HF Llama config → the same sizes for the hand-written Llamas."""
    theta = rope_theta(cfg, 10000.0)
    return LMConfig(
        VOCAB, D, LAYERS, HEADS, KV_HEADS, HIDDEN, eps=cfg.rms_norm_eps, rope_theta=theta
    )


def _llama_pairs(fused: bool) -> tuple[list[tuple[str, str]], list[tuple[ExpectedMulti, dict]]]:
    pairs = [
        ("model.embed_tokens.weight", "transformer.wte.weight"),
        ("model.norm.weight", "transformer.ln_f.weight"),
        ("lm_head.weight", "lm_head.weight"),
    ]
    multi: list[tuple[ExpectedMulti, dict[str, Any]]] = []
    for i in range(LAYERS):
        s, t = f"model.layers.{i}", f"transformer.h.{i}"
        names = [
            ("self_attn.o_proj", "attn.proj"),
            ("mlp.gate_proj", "mlp.fc_1"),
            ("mlp.up_proj", "mlp.fc_2"),
            ("mlp.down_proj", "mlp.proj"),
            ("input_layernorm", "norm_1"),
            ("post_attention_layernorm", "norm_2"),
        ]
        if fused:
            m = ExpectedMulti(
                tuple(f"{s}.self_attn.{p}_proj.weight" for p in "qkv"),
                (f"{t}.attn.qkv.weight",),
                "merge",
            )
            multi.append((m, {"dim": 0}))
        else:
            names += [
                ("self_attn.q_proj", "attn.query"),
                ("self_attn.k_proj", "attn.key"),
                ("self_attn.v_proj", "attn.value"),
            ]
        pairs += [(f"{s}.{hf}.weight", f"{t}.{mine}.weight") for hf, mine in names]
    return pairs, multi


def _llama_truth_hand_to_hf() -> Truth:
    pairs, _ = _llama_pairs(fused=False)
    return truth_from_pairs((t, s) for s, t in pairs)


def _llama_truth_fused() -> Truth:
    pairs, multi = _llama_pairs(fused=True)
    return truth_from_pairs(pairs, multi=multi)


declare(
    "llama_litgpt_names_to_hf",
    lambda: _hand_llama(tied=True, fused=False),
    lambda: _hf_llama(tied=True),
    token_ids,
    _llama_truth_hand_to_hf,
)
declare(
    "llama_hf_to_fused_qkv",
    lambda: _hf_llama(tied=False),
    lambda: _hand_llama(tied=False, fused=True),
    token_ids,
    _llama_truth_fused,
)


def _meta_llama() -> nn.Module:
    return MetaLlama(_llama_sizes(_llama_config(tied=False)))


def _llama_meta_truth() -> Truth:
    pairs = [
        ("model.embed_tokens.weight", "tok_embeddings.weight"),
        ("model.norm.weight", "norm.weight"),
        ("lm_head.weight", "output.weight"),
    ]
    modules = {
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.up_proj": "feed_forward.w3",
        "mlp.down_proj": "feed_forward.w2",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for s, t in per_layer(LAYERS, "model.layers.{i}", "layers.{i}", modules):
        pairs.append((f"{s}.weight", f"{t}.weight"))
    return truth_from_pairs(pairs)


declare(
    "llama_hf_to_meta_names",
    lambda: _hf_llama(tied=False),
    _meta_llama,
    token_ids,
    _llama_meta_truth,
)


# --- ViT: HF ViTModel against timm-like names ----------------------------------------------


def hf_vit() -> nn.Module:
    """() → HF ViTModel (no pooler) from the small config."""
    cfg = hf_class("ViTConfig")(
        num_hidden_layers=LAYERS,
        hidden_size=D,
        num_attention_heads=HEADS,
        intermediate_size=HIDDEN,
        image_size=IMAGE,
        patch_size=PATCH,
        num_channels=CHANNELS,
    )
    return hf_class("ViTModel")(cfg, add_pooling_layer=False)


def vit_truth(fused: bool) -> Truth:
    """Fused qkv or separate → truth from HF ViTModel to :class:`HandVit`."""
    pairs = [
        ("embeddings.cls_token", "cls_token"),
        ("embeddings.position_embeddings", "pos_embed"),
        *_weight_bias("embeddings.patch_embeddings.projection", "patch_embed.proj"),
        *_weight_bias("layernorm", "norm"),
    ]
    multi: list[tuple[ExpectedMulti, dict[str, Any]]] = []
    for i in range(LAYERS):
        s, t = f"layers.{i}", f"blocks.{i}"
        names = [
            ("attention.o_proj", "attn.proj"),
            ("layernorm_before", "norm1"),
            ("layernorm_after", "norm2"),
            ("mlp.fc1", "mlp.fc1"),
            ("mlp.fc2", "mlp.fc2"),
        ]
        if fused:
            for p in ("weight", "bias"):
                m = ExpectedMulti(
                    tuple(f"{s}.attention.{n}_proj.{p}" for n in "qkv"),
                    (f"{t}.attn.qkv.{p}",),
                    "merge",
                )
                multi.append((m, {"dim": 0}))
        else:
            names += [
                ("attention.q_proj", "attn.query"),
                ("attention.k_proj", "attn.key"),
                ("attention.v_proj", "attn.value"),
            ]
        for hf, mine in names:
            pairs += _weight_bias(f"{s}.{hf}", f"{t}.{mine}")
    return truth_from_pairs(pairs, multi=multi)


declare(
    "vit_hf_to_timm_names",
    hf_vit,
    lambda: HandVit(IMAGE, PATCH, CHANNELS, D, LAYERS, HEADS, HIDDEN),
    pixels,
    lambda: vit_truth(fused=False),
)
declare(
    "vit_hf_to_timm_fused_qkv",
    hf_vit,
    lambda: HandVit(IMAGE, PATCH, CHANNELS, D, LAYERS, HEADS, HIDDEN, fused=True),
    pixels,
    lambda: vit_truth(fused=True),
)
