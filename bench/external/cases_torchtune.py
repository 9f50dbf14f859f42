"""Cases whose truth is torchtune's key converters (``torchtune.models.*convert_weights``).

HF transformers models and torchtune models are built from tiny configurations; the converters
are torchtune's own: Meta ↔ torchtune ↔ HF with the RoPE row permutation, Qwen2 with biases and
grouped key/values, Phi-3 with its fused q/k/v and gate/up split, the CLIP text encoder and the
T5 encoder.
"""

from __future__ import annotations

from typing import Any

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

VOCAB = 64
DIM = 32
HEADS = 4
LAYERS = 2
FFN = 48
SEQ = 32
REQ = ("torchtune.models.convert_weights", "transformers")


def _hf_llama(kv_heads: int) -> Any:
    import transformers as tf

    cfg = tf.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=kv_heads,
        max_position_embeddings=SEQ,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
    )
    return seeded(lambda: tf.LlamaForCausalLM(cfg))


def _tune_llama2(kv_heads: int) -> Any:
    from torchtune.models.llama2 import llama2

    return seeded(
        lambda: llama2(
            vocab_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            num_kv_heads=kv_heads,
            embed_dim=DIM,
            max_seq_len=SEQ,
            intermediate_dim=FFN,
            norm_eps=1e-5,
            rope_base=10000.0,
        )
    )


