"""Roles a network has once (its head, final norm, relative-position bias): a pair whose two
tensors play one, each the only one of it, is right however different the names; trap keys
(a head of another class count, an auxiliary head, a side with several heads) stay apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.conventions.singletons import parse_singletons, singleton_words
from weightmapper.engine.unique_roles import fits
from weightmapper.errors import ConfigError
from weightmapper.mapper import WeightMapper
from weightmapper.settings import DEFAULT_THRESHOLD


# --- the words --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "role"),
    [
        ("fc.weight", "head.cls"),  # torchvision's head: a first-level fc
        ("AuxLogits.fc.weight", None),  # an fc deeper down is not the head
        ("blocks.3.mlp.fc1.weight", None),
        ("Logits.Conv2d_1c_1x1.bias", "head.cls"),  # a word anywhere in the path
        ("encoder.encoder_norm.scale", "norm.final"),
        ("final_layer_norm.weight", "norm.final"),
        ("layers.0.norm.weight", None),  # `norm` names the final norm only at the top
        ("encoder.relpos_bias.rel_embedding", "attn.relbias"),
        ("block.0.layer.0.SelfAttention.relative_attention_bias.weight", "attn.relbias"),
        ("pos_embed", "embed.positions"),  # a parameter of the root module
        ("transformer.wte.weight", "embed.tokens"),
    ],
)
def test_module_words_name_the_roles_a_network_has_once(key: str, role: str | None) -> None:
    assert singleton_words().role_of(key) == role


def test_a_words_file_with_problems_lists_every_one() -> None:
    doc = {
        "schema": 1,
        "roles": {
            "attn.q": {"anywhere": ["q"]},  # a role every block has
            "head.cls": {"anywhere": ["logits"]},
            "norm.final": {"anywhere": ["logits"], "deep": ["x"]},
        },
    }
    with pytest.raises(ConfigError) as e:
        parse_singletons(doc, "mine.yaml")
    assert len(e.value.problems) == 2
    assert any("attn.q" in p for p in e.value.problems)
    assert any("anywhere and top" in p for p in e.value.problems)
    with pytest.raises(ConfigError, match="schema"):
        parse_singletons({"roles": {}}, "old.yaml")


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        ((10, 16), (10, 16), True),
        ((10, 16), (10, 16, 1, 1), True),  # a linear head onto a 1×1 convolution
        ((4, 32), (32, 4), True),  # (heads, buckets) onto (buckets, heads)
        ((10, 16), (7, 16), False),  # another class count
        ((2, 3, 4), (4, 3, 2), False),
    ],
)
def test_shapes_that_fit(a: tuple, b: tuple, ok: bool) -> None:
    assert fits(a, b) is ok


# --- the engine: a classifier's head onto a 1×1 convolution -----------------------------------
class _Torchvision(nn.Module):
    """conv → pool → fc, and an auxiliary head of another width (as torchvision's Inception)."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a = nn.Conv2d(3, 12, 3)
        self.Mixed_5b = nn.Conv2d(12, 16, 1)
        self.AuxLogits = nn.Module()
        self.AuxLogits.fc = nn.Linear(12, 10)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.Mixed_5b(torch.relu(self.Conv2d_1a(x)))
        return self.fc(h.mean((2, 3)))


class _Slim(nn.Module):
    """The same network under TF-slim scope names, its head a 1×1 convolution, no aux head."""

    def __init__(self, classes: int = 10, heads: int = 1) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = nn.Conv2d(3, 12, 3)
        self.Mixed_5b_1x1 = nn.Conv2d(12, 16, 1)
        self.Logits = nn.Module()
        self.Logits.Conv2d_1c_1x1 = nn.Conv2d(16, classes, 1)
        if heads > 1:  # a second head: no single head on this side
            self.Extra = nn.Module()
            self.Extra.logits = nn.Conv2d(16, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.Mixed_5b_1x1(torch.relu(self.Conv2d_1a_3x3(x)))
        return self.Logits.Conv2d_1c_1x1(h.mean((2, 3), keepdim=True)).flatten(1)


def _from_file(source: nn.Module, target: nn.Module, tmp_path: Path) -> WeightMapper:
    path = tmp_path / "source.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, path)
    return WeightMapper.from_checkpoint(path, target)


def test_the_lone_head_lands_on_the_lone_head_and_outputs_match(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source, target = _Torchvision().eval(), _Slim().eval()
    result = _from_file(source, target, tmp_path).suggest_mapping()
    head = result.pair("fc.weight")
    assert head is not None and head.target == "Logits.Conv2d_1c_1x1.weight"
    assert head.transform.name == "reshape"
    assert head.breakdown["role_unique"] == 1.0 and head.score > DEFAULT_THRESHOLD
    bias = result.pair("fc.bias")
    assert bias is not None and bias.target == "Logits.Conv2d_1c_1x1.bias"
    assert "AuxLogits.fc.weight" not in result  # the aux head has no partner
    target.load_state_dict(result.convert(source.state_dict()), strict=True)
    x = torch.randn(2, 3, 9, 9)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)


def test_a_head_of_another_class_count_stays_unmapped(tmp_path: Path) -> None:
    result = _from_file(_Torchvision(), _Slim(classes=7), tmp_path).suggest_mapping()
    assert "fc.weight" not in result and "fc.bias" not in result
    assert "Logits.Conv2d_1c_1x1.weight" in {u.name for u in result.unmatched_target}


def test_a_side_with_two_heads_gives_no_role_evidence(tmp_path: Path) -> None:
    mapper = _from_file(_Torchvision(), _Slim(heads=2), tmp_path)
    every = mapper.suggest_mapping(threshold=0.0)
    assert {p.target for p in every.pairs if p.source == "fc.weight"} & {
        "Logits.Conv2d_1c_1x1.weight",
        "Extra.logits.weight",
    }
    assert all(
        p.breakdown.get("role_unique") == 0.0 for p in every.pairs if p.source == "fc.weight"
    )
    assert "fc.weight" not in mapper.suggest_mapping()  # still resting on its shape alone


# --- the engine: a final norm and a relative-position bias under other names -------------------
class _Norm(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(d) + 0.5)


class _RelBias(nn.Module):
    def __init__(self, heads: int, buckets: int) -> None:
        super().__init__()
        self.rel_embedding = nn.Parameter(torch.randn(heads, buckets))


class _T5X(nn.Module):
    """Flax-style tree: kernels (in, out), one relative bias (heads, buckets) for the stack."""

    def __init__(self, d: int = 8, heads: int = 2, buckets: int = 6) -> None:
        super().__init__()
        self.encoder = nn.Module()
        self.encoder.relpos_bias = _RelBias(heads, buckets)
        self.encoder.layers_0 = nn.Module()
        self.encoder.layers_0.mlp = nn.Linear(d, 3 * d, bias=False)
        self.encoder.encoder_norm = _Norm(d)


class _HFT5(nn.Module):
    """HF-style stack: the bias in block 0 as an embedding (buckets, heads), a final norm."""

    def __init__(self, d: int = 8, heads: int = 2, buckets: int = 6) -> None:
        super().__init__()
        self.block = nn.ModuleList([nn.Module()])
        self.block[0].relative_attention_bias = nn.Embedding(buckets, heads)
        self.block[0].DenseReluDense = nn.Module()
        self.block[0].DenseReluDense.wi = nn.Linear(d, 3 * d, bias=False)
        self.final_layer_norm = nn.LayerNorm(d, bias=False)


def test_a_final_norm_and_a_relative_bias_pair_by_their_lone_roles(tmp_path: Path) -> None:
    source = _T5X()
    result = _from_file(source, _HFT5(), tmp_path).suggest_mapping()
    norm = result.pair("encoder.encoder_norm.scale")
    assert norm is not None and norm.target == "final_layer_norm.weight"
    bias = result.pair("encoder.relpos_bias.rel_embedding")
    assert bias is not None
    assert bias.target == "block.0.relative_attention_bias.weight"
    assert bias.transform.name == "transpose"
    assert min(norm.score, bias.score) > DEFAULT_THRESHOLD
    converted = result.convert(source.state_dict())
    table = converted["block.0.relative_attention_bias.weight"]
    torch.testing.assert_close(table, source.encoder.relpos_bias.rel_embedding.detach().T)
