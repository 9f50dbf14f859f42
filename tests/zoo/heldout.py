"""Held-out accuracy set: real architecture pairs registered with ``split="heldout"``.

The mapping engine is measured on them apart from the tuning cases, on layouts it was not
calibrated on: torchvision vs timm/Keras CNNs and ViTs, HF models vs
re-implementations with other names (Qwen2, DistilBERT, Whisper), tensor transforms (reshape,
fused and split q/k/v, transposed Flax kernels, stacked MoE experts) and traps (auxiliary head,
resized last stage and classifier, BatchNorm → LayerNorm, MHA → GQA, a block inserted
mid-stack). Every ground truth is proven by equal outputs in ``tests/unit/test_zoo_heldout.py``.

Usage::

    from zoo import cases, get_case
    heldout = cases(split="heldout")
    case = get_case("heldout_regnety_tv_to_timm")
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from weightmapper.errors import MappingError
from zoo import heldout_cnn as cnn
from zoo import heldout_text as text
from zoo import heldout_vit as vit
from zoo.case import ExpectedMulti, Truth, declare, per_layer, truth_from_pairs
from zoo.hf import hf_model, lm_fields

Transform = tuple[str, dict[str, Any]]


def _image(size: int) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1234))

    return make


def _ids(vocab: int = 100, length: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (2, length), generator=torch.Generator().manual_seed(1234))


def _own_keys(model: nn.Module, module: str) -> list[str]:
    """Model + module name → the full state-dict keys of that module (recursively)."""
    sub = model.get_submodule(module)
    return [f"{module}.{k}" if module else k for k in sub.state_dict()]


def layer_truth(
    src: nn.Module,
    tgt: nn.Module,
    layer_pairs: Iterable[tuple[str, str]],
    *,
    key_pairs: Iterable[tuple[str, str]] = (),
    transforms: dict[str, Transform] | None = None,
    multi: Sequence[tuple[ExpectedMulti, dict[str, Any]]] = (),
    complete: bool,
) -> Truth:
    """Corresponding modules (and single keys) of two models → the Truth.

    A module pair whose tensors all keep their shape pairs key by key (same suffix); one whose
    shapes differ has no partner at all (every key of both stays unmapped). Keys covered by no
    pair are partnerless; ``complete`` asserts there are none (a one-to-one case).
    """
    s_sd, t_sd = src.state_dict(), tgt.state_dict()
    pairs: dict[str, str] = {}
    for s_mod, t_mod in layer_pairs:
        s_keys, t_keys = _own_keys(src, s_mod), _own_keys(tgt, t_mod)
        suffix = [k[len(s_mod) + 1 :] for k in s_keys]
        t_suffix = [k[len(t_mod) + 1 :] for k in t_keys]
        if sorted(suffix) != sorted(t_suffix):
            raise MappingError(f"{s_mod} and {t_mod} hold different tensors: {suffix} {t_suffix}")
        same = all(
            s_sd[s].shape == t_sd[f"{t_mod}.{x}"].shape for s, x in zip(s_keys, suffix, strict=True)
        )
        if same:
            pairs.update({s: f"{t_mod}.{x}" for s, x in zip(s_keys, suffix, strict=True)})
    pairs.update(dict(key_pairs))
    multi_s = {s for m, _ in multi for s in m.sources}
    multi_t = {t for m, _ in multi for t in m.targets}
    lone_s = set(s_sd) - set(pairs) - multi_s
    lone_t = set(t_sd) - set(pairs.values()) - multi_t
    if complete and (lone_s or lone_t):
        raise MappingError(f"one-to-one truth leaves {sorted(lone_s)} and {sorted(lone_t)}")
    return truth_from_pairs(
        pairs.items(),
        transforms=transforms,
        multi=multi,
        unmapped_source=lone_s,
        unmapped_target=lone_t,
    )


# --- probing single layers: proves layer pairs where the whole networks differ ------------------


def _probe_input(module: nn.Module, g: torch.Generator) -> torch.Tensor:
    if isinstance(module, nn.Conv2d):
        return torch.randn(2, module.in_channels, 6, 6, generator=g)
    if isinstance(module, nn.BatchNorm2d):
        return torch.randn(2, module.num_features, 3, 3, generator=g)
    if isinstance(module, cnn.LayerNorm2d):
        return torch.randn(2, module.normalized_shape[0], 3, 3, generator=g)
    if isinstance(module, nn.LayerNorm):
        return torch.randn(2, 5, *module.normalized_shape, generator=g)
    if isinstance(module, nn.Linear):
        return torch.randn(2, module.in_features, generator=g)
    if isinstance(module, text.RMSNorm) or type(module).__name__.endswith("RMSNorm"):
        return torch.randn(2, 5, module.weight.shape[0], generator=g)
    if isinstance(module, nn.Embedding):
        return torch.randint(0, module.num_embeddings, (2, 5), generator=g)
    if isinstance(module, (vit.TvEncoderBlock, vit.TimmBlock)):
        return torch.randn(2, vit.VIT_TOKENS, vit.VIT_DIM, generator=g)
    raise MappingError(f"no probe input for a {type(module).__name__}")


def probe(model: nn.Module, modules: Sequence[str]) -> torch.Tensor:
    """Model + module names → each module applied to a fixed random input, flattened and joined.

    The i-th module gets the i-th draw of one seeded generator, so corresponding modules of two
    models see the same input and agree exactly when their weights were moved correctly.
    """
    g = torch.Generator().manual_seed(99)
    outs = []
    for name in modules:
        m = model.get_submodule(name)
        outs.append(m(_probe_input(m, g)).flatten())
    return torch.cat(outs)


def _probe_pairs(
    truth: Callable[[], Truth], layer_pairs: Callable[[], list[tuple[str, str]]]
) -> tuple[Callable[..., torch.Tensor], Callable[..., torch.Tensor]]:
    """Features comparing every mapped layer of the truth, probed one layer at a time."""

    def mapped() -> list[tuple[str, str]]:
        t = truth()
        return [(s, m) for s, m in layer_pairs() if f"{s}.weight" in t.pairs]

    return (
        lambda model, _x: probe(model, [s for s, _ in mapped()]),
        lambda model, _x: probe(model, [t for _, t in mapped()]),
    )


# --- CNNs: torchvision vs timm ------------------------------------------------------------------


def _mbv2_truth() -> Truth:
    src, tgt = cnn.TvMobileNetV2(), cnn.TimmMobileNetV2()
    return layer_truth(src, tgt, cnn.mbv2_layer_pairs(cnn.MBV2_STAGES), complete=True)


declare(
    "heldout_mobilenetv2_tv_to_timm",
    cnn.TvMobileNetV2,
    cnn.TimmMobileNetV2,
    _image(32),
    _mbv2_truth,
)


def _regnet_truth() -> Truth:
    src, tgt = cnn.TvRegNet(), cnn.TimmRegNet()
    return layer_truth(src, tgt, cnn.regnet_layer_pairs(), complete=True)


declare("heldout_regnety_tv_to_timm", cnn.TvRegNet, cnn.TimmRegNet, _image(32), _regnet_truth)


def _convnext_truth() -> Truth:
    src, tgt = cnn.TvConvNeXt(), cnn.TimmConvNeXt()
    scales, transforms = [], {}
    for s, depth in enumerate(cnn.CONVNEXT_DEPTHS):
        for j in range(depth):
            key = f"features.{2 * s + 1}.{j}.layer_scale"
            scales.append((key, f"stages.{s}.blocks.{j}.gamma"))
            transforms[key] = ("reshape", {"shape": [cnn.CONVNEXT_DIMS[s]]})
    return layer_truth(
        src,
        tgt,
        cnn.convnext_layer_pairs(),
        key_pairs=scales,
        transforms=transforms,
        complete=True,
    )


declare(
    "heldout_convnext_tv_to_timm", cnn.TvConvNeXt, cnn.TimmConvNeXt, _image(32), _convnext_truth
)


def _densenet_truth() -> Truth:
    src, tgt = cnn.TvDenseNet(), cnn.KerasDenseNet()
    return layer_truth(src, tgt, cnn.densenet_layer_pairs(), complete=True)


declare(
    "heldout_densenet_tv_to_keras_names",
    cnn.TvDenseNet,
    cnn.KerasDenseNet,
    _image(32),
    _densenet_truth,
)


# --- ViT: torchvision vs timm -------------------------------------------------------------------


def _vit_truth(src_depth: int, tgt_index: Sequence[int], ratios: Sequence[int]) -> Truth:
    pairs = vit.vit_outer_pairs()
    for i, j in enumerate(tgt_index):
        pairs += vit.vit_block_pairs(i, j)
    return layer_truth(
        vit.TvViT(src_depth), vit.TimmViT(ratios), [], key_pairs=pairs, complete=False
    )


def _vit_tv_truth() -> Truth:
    t = _vit_truth(3, (0, 1, 2), (4, 4, 4))
    if t.unmapped_source or t.unmapped_target:
        raise MappingError("torchvision ViT → timm ViT truth is not one-to-one")
    return t


declare(
    "heldout_vit_tv_to_timm",
    lambda: vit.TvViT(3),
    lambda: vit.TimmViT((4, 4, 4)),
    _image(vit.VIT_IMAGE),
    _vit_tv_truth,
)

VIT_INSERTED_RATIOS = (4, 4, 2, 4, 4)


def _vit_inserted_truth() -> Truth:
    return _vit_truth(4, (0, 1, 3, 4), VIT_INSERTED_RATIOS)


def _vit_inserted_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Either ViT + image → embeddings, each mapped block on the same tokens, final norm, head."""
    if isinstance(model, vit.TvViT):
        tokens = model.embed(x) + model.encoder.pos_embedding
        blocks = list(model.encoder.layers)
        norm, head = model.encoder.ln, model.heads.head
    else:
        tokens = model.embed(x) + model.pos_embed
        blocks = [model.blocks[i] for i in (0, 1, 3, 4)]
        norm, head = model.norm, model.head
    outs = [tokens] + [b(tokens) for b in blocks] + [norm(tokens), head(tokens[:, 0])]
    return torch.cat([o.flatten() for o in outs])