def _hf_to_tune(kv_heads: int) -> Built:
    from torchtune.models.convert_weights import hf_to_tune

    src = randomize_(_hf_llama(kv_heads)())
    return Built(
        source_sd=state_dict_of(src),
        build_target=_tune_llama2(kv_heads),
        converter=lambda sd: hf_to_tune(sd, num_heads=HEADS, num_kv_heads=kv_heads, dim=DIM),
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _tune_to_hf() -> Built:
    from torchtune.models.convert_weights import tune_to_hf

    src = randomize_(_tune_llama2(HEADS)())
    return Built(
        source_sd=state_dict_of(src),
        build_target=_hf_llama(HEADS),
        converter=lambda sd: tune_to_hf(sd, num_heads=HEADS, num_kv_heads=HEADS, dim=DIM),
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _meta_to_tune() -> Built:
    from torchtune.models.convert_weights import meta_to_tune, tune_to_meta

    # the Meta checkpoint layout has no module here: torchtune's own tune_to_meta writes it
    tune = randomize_(_tune_llama2(2)())
    meta_sd = tune_to_meta(state_dict_of(tune))
    return Built(
        source_sd=meta_sd,
        build_target=_tune_llama2(2),
        converter=meta_to_tune,
        inputs=token_ids(VOCAB),
        run_target=logits,
    )


def _qwen2() -> Built:
    import transformers as tf
    from torchtune.models.qwen2 import qwen2
    from torchtune.models.qwen2._convert_weights import qwen2_hf_to_tune

    cfg = tf.Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        rms_norm_eps=1e-6,
        rope_theta=1_000_000.0,
        tie_word_embeddings=False,
    )
    src = randomize_(seeded(lambda: tf.Qwen2ForCausalLM(cfg))())
    tgt = seeded(
        lambda: qwen2(
            vocab_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            num_kv_heads=2,
            embed_dim=DIM,
            intermediate_dim=FFN,
            max_seq_len=SEQ,
            norm_eps=1e-6,
            rope_base=1_000_000.0,
        )
    )
    return Built(
        source_sd=state_dict_of(src),
        build_target=tgt,
        converter=lambda sd: qwen2_hf_to_tune(sd, num_heads=HEADS, num_kv_heads=2, dim=DIM),
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _phi3() -> Built:
    import transformers as tf
    from torchtune.models.phi3 import phi3
    from torchtune.models.phi3._convert_weights import phi3_hf_to_tune

    cfg = tf.Phi3Config(
        vocab_size=VOCAB,
        hidden_size=DIM,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        max_position_embeddings=SEQ,
        original_max_position_embeddings=SEQ,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    src = randomize_(seeded(lambda: tf.Phi3ForCausalLM(cfg))())
    tgt = seeded(
        lambda: phi3(
            vocab_size=VOCAB,
            num_layers=LAYERS,
            num_heads=HEADS,
            num_kv_heads=2,
            embed_dim=DIM,
            intermediate_dim=FFN,
            max_seq_len=SEQ,
            norm_eps=1e-5,
            rope_base=10000,
        )
    )
    return Built(
        source_sd=state_dict_of(src),
        build_target=tgt,
        converter=lambda sd: phi3_hf_to_tune(sd, num_heads=HEADS, num_kv_heads=2, dim=DIM),
        inputs=token_ids(VOCAB),
        run_target=logits,
        source_module=src,
        run_source=logits,
    )


def _clip_text() -> Built:
    import transformers as tf
    from torchtune.models.clip._component_builders import clip_text_encoder
    from torchtune.models.clip._convert_weights import clip_text_hf_to_tune

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

    return Built(
        source_sd=state_dict_of(src),
        build_target=tgt,
        converter=clip_text_hf_to_tune,
        inputs=x,
        run_target=logits,
        source_module=src,
        run_source=run_source,
        notes=["outputs: HF pooler_output vs torchtune's pooled end-of-text embedding"],
    )


def _t5_encoder() -> Built:
    import transformers as tf
    from torchtune.models.t5._component_builders import t5_encoder
    from torchtune.models.t5._convert_weights import t5_encoder_hf_to_tune

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
    return Built(
        source_sd=state_dict_of(src),
        build_target=tgt,
        converter=t5_encoder_hf_to_tune,
        inputs=token_ids(VOCAB, length=8),  # torchtune's T5 encoder takes max_seq_len tokens
        run_target=logits,
        source_module=src,
        run_source=lambda m, x: logits(m.encoder, x),
        notes=["outputs: the source's encoder; its forward needs decoder ids, so no trace"],
    )


def _tt(name: str, family: str, conv: str, build: Any, desc: str, extra: tuple = ()) -> None:
    register(
        ExternalCase(
            name=name,
            family=family,
            converter_name=conv,
            build=build,
            requires=REQ + extra,
            description=desc,
        )
    )


_tt(
    "tt-llama2-hf-to-tune",
    "llama",
    "torchtune.models.convert_weights:hf_to_tune",
    lambda: _hf_to_tune(HEADS),
    "HF Llama → torchtune llama2; q/k rows permuted rotate-half → interleaved pairs",
)
_tt(
    "tt-llama-gqa-hf-to-tune",
    "gqa",
    "torchtune.models.convert_weights:hf_to_tune",
    lambda: _hf_to_tune(2),
    "HF Llama with 2 key/value heads → torchtune; k rows permuted per key/value head",
)
_tt(
    "tt-llama2-tune-to-hf",
    "llama",
    "torchtune.models.convert_weights:tune_to_hf",
    _tune_to_hf,
    "torchtune llama2 → HF Llama; q/k rows permuted interleaved pairs → rotate-half",
)
_tt(
    "tt-llama-meta-to-tune",
    "llama",
    "torchtune.models.convert_weights:meta_to_tune",
    _meta_to_tune,
    "Meta checkpoint layout (wq/wk/wv/wo, w1/w2/w3, GQA) → torchtune; source is a checkpoint",
)
_tt(
    "tt-qwen2-hf-to-tune",
    "gqa",
    "torchtune.models.qwen2._convert_weights:qwen2_hf_to_tune",
    _qwen2,
    "HF Qwen2 (q/k/v biases, 2 key/value heads) → torchtune qwen2",
)
_tt(
    "tt-phi3-hf-to-tune",
    "phi",
    "torchtune.models.phi3._convert_weights:phi3_hf_to_tune",
    _phi3,
    "HF Phi-3 (fused qkv_proj with GQA, fused gate_up_proj) → torchtune q/k/v and w1/w3",
)
_tt(
    "tt-clip-text-hf-to-tune",
    "clip",
    "torchtune.models.clip._convert_weights:clip_text_hf_to_tune",
    _clip_text,
    "HF CLIP text encoder → torchtune clip_text_encoder (position embedding as a bare tensor)",
    ("torchvision",),  # torchtune.models.clip imports torchvision at import time
)
_tt(
    "tt-t5-encoder-hf-to-tune",
    "encoder",
    "torchtune.models.t5._convert_weights:t5_encoder_hf_to_tune",
    _t5_encoder,
    "HF T5 encoder-decoder → torchtune t5_encoder: the decoder and LM head must stay unmapped",
)
