"""Roles of a side: dataflow first, names second; conflicts and layouts between two sides."""

from __future__ import annotations

import pytest

from weightmapper.dataflow import FlowRole
from weightmapper.roles import layout_transform, roles_conflict, side_roles, stacks_conflict

HF = [f"model.layers.0.self_attn.{p}_proj.weight" for p in "qkvo"] + [
    "model.layers.0.mlp.gate_proj.weight",
    "model.embed_tokens.weight",
    "lm_head.weight",
]
META = [f"layers.0.attention.w{p}.weight" for p in "qkvo"] + [
    "tok_embeddings.weight",
    "output.weight",
]


def test_names_give_roles_and_the_layout_their_library_stores() -> None:
    hf, meta = side_roles(HF), side_roles(META)
    assert hf.roles["model.layers.0.self_attn.k_proj.weight"] == "attn.k"
    assert meta.roles["layers.0.attention.wk.weight"] == "attn.k"
    assert hf.rope["model.layers.0.self_attn.q_proj.weight"] == "rotate_half"
    assert meta.rope["layers.0.attention.wq.weight"] == "interleaved"
    assert not hf.rope_proven and meta.source == "convention meta-llama"
    # HF Llama and Gemma tie on names; their RoPE and q/k/v layouts agree, so it is known
    assert hf.source.startswith("conventions ") and hf.layout is not None


def test_dataflow_wins_over_names() -> None:
    flow = {"layers.0.attention.wq.weight": FlowRole("attn.q", head_dim=8, rope="rotate_half")}
    meta = side_roles(META, flow)
    assert meta.rope["layers.0.attention.wq.weight"] == "rotate_half"
    assert meta.head_dim == {"layers.0.attention.wq.weight": 8}
    assert meta.rope_proven and meta.source.startswith("dataflow")


@pytest.mark.parametrize(
    ("a", "b", "conflict"),
    [
        ("attn.q", "attn.k", True),
        ("mlp.gate", "mlp.up", True),
        ("norm.attn", "norm.mlp", True),
        ("head.transform", "head.pooler", True),
        ("mlp.gate", "moe.gate", False),
        ("attn.qkv", "attn.q", False),  # a split or merge
        ("mlp.gate_up", "mlp.down", True),
        ("head.lm", "head.bias", False),
        (None, "attn.q", False),
    ],
)
def test_which_roles_exclude_each_other(a: str | None, b: str | None, conflict: bool) -> None:
    assert roles_conflict(a, b) is conflict
    assert roles_conflict(b, a) is conflict


def test_encoder_and_decoder_never_exchange_tensors() -> None:
    assert stacks_conflict("encoder", "decoder")
    assert not stacks_conflict("encoder", None)
    assert not stacks_conflict("decoder", "decoder")


def test_rope_layouts_that_differ_get_the_row_permutation_and_say_what_was_assumed() -> None:
    src = side_roles(META)  # interleaved, from names only
    tgt = side_roles(HF, {"model.layers.0.self_attn.q_proj.weight": FlowRole("attn.q", head_dim=8,
                                                                              rope="rotate_half")})  # fmt: skip
    spec, note, assumed = layout_transform(
        "attn.q", "layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight", src, tgt
    )
    assert spec is not None and spec.name == "rope_permute"
    assert spec.params == {"head_dim": 8, "to": "rotate_half"}
    assert "assumed" in note and "source module" in note and assumed
    # no head size anywhere: nothing is done, and the note says why
    spec, note, assumed = layout_transform(
        "attn.q", "layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight",
        src, side_roles(HF),
    )  # fmt: skip
    assert spec is None and "head size is unknown" in note and not assumed
    # equal layouts, or a value projection: nothing to do, nothing to say
    assert layout_transform("attn.v", "a", "b", src, tgt) == (None, "", False)


Q_META, Q_HF = "layers.0.attention.wq.weight", "model.layers.0.self_attn.q_proj.weight"