declare(
    "heldout_trap_vit_block_inserted",
    lambda: vit.TvViT(4),
    lambda: vit.TimmViT(VIT_INSERTED_RATIOS),
    _image(vit.VIT_IMAGE),
    _vit_inserted_truth,
    shared_features=(_vit_inserted_features, _vit_inserted_features),
)


# --- Inception: torchvision (with aux head) vs TF-slim names (no aux, conv logits) -----------------


def _inception_truth() -> Truth:
    n = 10
    return layer_truth(
        cnn.TvInception(n),
        cnn.SlimInception(n),
        cnn.inception_layer_pairs(),
        key_pairs=[
            ("fc.weight", "Logits.Conv2d_1c_1x1.weight"),
            ("fc.bias", "Logits.Conv2d_1c_1x1.bias"),
        ],
        transforms={"fc.weight": ("reshape", {"shape": [n, cnn.INC_OUT, 1, 1]})},
        complete=False,
    )


declare(
    "heldout_trap_inception_aux_to_slim",
    cnn.TvInception,
    cnn.SlimInception,
    _image(24),
    _inception_truth,
)


# --- MobileNetV2 traps --------------------------------------------------------------------------

MBV2_WIDE_STAGES = (*cnn.MBV2_STAGES[:-1], (6, 20, 2, 2))


