"""Cases whose truth is torchtune's key converters (``torchtune.models.*convert_weights``).

HF transformers models and torchtune models are built from tiny configurations; the converters
are torchtune's own: Meta ↔ torchtune ↔ HF with the RoPE row permutation, Qwen2 with biases and
grouped key/values, Phi-3 with its fused q/k/v and gate/up split, the CLIP text encoder and the
T5 encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bench.external.case import (
    Built,
    from_module,
    function,
    hf_model,
    logits,
    randomize_,
    register_converted,
    seeded,
    state_dict_of,
    token_ids,
)

VOCAB = 64
DIM = 32
HEADS = 4
LAYERS = 2
FFN = 48
SEQ = 32
REQ = ("torchtune.models.convert_weights", "transformers")

_DECODERS: dict[str, tuple[str, str, str, float, float, dict[str, Any]]] = {
    # family: HF class, HF config, torchtune builder, norm eps, RoPE base, other HF fields
    "llama": ("LlamaForCausalLM", "LlamaConfig", "torchtune.models.llama2:llama2", 1e-5, 1e4, {}),
    "qwen2": ("Qwen2ForCausalLM", "Qwen2Config", "torchtune.models.qwen2:qwen2", 1e-6, 1e6, {}),
    "phi3": (
        "Phi3ForCausalLM",
        "Phi3Config",
        "torchtune.models.phi3:phi3",
        1e-5,
        1e4,
        dict(original_max_position_embeddings=SEQ, pad_token_id=0, bos_token_id=1, eos_token_id=2),
    ),
}


def _hf_decoder(family: str, kv_heads: int) -> Callable[[], nn.Module]:
    """Decoder family + key/value heads → a factory of the tiny transformers causal LM."""
    cls, config, _, eps, base, extra = _DECODERS[family]
    cls, cfg = hf_model(
        cls,
        config,
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        max_position_embeddings=SEQ,
        rms_norm_eps=eps,
        rope_theta=base,
        tie_word_embeddings=False,
        **extra,
    )
    return seeded(lambda: cls(cfg))


def _tune_decoder(family: str, kv_heads: int) -> Callable[[], nn.Module]:
    """Decoder family + key/value heads → a factory of the same network built by torchtune."""
    _, _, builder, eps, base, _ = _DECODERS[family]
    build = function(builder)
    return seeded(
        lambda: build(
            vocab_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            num_kv_heads=kv_heads,
            embed_dim=DIM,
            max_seq_len=SEQ,
            intermediate_dim=FFN,
            norm_eps=eps,
            rope_base=base,
        )
    )


def _decoder(family: str, kv_heads: int, *, from_tune: bool = False) -> Callable[[str], Built]:
    """Decoder family + key/value heads → a case builder: the transformers model (torchtune's
    with ``from_tune``) converted to the other by the named torchtune converter."""

    def build(convert: str) -> Built:
        fn = function(convert)
        hf, tune = _hf_decoder(family, kv_heads), _tune_decoder(family, kv_heads)
        source, target = (tune, hf) if from_tune else (hf, tune)
        return from_module(
            randomize_(source()),
            target,
            lambda sd: fn(sd, num_heads=HEADS, num_kv_heads=kv_heads, dim=DIM),
            token_ids(VOCAB),
        )

    return build


def _meta_to_tune(convert: str) -> Built:
    from torchtune.models.convert_weights import tune_to_meta

    # the Meta checkpoint layout has no module here: torchtune's own tune_to_meta writes it
    tune = randomize_(_tune_decoder("llama", 2)())
    meta_sd = tune_to_meta(state_dict_of(tune))
    return Built(
        source_sd=meta_sd,
        build_target=_tune_decoder("llama", 2),
        converter=function(convert),
        inputs=token_ids(VOCAB),
        run_target=logits,
    )


def _clip_text(convert: str) -> Built:
    import transformers as tf
    from torchtune.models.clip._component_builders import clip_text_encoder

    cfg = tf.CLIPTextConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=4 * DIM,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        max_position_embeddings=8,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
        eos_token_id=VOCAB - 1,
    )
    src = randomize_(seeded(lambda: tf.CLIPTextModel(cfg))())
    tgt = seeded(
        lambda: clip_text_encoder(
            embed_dim=DIM, num_heads=HEADS, num_layers=LAYERS, vocab_size=VOCAB, max_seq_len=8
        )
    )
    x = token_ids(VOCAB - 1, length=8)
    x[0, -1] = VOCAB - 1  # the end-of-text token both sides pool at

    def run_source(m: Any, inp: Any) -> Any:
        return m(inp).pooler_output

    note = "outputs: HF pooler_output vs torchtune's pooled end-of-text embedding"
    return from_module(src, tgt, function(convert), x, run_source, (note,))


def _t5_encoder(convert: str) -> Built:
    import transformers as tf
    from torchtune.models.t5._component_builders import t5_encoder

    cfg = tf.T5Config(
        vocab_size=VOCAB,
        d_model=DIM,
        d_kv=8,
        d_ff=FFN,
        num_layers=LAYERS,
        num_heads=HEADS,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=16,
        feed_forward_proj="gated-gelu",
        layer_norm_epsilon=1e-6,
        tie_word_embeddings=False,
    )
    cfg.dense_act_fn = "gelu"  # torchtune's T5 uses the exact GELU, HF's "gated-gelu" the tanh one
    # the whole encoder-decoder, as HF checkpoints hold it: the converter keeps the encoder
    src = randomize_(seeded(lambda: tf.T5ForConditionalGeneration(cfg))())
    tgt = seeded(
        lambda: t5_encoder(
            embed_dim=DIM,
            mlp_dim=FFN,
            num_heads=HEADS,
            head_dim=8,
            num_layers=LAYERS,
            rel_pos_num_buckets=8,
            rel_pos_max_dist=16,
            vocab_size=VOCAB,
            norm_eps=1e-6,
            max_seq_len=8,
        )
    )
    note = "outputs: the source's encoder; its forward needs decoder ids, so no trace"
    return from_module(
        src,
        tgt,
        function(convert),
        token_ids(VOCAB, length=8),  # torchtune's T5 encoder takes max_seq_len tokens
        lambda m, x: logits(m.encoder, x),
        (note,),
    )


_CW = "torchtune.models.convert_weights"
register_converted(
    (
        (
            "tt-llama2-hf-to-tune",
            "llama",
            f"{_CW}:hf_to_tune",
            _decoder("llama", HEADS),
            "HF Llama → torchtune llama2; q/k rows permuted rotate-half → interleaved pairs",
        ),
        (
            "tt-llama-gqa-hf-to-tune",
            "gqa",
            f"{_CW}:hf_to_tune",
            _decoder("llama", 2),
            "HF Llama with 2 key/value heads → torchtune; k rows permuted per key/value head",
        ),
        (
            "tt-llama2-tune-to-hf",
            "llama",
            f"{_CW}:tune_to_hf",
            _decoder("llama", HEADS, from_tune=True),
            "torchtune llama2 → HF Llama; q/k rows permuted interleaved pairs → rotate-half",
        ),
        (
            "tt-llama-meta-to-tune",
            "llama",
            f"{_CW}:meta_to_tune",
            _meta_to_tune,
            "Meta checkpoint layout (wq/wk/wv/wo, w1/w2/w3, GQA) → torchtune; source is a checkpoint",
        ),
        (
            "tt-qwen2-hf-to-tune",
            "gqa",
            "torchtune.models.qwen2._convert_weights:qwen2_hf_to_tune",
            _decoder("qwen2", 2),
            "HF Qwen2 (q/k/v biases, 2 key/value heads) → torchtune qwen2",
        ),
        (
            "tt-phi3-hf-to-tune",
            "phi",
            "torchtune.models.phi3._convert_weights:phi3_hf_to_tune",
            _decoder("phi3", 2),
            "HF Phi-3 (fused qkv_proj with GQA, fused gate_up_proj) → torchtune q/k/v and w1/w3",
        ),
        (
            "tt-clip-text-hf-to-tune",
            "clip",
            "torchtune.models.clip._convert_weights:clip_text_hf_to_tune",
            _clip_text,
            "HF CLIP text encoder → torchtune clip_text_encoder (position embedding as a bare tensor)",
        ),
        (
            "tt-t5-encoder-hf-to-tune",
            "encoder",
            "torchtune.models.t5._convert_weights:t5_encoder_hf_to_tune",
            _t5_encoder,
            "HF T5 encoder-decoder → torchtune t5_encoder: the decoder and LM head must stay unmapped",
        ),
    ),
    REQ,
    # torchtune.models.clip imports torchvision at import time
    {"tt-clip-text-hf-to-tune": ("torchvision",)},
)