def test_rope_layouts_read_from_both_forward_passes_are_proven_and_say_what_showed_them() -> None:
    src = side_roles(META, {Q_META: FlowRole("attn.q", head_dim=8, rope="interleaved",
                                             rope_evidence="rows 2i and 2i+1 turn together")})  # fmt: skip
    tgt = side_roles(HF, {Q_HF: FlowRole("attn.q", head_dim=8, rope="rotate_half",
                                         rope_evidence="rows i and i+4 turn together")})  # fmt: skip
    spec, note, assumed = layout_transform("attn.q", Q_META, Q_HF, src, tgt)
    assert spec is not None and spec.params == {"head_dim": 8, "to": "rotate_half"}
    assert not assumed and "assumed" not in note
    assert note == (
        "RoPE interleaved → rotate_half, read from both forward passes (source: rows 2i and "
        "2i+1 turn together; target: rows i and i+4 turn together)"
    )


def test_a_style_a_forward_pass_could_not_read_is_said_never_taken_for_none() -> None:
    why = "RoPE style not read: no two rows of a head turn together at this input"
    unread = FlowRole("attn.q", head_dim=8, rope=None, rope_evidence=why)
    read = FlowRole("attn.q", head_dim=8, rope="rotate_half", rope_evidence="rows i and i+4")
    # names give the source's style: it is assumed, and the note says the pass did not show it
    src, tgt = side_roles(META, {Q_META: unread}), side_roles(HF, {Q_HF: read})
    assert Q_META not in src.rope_read and src.rope_unread[Q_META] == why
    spec, note, assumed = layout_transform("attn.q", Q_META, Q_HF, src, tgt)
    assert spec is not None and assumed
    assert note.startswith("layout assumed from names: RoPE interleaved → rotate_half")
    assert "source's forward pass did not show it" in note
    # no names to fall back on: the rows stay, and the pair says which pass could not tell
    bare = ["a.q.weight"]
    src = side_roles(bare, {"a.q.weight": unread})
    assert "a.q.weight" not in src.rope
    spec, note, assumed = layout_transform("attn.q", "a.q.weight", Q_HF, src, tgt)
    assert spec is None and assumed and note.startswith("source's RoPE style not read")


def test_fused_qkv_rows_per_head_become_concatenated_when_the_head_size_is_known() -> None:
    neox = ["gpt_neox.layers.0.attention.query_key_value.weight", "gpt_neox.embed_in.weight"]
    lit = ["transformer.h.0.attn.qkv.weight", "transformer.wte.weight"]
    lit_flow = {"transformer.h.0.attn.qkv.weight": FlowRole("attn.qkv", head_dim=4)}
    src, tgt = side_roles(neox), side_roles(lit, lit_flow)
    assert (src.layout.qkv, tgt.layout.qkv) == ("per_head", "concat")
    spec, note, assumed = layout_transform("attn.qkv", neox[0], lit[0], src, tgt, rows=24)
    assert spec is not None and spec.name == "interleave_heads" and assumed
    assert spec.params == {"heads": 2, "parts": 3, "to": "concat"}
    assert "per_head → concat" in note
    spec, note, _ = layout_transform("attn.qkv", neox[0], lit[0], src, side_roles(lit), rows=24)
    assert spec is None and "not known" in note


def test_a_module_states_its_head_size_without_running() -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    from weightmapper.inventory import Inventory

    cfg = transformers.LlamaConfig(
        hidden_size=32, intermediate_size=32, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=32,
    )  # fmt: skip
    with torch.device("meta"):
        inv = Inventory.from_module(transformers.LlamaForCausalLM(cfg))
    q = "model.layers.0.self_attn.q_proj.weight"
    assert inv.head_dims[q] == 8
    assert "model.layers.0.mlp.up_proj.weight" not in inv.head_dims
    tgt = side_roles(inv.tensors, head_dims=inv.head_dims)
    spec, note, assumed = layout_transform(
        "attn.q", "layers.0.attention.wq.weight", q, side_roles(META), tgt
    )
    assert spec is not None and spec.params == {"head_dim": 8, "to": "rotate_half"}
    assert "assumed" in note and assumed