def _mbv2_wide_target() -> nn.Module:
    return cnn.TimmMobileNetV2(MBV2_WIDE_STAGES, num_classes=7)


@functools.cache
def _mbv2_wide_truth() -> Truth:
    return layer_truth(
        cnn.TvMobileNetV2(),
        _mbv2_wide_target(),
        cnn.mbv2_layer_pairs(cnn.MBV2_STAGES),
        complete=False,
    )


declare(
    "heldout_trap_mbv2_classes_and_last_width",
    cnn.TvMobileNetV2,
    _mbv2_wide_target,
    _image(32),
    _mbv2_wide_truth,
    shared_features=_probe_pairs(_mbv2_wide_truth, lambda: cnn.mbv2_layer_pairs(cnn.MBV2_STAGES)),
)


def _mbv2_ln_target() -> nn.Module:
    return cnn.TimmMobileNetV2(norm=lambda c: cnn.LayerNorm2d(c, eps=1e-6))


@functools.cache
def _mbv2_split_pairs() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(conv/linear module pairs, norm module pairs) of the BatchNorm → LayerNorm case."""
    tgt = _mbv2_ln_target()
    convs, norms = [], []
    for s, t in cnn.mbv2_layer_pairs(cnn.MBV2_STAGES):
        is_norm = isinstance(tgt.get_submodule(t), cnn.LayerNorm2d)
        (norms if is_norm else convs).append((s, t))
    return convs, norms


def _affine(model: nn.Module, modules: Sequence[str]) -> torch.Tensor:
    """Model + norm module names → each norm's affine part (x·weight + bias) on a fixed input."""
    g = torch.Generator().manual_seed(7)
    outs = []
    for name in modules:
        m = model.get_submodule(name)
        x = torch.randn(2, m.weight.shape[0], 3, 3, generator=g)
        outs.append((x * m.weight[:, None, None] + m.bias[:, None, None]).flatten())
    return torch.cat(outs)


