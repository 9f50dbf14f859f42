"""Roles from dataflow: read off the forward pass, checked against names other projects chose
(transformers' conventions) and against the zoo's true pairs (one role on both sides)."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from weightmapper.conventions import load_conventions
from weightmapper.dataflow import dataflow_roles
from zoo import get_case
from zoo.nets_rope import RopeAttention

_LM = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 2, "vocab_size": 32}  # fmt: skip

FAMILIES = [
    ("LlamaForCausalLM", "LlamaConfig", {**_LM, "num_key_value_heads": 1}),
    ("GemmaForCausalLM", "GemmaConfig", {**_LM, "head_dim": 8, "num_key_value_heads": 1}),
    ("Phi3ForCausalLM", "Phi3Config", {**_LM, "pad_token_id": 0}),
    ("GPT2LMHeadModel", "GPT2Config", {"n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 32}),
    ("GPTNeoXForCausalLM", "GPTNeoXConfig", _LM),
    (
        "MixtralForCausalLM",
        "MixtralConfig",
        {**_LM, "num_local_experts": 2, "num_key_value_heads": 1},
    ),
    ("BertModel", "BertConfig", _LM),
]


@pytest.mark.parametrize(("model", "config", "fields"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_roles_from_the_forward_pass_match_the_librarys_own_names(
    model: str, config: str, fields: dict
) -> None:
    transformers = pytest.importorskip("transformers")
    cfg = getattr(transformers, config)(**fields)
    cfg._attn_implementation = "eager"
    built = getattr(transformers, model)(cfg).eval()
    roles = dataflow_roles(built, torch.randint(0, 32, (1, 6)))
    keys = list(built.state_dict())
    named, _ = load_conventions().roles(keys, architectures=[model])
    assert set(named) == set(keys)
    missing = [k for k in keys if k not in roles]
    assert not missing, missing
    assert {k: roles[k].role for k in keys} == {k: named[k].role for k in keys}


@pytest.mark.parametrize(
    "name",
    [
        "resnet_tv_to_timm_names",  # shortcut projection vs the first 1x1 conv of equal shape
        "heldout_regnety_tv_to_timm",  # shortcut registered first in one library, last in the other
        "heldout_vit_tv_to_timm",  # nn.MultiheadAttention (fused in_proj) vs a timm block
        "heldout_t5x_encoder_to_hf",  # tables indexed by hand: W[ids], bias[:, buckets]
        "heldout_distilbert_hf_to_nanobert",  # post-norm encoder
    ],
)
def test_true_pairs_play_one_role_in_both_networks(name: str) -> None:
    case = get_case(name)
    if not case.available():
        pytest.skip(f"needs {', '.join(case.requires)}")
    x = case.dummy_input()
    source = case.build_source()
    src = dataflow_roles(source, x)
    tgt = dataflow_roles(case.build_target(), x)
    state = source.state_dict()
    # integer counters (num_batches_tracked) do nothing in the forward pass: no role
    weights = {s: t for s, t in case.ground_truth.items() if state[s].is_floating_point()}
    both = [(s, t) for s, t in weights.items() if s in src and t in tgt]
    assert len(both) >= 0.9 * len(weights)
    wrong = [(s, t, src[s].role, tgt[t].role) for s, t in both if src[s].role != tgt[t].role]
    assert not wrong, wrong[:5]


def test_shortcut_and_first_conv_are_told_apart_by_where_they_lead() -> None:
    case = get_case("resnet_tv_to_timm_names")
    roles = dataflow_roles(case.build_source(), case.dummy_input())
    assert roles["layer2.0.downsample.0.weight"].role == "block.shortcut.conv"
    assert roles["layer2.0.conv1.weight"].role == "block.conv1"
    assert roles["layer2.0.downsample.1.weight"].role == "block.shortcut.norm"
    assert all(r.evidence for r in roles.values())  # every role says why


def test_a_forward_pass_that_fails_gives_no_roles_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("no forward for you")

    model = Broken().train()
    with caplog.at_level(logging.WARNING):
        assert dataflow_roles(model, torch.zeros(1, 4)) == {}
    assert "no forward for you" in caplog.text
    assert model.training  # the mode is restored


def test_tied_weights_take_the_role_of_the_module_that_uses_them() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.norm = nn.LayerNorm(8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.head(self.norm(self.embed(ids)))

    roles = dataflow_roles(Tied(), torch.tensor([[1, 2, 3]]))
    assert roles["embed.weight"].role == "embed.tokens"
    assert roles["head.weight"].role == "head.lm"
    assert roles["norm.weight"].role == "norm.final"


@pytest.mark.parametrize(("interleaved", "style"), [(False, "rotate_half"), (True, "interleaved")])
def test_rope_layout_and_head_size_are_read_where_the_attention_happens(
    interleaved: bool, style: str
) -> None:
    roles = dataflow_roles(RopeAttention(interleaved), torch.randn(1, 5, 16))
    assert (roles["q.weight"].role, roles["q.weight"].rope) == ("attn.q", style)
    assert (roles["k.weight"].role, roles["k.weight"].rope) == ("attn.k", style)
    assert roles["v.weight"].rope is None
    assert {roles[f"{p}.weight"].head_dim for p in "qkv"} == {8}
    assert roles["o.weight"].role == "attn.out"
