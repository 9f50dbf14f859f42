"""Ports between layouts: a Keras checkpoint into PyTorch, per-expert MoE into stacked experts."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.case import ExpectedMulti, Truth, declare, truth_from_pairs
from zoo.cases_hf import HEADS, HIDDEN, KV_HEADS, LAYERS, VOCAB, D, decoder_config, token_ids
from zoo.cases_vision import images
from zoo.hf import hf_class, rope_theta
from zoo.nets_keras import CONVS, KERAS_BN_EPS, KerasVgg
from zoo.nets_moe import MixtralV4
from zoo.nets_text import LMConfig, SeparateEncoder, TorchEncoder
from zoo.nets_vgg import VggLike

# --- Keras → PyTorch -----------------------------------------------------------------------


def _keras_truth() -> Truth:
    pairs: list[tuple[str, str]] = []
    transforms: dict[str, tuple[str, dict[str, Any]]] = {}
    lone_target: list[str] = []
    # VggLike.features: conv, bn, relu per layer, a max-pool after each block
    idx, counts = 0, {}
    for j, (block, _, _) in enumerate(CONVS):
        counts[block] = counts.get(block, 0) + 1
        conv, bn = f"{block}_conv{counts[block]}", f"{block}_bn{counts[block]}"
        pairs += [
            (f"{conv}.kernel", f"features.{idx}.weight"),
            (f"{conv}.bias", f"features.{idx}.bias"),
        ]
        transforms[f"{conv}.kernel"] = ("permute", {"dims": [3, 2, 0, 1]})
        for k, t in (
            ("gamma", "weight"),
            ("beta", "bias"),
            ("moving_mean", "running_mean"),
            ("moving_variance", "running_var"),
        ):
            pairs.append((f"{bn}.{k}", f"features.{idx + 1}.{t}"))
        lone_target.append(f"features.{idx + 1}.num_batches_tracked")
        last_of_block = j + 1 == len(CONVS) or CONVS[j + 1][0] != block
        idx += 4 if last_of_block else 3
    for keras, torch_name in (("fc1", "classifier.0"), ("predictions", "classifier.3")):
        pairs += [
            (f"{keras}.kernel", f"{torch_name}.weight"),
            (f"{keras}.bias", f"{torch_name}.bias"),
        ]
        transforms[f"{keras}.kernel"] = ("transpose", {"dim0": 0, "dim1": 1})
    return truth_from_pairs(pairs, transforms=transforms, unmapped_target=lone_target)


declare("keras_vgg_to_torch", KerasVgg, lambda: VggLike(bn_eps=KERAS_BN_EPS), images, _keras_truth)


# --- Mixtral: transformers 4.x per-expert layout → 5.x stacked experts ---------------------

MOE_LAYERS, EXPERTS, TOP_K, MOE_HIDDEN = 2, 4, 2, 48


def _mixtral_config() -> Any:
    return decoder_config(
        "MixtralConfig",
        MOE_LAYERS,
        MOE_HIDDEN,
        max_position_embeddings=32,
        num_local_experts=EXPERTS,
        num_experts_per_tok=TOP_K,
    )


def _hf_mixtral() -> nn.Module:
    return hf_class("MixtralForCausalLM")(_mixtral_config())


def _v4_mixtral() -> nn.Module:
    cfg = _mixtral_config()
    theta = rope_theta(cfg, 1e6)
    return MixtralV4(
        LMConfig(
            VOCAB, D, MOE_LAYERS, HEADS, KV_HEADS, MOE_HIDDEN, experts=EXPERTS, top_k=TOP_K,
            eps=cfg.rms_norm_eps, rope_theta=theta,
        )
    )  # fmt: skip


def _mixtral_truth() -> Truth:
    same = ["model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"]
    multi: list[tuple[ExpectedMulti, dict[str, Any]]] = []
    pairs: list[tuple[str, str]] = []
    for i in range(MOE_LAYERS):
        p = f"model.layers.{i}"
        same += [f"{p}.self_attn.{n}_proj.weight" for n in "qkvo"]
        same += [f"{p}.input_layernorm.weight", f"{p}.post_attention_layernorm.weight"]
        pairs.append((f"{p}.block_sparse_moe.gate.weight", f"{p}.mlp.gate.weight"))
        ex = f"{p}.block_sparse_moe.experts"
        gate_up = tuple(f"{ex}.{e}.{w}.weight" for e in range(EXPERTS) for w in ("w1", "w3"))
        down = tuple(f"{ex}.{e}.w2.weight" for e in range(EXPERTS))
        multi.append(
            (ExpectedMulti(gate_up, (f"{p}.mlp.experts.gate_up_proj",), "stack"), {"group": 2})
        )
        multi.append((ExpectedMulti(down, (f"{p}.mlp.experts.down_proj",), "stack"), {"group": 1}))
    return truth_from_pairs([(k, k) for k in same] + pairs, multi=multi)


declare("mixtral_v4_experts_to_v5_stacked", _v4_mixtral, _hf_mixtral, token_ids, _mixtral_truth)


def _mixtral_truth_reversed() -> Truth:
    fwd = _mixtral_truth()
    multi = [
        (ExpectedMulti(m.targets, m.sources, "unstack"), fwd.multi_params[m.sources])
        for m in fwd.multi
    ]
    return truth_from_pairs(((t, s) for s, t in fwd.pairs.items()), multi=multi)


declare(
    "mixtral_v5_stacked_to_v4_experts", _hf_mixtral, _v4_mixtral, token_ids, _mixtral_truth_reversed
)


# --- torch.nn.TransformerEncoder in_proj → separate q/k/v ----------------------------------


def _torch_encoder_truth() -> Truth:
    pairs = [("embed.weight", "tok_embed.weight")]
    multi: list[tuple[ExpectedMulti, dict[str, Any]]] = []
    for i in range(LAYERS):
        s, t = f"encoder.layers.{i}", f"layers.{i}"
        for p in ("weight", "bias"):
            m = ExpectedMulti(
                (f"{s}.self_attn.in_proj_{p}",),
                tuple(f"{t}.self_attn.{n}_proj.{p}" for n in "qkv"),
                "split",
            )
            multi.append((m, {"dim": 0, "sizes": [D, D, D]}))
            for a, b in (
                ("self_attn.out_proj", "self_attn.out_proj"),
                ("linear1", "ffn.fc1"),
                ("linear2", "ffn.fc2"),
                ("norm1", "norm1"),
                ("norm2", "norm2"),
            ):
                pairs.append((f"{s}.{a}.{p}", f"{t}.{b}.{p}"))
    return truth_from_pairs(pairs, multi=multi)


declare(
    "torch_encoder_in_proj_to_separate",
    lambda: TorchEncoder(VOCAB, D, LAYERS, HEADS, HIDDEN),
    lambda: SeparateEncoder(VOCAB, D, LAYERS, HEADS, HIDDEN),
    token_ids,
    _torch_encoder_truth,
)