@functools.cache
def _mbv2_ln_truth() -> Truth:
    convs, norms = _mbv2_split_pairs()
    affine = [(f"{s}.{p}", f"{t}.{p}") for s, t in norms for p in ("weight", "bias")]
    return layer_truth(
        cnn.TvMobileNetV2(), _mbv2_ln_target(), convs, key_pairs=affine, complete=False
    )


def _mbv2_ln_features(side: int) -> Callable[[nn.Module, Any], torch.Tensor]:
    def features(model: nn.Module, _x: Any) -> torch.Tensor:
        convs, norms = _mbv2_split_pairs()
        return torch.cat(
            [probe(model, [p[side] for p in convs]), _affine(model, [p[side] for p in norms])]
        )

    return features


declare(
    "heldout_trap_mbv2_bn_to_layernorm",
    cnn.TvMobileNetV2,
    _mbv2_ln_target,
    _image(32),
    _mbv2_ln_truth,
    shared_features=(_mbv2_ln_features(0), _mbv2_ln_features(1)),
)


# --- HF models vs re-implementations ------------------------------------------------------------

QWEN_LM = text.LMConfig(qkv_bias=True)


def _qwen2() -> nn.Module:
    return hf_model("Qwen2ForCausalLM", "Qwen2Config", **lm_fields(QWEN_LM))


def _decoder_pairs(layers: int, *, bias: bool, moe: bool) -> list[tuple[str, str]]:
    """HF Llama-family keys ↔ Meta-reference keys (HF first), one-to-one part."""
    pairs = [("model.embed_tokens.weight", "tok_embeddings.weight")]
    for i in range(layers):
        hf, me = f"model.layers.{i}", f"layers.{i}"
        for a, b in (("q", "wq"), ("k", "wk"), ("v", "wv")):
            pairs.append((f"{hf}.self_attn.{a}_proj.weight", f"{me}.attention.{b}.weight"))
            if bias:
                pairs.append((f"{hf}.self_attn.{a}_proj.bias", f"{me}.attention.{b}.bias"))
        pairs += [
            (f"{hf}.self_attn.o_proj.weight", f"{me}.attention.wo.weight"),
            (f"{hf}.input_layernorm.weight", f"{me}.attention_norm.weight"),
            (f"{hf}.post_attention_layernorm.weight", f"{me}.ffn_norm.weight"),
        ]
        if moe:
            pairs += [
                (f"{hf}.mlp.gate.weight", f"{me}.feed_forward.gate.weight"),
                (f"{hf}.mlp.experts.down_proj", f"{me}.feed_forward.experts.w2"),
            ]
        else:
            pairs += [
                (f"{hf}.mlp.gate_proj.weight", f"{me}.feed_forward.w1.weight"),
                (f"{hf}.mlp.up_proj.weight", f"{me}.feed_forward.w3.weight"),
                (f"{hf}.mlp.down_proj.weight", f"{me}.feed_forward.w2.weight"),
            ]
    pairs += [("model.norm.weight", "norm.weight"), ("lm_head.weight", "output.weight")]
    return pairs


def _qwen2_truth() -> Truth:
    pairs = _decoder_pairs(QWEN_LM.layers, bias=True, moe=False)
    return layer_truth(_qwen2(), text.MetaStyleLM(QWEN_LM), [], key_pairs=pairs, complete=True)


