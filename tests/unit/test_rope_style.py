"""RoPE's row order read from the forward pass, whatever way the code writes it.

Each form below is one way a library family writes RoPE (transformers' ``rotate_half`` with a
negated half, litgpt's halves, its pairs regrouped into halves before a rotate-half, Meta's
complex multiply, torchtune's and GPT-J's pairs stacked on a last axis of 2, halves written
without a negation). A tiny attention with each form is read, mapped onto every other form
with a dummy input, and the converted network computes what the source does, at first pass.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightmapper.dataflow import dataflow_roles
from weightmapper.mapper import WeightMapper

HEAD = 8
Rope = Callable[[torch.Tensor], torch.Tensor]


def _angles(t: int, pairs: int) -> torch.Tensor:
    """(positions, pairs) angles with every frequency turning (10000 ** (-2i / d))."""
    inv = 1.0 / (10000 ** (torch.arange(pairs, dtype=torch.float32) * 2 / (2 * pairs)))
    return torch.outer(torch.arange(t, dtype=torch.float32), inv)


# each form takes (b, h, t, d) and returns it rotated; the pairs it turns are its layout


def halves_negated(x: torch.Tensor) -> torch.Tensor:
    """transformers: x * cos + rotate_half(x) * sin, rotate_half = cat((-x2, x1))."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    cos, sin = torch.cat((a, a), -1).cos(), torch.cat((a, a), -1).sin()
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def halves_chunked(x: torch.Tensor) -> torch.Tensor:
    """Halves from chunk, each rotated and concatenated back, no negation op."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    x1, x2 = x.chunk(2, -1)
    return torch.cat([x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos()], -1)


def halves_batched_tables(x: torch.Tensor) -> torch.Tensor:
    """litgpt: tables with a batch dimension, halves sliced, the same rotate-half."""
    a = _angles(x.shape[2], x.shape[3] // 2)[None]
    cos, sin = torch.cat((a, a), -1).cos()[:, None], torch.cat((a, a), -1).sin()[:, None]
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)


def pairs_regrouped(x: torch.Tensor) -> torch.Tensor:
    """Pairs regrouped into halves (view as pairs, swap the last two axes), then a rotate-half
    on the regrouped rows, then back: turns rows 2i and 2i+1 (litgpt's interleaved form)."""
    *lead, d = x.shape
    grouped = x.view(*lead, d // 2, 2).transpose(-1, -2).reshape(*lead, d)
    out = halves_negated(grouped)
    return out.view(*lead, 2, d // 2).transpose(-1, -2).reshape(*lead, d)


def pairs_complex(x: torch.Tensor) -> torch.Tensor:
    """Meta: rows as complex numbers (neighbouring pairs), times e^{i angle}."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    turn = torch.polar(torch.ones_like(a), a)
    z = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    return torch.view_as_real(z * turn).flatten(3).type_as(x)


def pairs_stacked(x: torch.Tensor) -> torch.Tensor:
    """torchtune: pairs on a last axis of 2, rotated, stacked and flattened back."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    cos, sin = a.cos(), a.sin()
    p = x.float().reshape(*x.shape[:-1], -1, 2)
    out = torch.stack([p[..., 0] * cos - p[..., 1] * sin, p[..., 1] * cos + p[..., 0] * sin], -1)
    return out.flatten(3).type_as(x)


def pairs_strided(x: torch.Tensor) -> torch.Tensor:
    """GPT-J: every other row, stacked as (-odd, even), tables repeated per pair."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    cos, sin = a.cos().repeat_interleave(2, -1), a.sin().repeat_interleave(2, -1)
    turned = torch.stack((-x[..., 1::2], x[..., ::2]), dim=-1).flatten(-2)
    return x * cos + turned * sin


HALVES: dict[str, Rope] = {
    "halves_negated": halves_negated,
    "halves_chunked": halves_chunked,
    "halves_batched_tables": halves_batched_tables,
}
PAIRS: dict[str, Rope] = {
    "pairs_regrouped": pairs_regrouped,
    "pairs_complex": pairs_complex,
    "pairs_stacked": pairs_stacked,
    "pairs_strided": pairs_strided,
}
FORMS = {**HALVES, **PAIRS}


class Attention(nn.Module):
    """(b, t, 16) → the same: two heads of 8 with RoPE in the given form."""

    def __init__(self, rope: Rope, sdpa: bool = False, dim: int = 16) -> None:
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim, bias=False) for _ in range(4))
        self.rope, self.sdpa = rope, sdpa

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, d // HEAD, HEAD).transpose(1, 2)  # noqa: E731
        q, k, v = self.rope(heads(self.q(x))), self.rope(heads(self.k(x))), heads(self.v(x))
        if self.sdpa:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            out = torch.softmax(q @ k.transpose(-1, -2) / HEAD**0.5, -1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, d))


def _style(form: str) -> str:
    return "rotate_half" if form in HALVES else "interleaved"


@pytest.mark.parametrize("sdpa", [False, True])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_each_form_is_read_from_the_forward_pass(form: str, sdpa: bool) -> None:
    roles = dataflow_roles(Attention(FORMS[form], sdpa).eval(), torch.randn(2, 6, 16))
    for key in ("q.weight", "k.weight"):
        assert roles[key].rope == _style(form), roles[key].rope_evidence
        assert "turn together" in roles[key].rope_evidence
    assert roles["v.weight"].rope is None and roles["v.weight"].rope_evidence == ""


PAIRINGS = [(a, b) for a in sorted(FORMS) for b in sorted(FORMS) if _style(a) != _style(b)]


@pytest.mark.parametrize(("source_form", "target_form"), PAIRINGS)
def test_with_a_dummy_input_the_first_pass_is_right_in_both_directions(
    source_form: str, target_form: str
) -> None:
    torch.manual_seed(0)
    source = Attention(FORMS[source_form]).eval()
    target = Attention(FORMS[target_form], sdpa=True).eval()
    x = torch.randn(2, 6, 16)
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping()
    want = _style(target_form)
    for key in ("q.weight", "k.weight"):
        pair = result.pair(key)
        assert pair is not None and pair.transform.name == "rope_permute"
        assert pair.transform.params == {"head_dim": HEAD, "to": want}
        assert pair.confidence == "high"
        assert pair.note.startswith(f"RoPE {_style(source_form)} → {want}, read from both")
    target.load_state_dict(result.convert(source.state_dict()), strict=True)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)


def test_the_packaged_llama_pair_is_right_at_first_pass() -> None:
    from weightmapper.examples.llama import HFLlama, MetaLlama

    torch.manual_seed(0)
    meta, hf = MetaLlama().eval(), HFLlama().eval()
    ids = torch.randint(0, 64, (2, 12))
    result = WeightMapper(meta, hf, dummy_input=ids).suggest_mapping()
    qk = [p for p in result.pairs if p.source.endswith(("wq.weight", "wk.weight"))]
    assert len(qk) == 4
    for pair in qk:
        assert pair.transform.params == {"head_dim": 8, "to": "rotate_half"}
        assert pair.confidence == "high" and "read from both forward passes" in pair.note
    hf.load_state_dict(result.convert(meta.state_dict()), strict=True)
    torch.testing.assert_close(hf(ids), meta(ids), rtol=1e-4, atol=1e-5)


def written_in_place(x: torch.Tensor) -> torch.Tensor:
    """Pairs rotated into a preallocated tensor by item assignment: the recorder sees no write."""
    a = _angles(x.shape[2], x.shape[3] // 2)
    out = torch.empty_like(x)
    out[..., ::2] = x[..., ::2] * a.cos() - x[..., 1::2] * a.sin()
    out[..., 1::2] = x[..., ::2] * a.sin() + x[..., 1::2] * a.cos()
    return out


def pairs_two_apart(x: torch.Tensor) -> torch.Tensor:
    """Row i turned with row i+2 in blocks of four: neither halves nor neighbouring pairs."""
    *lead, d = x.shape
    blocks = x.reshape(*lead, d // 4, 2, 2).transpose(-1, -2).reshape(*lead, d)
    out = pairs_stacked(blocks)
    return out.reshape(*lead, d // 4, 2, 2).transpose(-1, -2).reshape(*lead, d)


@pytest.mark.parametrize(
    "rope", [written_in_place, pairs_two_apart], ids=["in_place", "another_pairing"]
)
def test_a_form_that_cannot_be_read_gives_no_evidence_never_none(rope: Rope) -> None:
    roles = dataflow_roles(Attention(rope).eval(), torch.randn(2, 6, 16))
    for key in ("q.weight", "k.weight"):
        assert roles[key].role in ("attn.q", "attn.k")
        assert roles[key].rope is None and roles[key].rope_rows == 0
        assert roles[key].rope_evidence.startswith("RoPE style not read")


def partial(rope: Rope) -> Rope:
    """RoPE in the given form on the first half of each head's rows, the rest passed through."""

    def turn(x: torch.Tensor) -> torch.Tensor:
        r = x.shape[-1] // 2
        return torch.cat([rope(x[..., :r]), x[..., r:]], -1)

    return turn


@pytest.mark.parametrize(("form", "style"), [(halves_negated, "rotate_half"),
                                             (pairs_stacked, "interleaved")])  # fmt: skip
def test_a_partial_rotary_is_read_with_the_rows_it_turns(form: Rope, style: str) -> None:
    roles = dataflow_roles(Attention(partial(form)).eval(), torch.randn(2, 6, 16))
    q = roles["q.weight"]
    assert (q.rope, q.rope_rows, q.head_dim) == (style, 4, HEAD)
    assert q.rope_evidence.endswith(
        "of the first 4 rows of each head turn together, the other 4 pass through"
    )


def test_partial_rotaries_in_other_layouts_keep_their_rows_and_say_so() -> None:
    """No whole-head permutation is right for a partial rotary: the pair says so and is low."""
    source = Attention(partial(pairs_stacked)).eval()
    target = Attention(partial(halves_negated)).eval()
    result = WeightMapper(source, target, dummy_input=torch.randn(2, 6, 16)).suggest_mapping()
    pair = result.pair("q.weight")
    assert pair.transform.is_identity and pair.confidence == "low"
    assert "partial rotary (4 rows of a head turn)" in pair.note


def test_at_one_position_rope_turns_nothing_so_nothing_is_read() -> None:
    roles = dataflow_roles(Attention(halves_negated).eval(), torch.randn(2, 1, 16))
    assert roles["q.weight"].rope is None
    assert "position 0" in roles["q.weight"].rope_evidence


def test_without_rope_the_style_is_none_and_says_why() -> None:
    roles = dataflow_roles(Attention(lambda y: y * 1.0).eval(), torch.randn(2, 6, 16))
    assert roles["q.weight"].rope == "none"
    assert (
        roles["q.weight"].rope_evidence == "no two rows of a head mix on the way to the attention"
    )


def test_an_unreadable_source_falls_back_to_its_names_and_says_so() -> None:
    """The source's rows turn in pairs, written so the recorder cannot see: the style comes
    from nothing, the pair keeps its rows, and the note says the source was not read."""
    torch.manual_seed(0)
    source, target = Attention(written_in_place).eval(), Attention(halves_negated).eval()
    x = torch.randn(2, 6, 16)
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping()
    pair = result.pair("q.weight")
    assert pair.transform.is_identity and pair.confidence != "high"
    assert pair.note.startswith("source's RoPE style not read")


class CachedKeys(Attention):
    """Keys rotated, then copied into a cache buffer the attention reads them from."""

    def __init__(self) -> None:
        super().__init__(halves_negated)
        self.register_buffer("cache", torch.zeros(2, 2, 6, HEAD), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = lambda y: y.view(b, t, d // HEAD, HEAD).transpose(1, 2)  # noqa: E731
        q, v = halves_negated(heads(self.q(x))), heads(self.v(x))
        k = self.cache.copy_(halves_negated(heads(self.k(x))))
        out = torch.softmax(q @ k.transpose(-1, -2) / HEAD**0.5, -1) @ v
        return self.o(out.transpose(1, 2).reshape(b, t, d))


def test_running_the_attention_again_never_writes_into_the_models_tensors() -> None:
    model = CachedKeys().eval()
    x = torch.randn(2, 6, 16)
    roles = dataflow_roles(model, x)
    assert roles["q.weight"].rope == "rotate_half"
    k = roles["k.weight"]
    assert k.rope is None and "writes into a tensor of the model" in k.rope_evidence
    # the cache holds what the forward pass wrote, not a probe
    with torch.no_grad():
        want = halves_negated(model.k(x).view(2, 6, 2, HEAD).transpose(1, 2))
    torch.testing.assert_close(model.cache, want)