declare(
    "heldout_qwen2_hf_to_meta_names",
    _qwen2,
    lambda: text.MetaStyleLM(QWEN_LM),
    lambda: _ids(QWEN_LM.vocab),
    _qwen2_truth,
)

MIXTRAL_LM = text.LMConfig(hidden=48, experts=4, top_k=2, eps=1e-5, rope_theta=1e6)


def _mixtral() -> nn.Module:
    c = MIXTRAL_LM
    fields = lm_fields(c, num_local_experts=c.experts, num_experts_per_tok=c.top_k)
    return hf_model("MixtralForCausalLM", "MixtralConfig", **fields)


def _mixtral_truth() -> Truth:
    pairs = [(b, a) for a, b in _decoder_pairs(MIXTRAL_LM.layers, bias=False, moe=True)]
    multi = []
    for i in range(MIXTRAL_LM.layers):
        e = f"layers.{i}.feed_forward.experts"
        m = ExpectedMulti(
            (f"{e}.w1", f"{e}.w3"), (f"model.layers.{i}.mlp.experts.gate_up_proj",), "merge"
        )
        multi.append((m, {"dim": 1}))
    return layer_truth(
        text.MetaStyleLM(MIXTRAL_LM), _mixtral(), [], key_pairs=pairs, multi=multi, complete=True
    )


declare(
    "heldout_mixtral_stacked_experts_to_hf",
    lambda: text.MetaStyleLM(MIXTRAL_LM),
    _mixtral,
    lambda: _ids(MIXTRAL_LM.vocab),
    _mixtral_truth,
)

BERT = text.BertConfig()


def _distilbert() -> nn.Module:
    return hf_model(
        "DistilBertModel",
        "DistilBertConfig",
        vocab_size=BERT.vocab,
        dim=BERT.dim,
        n_layers=BERT.layers,
        n_heads=BERT.heads,
        hidden_dim=BERT.hidden,
        max_position_embeddings=BERT.positions,
        attn_implementation="eager",
    )


def _distilbert_truth() -> Truth:
    pairs = [
        ("embeddings.word_embeddings.weight", "embed.tokens.weight"),
        ("embeddings.position_embeddings.weight", "embed.positions.weight"),
    ]
    layers = [("embeddings.LayerNorm", "embed.norm")]
    layers += per_layer(
        BERT.layers,
        "transformer.layer.{i}",
        "encoder.{i}",
        {
            "attention.q_lin": "attn.query",
            "attention.k_lin": "attn.key",
            "attention.v_lin": "attn.value",
            "attention.out_lin": "attn.out",
            "sa_layer_norm": "norm_attn",
            "ffn.lin1": "ff.fc_in",
            "ffn.lin2": "ff.fc_out",
            "output_layer_norm": "norm_ff",
        },
    )
    return layer_truth(_distilbert(), text.NanoBert(BERT), layers, key_pairs=pairs, complete=True)


declare(
    "heldout_distilbert_hf_to_nanobert",
    _distilbert,
    lambda: text.NanoBert(BERT),
    lambda: _ids(BERT.vocab),
    _distilbert_truth,
)

CLIP_DEPTH, CLIP_HIDDEN, CLIP_PROJ = 2, 64, 24


def _clip_vision() -> nn.Module:
    return hf_model(
        "CLIPVisionModelWithProjection",
        "CLIPVisionConfig",
        hidden_size=vit.VIT_DIM,
        intermediate_size=CLIP_HIDDEN,
        num_hidden_layers=CLIP_DEPTH,
        num_attention_heads=vit.VIT_HEADS,
        image_size=vit.VIT_IMAGE,
        patch_size=vit.VIT_PATCH,
        projection_dim=CLIP_PROJ,
        attn_implementation="eager",
    )


def _openclip_visual() -> nn.Module:
    return vit.OpenClipVisual(CLIP_DEPTH, vit.VIT_DIM, vit.VIT_HEADS, CLIP_HIDDEN, CLIP_PROJ)


def _clip_truth() -> Truth:
    v = "vision_model"
    pairs = [
        (f"{v}.embeddings.class_embedding", "class_embedding"),
        (f"{v}.embeddings.patch_embedding.weight", "conv1.weight"),
        (f"{v}.embeddings.position_embedding.weight", "positional_embedding"),
        ("visual_projection.weight", "proj"),
    ]
    layers = [(f"{v}.pre_layrnorm", "ln_pre"), (f"{v}.post_layernorm", "ln_post")]
    multi = []
    for i in range(CLIP_DEPTH):
        hf, oc = f"{v}.encoder.layers.{i}", f"transformer.resblocks.{i}"
        layers += [
            (f"{hf}.self_attn.out_proj", f"{oc}.attn.out_proj"),
            (f"{hf}.layer_norm1", f"{oc}.ln_1"),
            (f"{hf}.mlp.fc1", f"{oc}.mlp.c_fc"),
            (f"{hf}.mlp.fc2", f"{oc}.mlp.c_proj"),
            (f"{hf}.layer_norm2", f"{oc}.ln_2"),
        ]
        for p, t in (("weight", "in_proj_weight"), ("bias", "in_proj_bias")):
            srcs = tuple(f"{hf}.self_attn.{x}_proj.{p}" for x in "qkv")
            multi.append((ExpectedMulti(srcs, (f"{oc}.attn.{t}",), "merge"), {"dim": 0}))
    return layer_truth(
        _clip_vision(),
        _openclip_visual(),
        layers,
        key_pairs=pairs,
        transforms={"visual_projection.weight": ("transpose", {})},
        multi=multi,
        complete=True,
    )


declare(
    "heldout_clip_vision_hf_to_openclip",
    _clip_vision,
    _openclip_visual,
    _image(vit.VIT_IMAGE),
    _clip_truth,
)

WHISPER = text.WhisperConfig()


def _whisper_hf() -> nn.Module:
    c = WHISPER
    return hf_model(
        "transformers.models.whisper.modeling_whisper:WhisperEncoder",
        "WhisperConfig",
        vocab_size=64,
        num_mel_bins=c.mels,
        d_model=c.dim,
        encoder_layers=c.layers,
        encoder_attention_heads=c.heads,
        encoder_ffn_dim=4 * c.dim,
        decoder_layers=1,
        decoder_attention_heads=c.heads,
        decoder_ffn_dim=4 * c.dim,
        max_source_positions=c.ctx,
        max_target_positions=c.ctx,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        attn_implementation="eager",
    )


def _whisper_truth() -> Truth:
    layers = [("conv1", "conv1"), ("conv2", "conv2"), ("layer_norm", "ln_post")]
    layers += per_layer(
        WHISPER.layers,
        "layers.{i}",
        "blocks.{i}",
        {
            "self_attn.q_proj": "attn.query",
            "self_attn.k_proj": "attn.key",
            "self_attn.v_proj": "attn.value",
            "self_attn.out_proj": "attn.out",
            "self_attn_layer_norm": "attn_ln",
            "fc1": "mlp.0",
            "fc2": "mlp.2",
            "final_layer_norm": "mlp_ln",
        },
    )
    return layer_truth(
        _whisper_hf(),
        text.OpenAIWhisperEncoder(WHISPER),
        layers,
        key_pairs=[("embed_positions.weight", "positional_embedding")],
        complete=True,
    )


def _mel() -> torch.Tensor:
    g = torch.Generator().manual_seed(1234)
    return torch.randn(2, WHISPER.mels, 2 * WHISPER.ctx, generator=g)


declare(
    "heldout_whisper_encoder_hf_to_openai",
    _whisper_hf,
    lambda: text.OpenAIWhisperEncoder(WHISPER),
    _mel,
    _whisper_truth,
)

GQA_LM = text.LMConfig(kv_heads=2)


def _llama_mha() -> nn.Module:
    fields = lm_fields(GQA_LM, num_key_value_heads=GQA_LM.heads)
    return hf_model("LlamaForCausalLM", "LlamaConfig", **fields)


def _gqa_layer_pairs() -> list[tuple[str, str]]:
    pairs = _decoder_pairs(GQA_LM.layers, bias=False, moe=False)
    return [(s.removesuffix(".weight"), t.removesuffix(".weight")) for s, t in pairs]


@functools.cache
def _gqa_truth() -> Truth:
    return layer_truth(_llama_mha(), text.MetaStyleLM(GQA_LM), _gqa_layer_pairs(), complete=False)


declare(
    "heldout_trap_llama_mha_to_gqa",
    _llama_mha,
    lambda: text.MetaStyleLM(GQA_LM),
    lambda: _ids(GQA_LM.vocab),
    _gqa_truth,
    shared_features=_probe_pairs(_gqa_truth, _gqa_layer_pairs),
)

T5 = text.T5Sizes()


def _t5_hf() -> nn.Module:
    c = T5
    return hf_model(
        "transformers.models.t5.modeling_t5:T5Stack",
        "T5Config",
        vocab_size=c.vocab,
        d_model=c.dim,
        d_kv=c.d_kv,
        d_ff=c.ff,
        num_layers=c.layers,
        num_heads=c.heads,
        relative_attention_num_buckets=c.buckets,
        relative_attention_max_distance=c.max_distance,
        layer_norm_epsilon=c.eps,
        feed_forward_proj="gated-gelu",
        is_decoder=False,
        is_encoder_decoder=False,
        use_cache=False,
        attn_implementation="eager",
    )


def _t5_truth() -> Truth:
    pairs = [
        ("token_embedder.embedding", "embed_tokens.weight"),
        (
            "encoder.relpos_bias.rel_embedding",
            "block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        ),
        ("encoder.encoder_norm.scale", "final_layer_norm.weight"),
    ]
    transposed = ["encoder.relpos_bias.rel_embedding"]
    for i in range(T5.layers):
        tx, hf = f"encoder.layers_{i}", f"block.{i}.layer"
        pairs += [
            (f"{tx}.pre_attention_layer_norm.scale", f"{hf}.0.layer_norm.weight"),
            (f"{tx}.pre_mlp_layer_norm.scale", f"{hf}.1.layer_norm.weight"),
        ]
        dense = [
            (f"attention.{a}", f"0.SelfAttention.{b}")
            for a, b in zip(("query", "key", "value", "out"), "qkvo", strict=True)
        ]
        dense += [(f"mlp.{w}", f"1.DenseReluDense.{w}") for w in ("wi_0", "wi_1", "wo")]
        for a, b in dense:
            pairs.append((f"{tx}.{a}.kernel", f"{hf}.{b}.weight"))
            transposed.append(f"{tx}.{a}.kernel")
    return layer_truth(
        text.T5XEncoder(T5),
        _t5_hf(),
        [],
        key_pairs=pairs,
        transforms={k: ("transpose", {}) for k in transposed},
        complete=True,
    )


declare(
    "heldout_t5x_encoder_to_hf",
    lambda: text.T5XEncoder(T5),
    _t5_hf,
    lambda: _ids(T5.vocab),
    _t5_truth,
)

PHI3_LM = text.LMConfig(hidden=48, eps=1e-5)


def _phi3() -> nn.Module:
    fields = lm_fields(PHI3_LM, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return hf_model("Phi3ForCausalLM", "Phi3Config", **fields)


def _phi3_truth() -> Truth:
    c = PHI3_LM
    fused = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
    pairs = [
        (s, t)
        for s, t in _decoder_pairs(c.layers, bias=False, moe=False)
        if not any(f".{f}." in s for f in fused)
    ]
    d = c.dim // c.heads
    multi = []
    for i in range(c.layers):
        hf, me = f"model.layers.{i}", f"layers.{i}"
        qkv = ExpectedMulti(
            (f"{hf}.self_attn.qkv_proj.weight",),
            tuple(f"{me}.attention.{w}.weight" for w in ("wq", "wk", "wv")),
            "split",
        )
        multi.append((qkv, {"dim": 0, "sizes": [c.heads * d, c.kv_heads * d, c.kv_heads * d]}))
        gate_up = ExpectedMulti(
            (f"{hf}.mlp.gate_up_proj.weight",),
            (f"{me}.feed_forward.w1.weight", f"{me}.feed_forward.w3.weight"),
            "split",
        )
        multi.append((gate_up, {"dim": 0, "sizes": [c.hidden, c.hidden]}))
    return layer_truth(
        _phi3(), text.MetaStyleLM(PHI3_LM), [], key_pairs=pairs, multi=multi, complete=True
    )


declare(
    "heldout_phi3_hf_to_meta_split",
    _phi3,
    lambda: text.MetaStyleLM(PHI3_LM),
    lambda: _ids(PHI3_LM.vocab),
    _phi3_truth,
)
