"""Proof by search: for each layout family a first mapping that is wrong, fixed by the search.

Every case is a pair of small hand-written modules computing the same function with their
weights laid out differently; the mapping given to the search is the naive one a name- and
shape-only tool produces.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightmapper.calls import ModelCall, encoder_decoder, images, token_ids
from weightmapper.errors import ForwardError
from weightmapper.proof import prove
from weightmapper.report import build_report, validate_report
from weightmapper.result import MappingResult, MatchedPair, MultiPair
from weightmapper.transforms import TransformSpec
from weightmapper.verify import settle_ambiguous

D, HEADS, HD, T = 16, 2, 8, 6


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(b, h, t, d) q, k, v → causal attention output (b, t, h·d)."""
    t = q.shape[2]
    att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    out = att.softmax(-1) @ v
    return out.transpose(1, 2).reshape(q.shape[0], t, -1)


def _split_heads(y: torch.Tensor, heads: int) -> torch.Tensor:
    b, t, _ = y.shape
    return y.view(b, t, heads, -1).transpose(1, 2)


def _angles(t: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    f = torch.outer(torch.arange(t).float(), inv)  # (t, d/2)
    return f.cos(), f.sin()


def rope_half(x: torch.Tensor) -> torch.Tensor:
    """HF style: rotate (x_i, x_{i+d/2})."""
    cos, sin = _angles(x.shape[2], x.shape[3])
    x1, x2 = x.chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def rope_pairs(x: torch.Tensor) -> torch.Tensor:
    """Meta style: rotate (x_2i, x_2i+1)."""
    cos, sin = _angles(x.shape[2], x.shape[3])
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], -1).flatten(-2)


class SeparateAttention(nn.Module):
    """q, k, v, o as separate Linears; GQA when kv_heads < heads; optional RoPE."""

    def __init__(self, heads: int = HEADS, kv_heads: int | None = None, rope=None) -> None:
        super().__init__()
        self.num_heads, self.num_key_value_heads = heads, kv_heads or heads
        kv = self.num_key_value_heads * HD
        self.q_proj, self.k_proj = nn.Linear(D, heads * HD), nn.Linear(D, kv)
        self.v_proj, self.o_proj = nn.Linear(D, kv), nn.Linear(heads * HD, D)
        self.rope = rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = _split_heads(self.q_proj(x), self.num_heads)
        k = _split_heads(self.k_proj(x), self.num_key_value_heads)
        v = _split_heads(self.v_proj(x), self.num_key_value_heads)
        if self.rope is not None:
            q, k = self.rope(q), self.rope(k)
        rep = self.num_heads // self.num_key_value_heads
        k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
        return self.o_proj(_attend(q, k, v))


class FusedPerHead(nn.Module):
    """One qkv Linear whose rows run per head: [q_0 k_0 v_0 q_1 k_1 v_1] (BLOOM / NeoX style)."""

    def __init__(self) -> None:
        super().__init__()
        self.heads = HEADS
        self.qkv = nn.Linear(D, 3 * D)
        self.out = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        y = self.qkv(x).view(b, t, HEADS, 3, HD).permute(3, 0, 2, 1, 4)
        return self.out(_attend(y[0], y[1], y[2]))


class FusedPerGroup(nn.Module):
    """GQA with one fused Linear laid out per key/value group: [q q k v | q q k v]."""

    def __init__(self, heads: int = 4, kv_heads: int = 2) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = heads, kv_heads
        self.wqkv = nn.Linear(D, (heads + 2 * kv_heads) * HD)
        self.wo = nn.Linear(heads * HD, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        per = self.n_heads // self.n_kv_heads
        y = self.wqkv(x).view(b, t, self.n_kv_heads, per + 2, HD)
        q = y[:, :, :, :per].reshape(b, t, self.n_heads, HD).transpose(1, 2)
        k = y[:, :, :, per].transpose(1, 2).repeat_interleave(per, 1)
        v = y[:, :, :, per + 1].transpose(1, 2).repeat_interleave(per, 1)
        return self.wo(_attend(q, k, v))


class FusedConcat(nn.Module):
    """One fused Linear holding [Q; K; V] concatenated (litgpt style); GQA when kv_heads < heads."""

    def __init__(self, heads: int = HEADS, kv_heads: int | None = None) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = heads, kv_heads or heads
        self.wqkv = nn.Linear(D, (heads + 2 * self.n_kv_heads) * HD)
        self.wo = nn.Linear(heads * HD, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kv, per = self.n_kv_heads * HD, self.n_heads // self.n_kv_heads
        q, k, v = self.wqkv(x).split([self.n_heads * HD, kv, kv], -1)
        k = _split_heads(k, self.n_kv_heads).repeat_interleave(per, 1)
        v = _split_heads(v, self.n_kv_heads).repeat_interleave(per, 1)
        return self.wo(_attend(_split_heads(q, self.n_heads), k, v))


class Net(nn.Module):
    """Embedding → attention → head: the same frame around every attention variant."""

    def __init__(self, attn: nn.Module, layers: int = 1) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, D)
        self.layers = nn.ModuleList([attn] + [_clone_fresh(attn) for _ in range(layers - 1)])
        self.head = nn.Linear(D, 32)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = x + layer(x)
        return self.head(x)


def _clone_fresh(m: nn.Module) -> nn.Module:
    c = copy.deepcopy(m)
    for p in c.parameters():
        nn.init.normal_(p, std=0.3)
    return c


def _naive(src: nn.Module, tgt: nn.Module, renames: dict[str, str], multi=()) -> MappingResult:
    """Source → target by renamed modules, identity transforms: the naive first pass."""
    s_sd, t_sd = src.state_dict(), tgt.state_dict()
    in_multi = {k for m in multi for k in m.sources}
    pairs = []
    for key, tensor in s_sd.items():
        mod, _, param = key.rpartition(".")
        head, _, last = mod.rpartition(".")
        t_key = ".".join(x for x in (head, renames.get(last, last), param) if x)
        if t_key in t_sd and key not in in_multi:
            shapes = {"source_shape": tuple(tensor.shape), "target_shape": tuple(t_sd[t_key].shape)}
            pairs.append(MatchedPair(key, t_key, 1.0, **shapes))
    return MappingResult(pairs, multi=list(multi))


def _split(source: str, targets: list[str], sizes: list[int]) -> MultiPair:
    return MultiPair(
        (source,), tuple(targets), TransformSpec("split", {"dim": 0, "sizes": sizes}), 1.0
    )


def _seeded(*models: nn.Module) -> None:
    torch.manual_seed(0)
    for m in models:
        for p in m.parameters():
            nn.init.normal_(p, std=0.3)


IDS = token_ids(2, T, 32)


def _fused_split_case(layers: int) -> tuple[nn.Module, nn.Module, MappingResult]:
    src, tgt = Net(FusedPerHead(), layers), Net(SeparateAttention(), layers)
    _seeded(src, tgt)
    multi = []
    for i in range(layers):
        for p in ("weight", "bias"):
            multi.append(
                _split(
                    f"layers.{i}.qkv.{p}",
                    [f"layers.{i}.{n}_proj.{p}" for n in "qkv"],
                    [D, D, D],
                )
            )
    return src, tgt, _naive(src, tgt, {"out": "o_proj"}, multi)


def test_fused_rows_per_head_are_found() -> None:
    src, tgt, mapping = _fused_split_case(layers=2)
    proof = prove(src, tgt, mapping, IDS)
    assert proof.state == "proven_equal", proof.summary()
    assert proof.check.max_abs_diff < 1e-5
    assert len(proof.fixes) == 2 and all("rows per head" in f for f in proof.fixes)
    # the second layer reuses what the first taught: one trial
    steps = proof.mapping.multi[0].transform.params["steps"]
    assert steps[0]["name"] == "interleave_heads"
    assert proof.mapping.status.state == "proven_equal"
    # the proven mapping is data: loading its conversion gives equal outputs directly
    tgt.load_state_dict(proof.mapping.convert(src.state_dict()))
    torch.testing.assert_close(tgt(IDS), src(IDS))


def test_fused_rows_per_key_value_group_are_found() -> None:
    src = Net(FusedPerGroup(heads=4, kv_heads=2))
    tgt = Net(SeparateAttention(heads=4, kv_heads=2))
    _seeded(src, tgt)
    multi = [
        _split(f"layers.0.wqkv.{p}", [f"layers.0.{n}_proj.{p}" for n in "qkv"], [32, 16, 16])
        for p in ("weight", "bias")
    ]
    mapping = _naive(src, tgt, {"wo": "o_proj"}, multi)
    proof = prove(src, tgt, mapping, IDS)
    assert proof.equal, proof.summary()
    assert any("key/value group" in f for f in proof.fixes)


@pytest.mark.parametrize(
    ("source", "target", "layout"),
    [
        (FusedPerHead, lambda: FusedConcat(), "2 heads, to concat"),
        (lambda: FusedPerGroup(4, 2), lambda: FusedConcat(4, 2), "2 key/value groups"),
    ],
)
def test_fused_rows_mapped_whole_onto_another_fused_layout_are_found(
    source, target, layout
) -> None:
    src, tgt = Net(source(), layers=2), Net(target(), layers=2)
    _seeded(src, tgt)
    # the fused tensor mapped whole, rows as they are: loads, computes otherwise
    mapping = _naive(src, tgt, {"qkv": "wqkv", "out": "wo"})
    assert any(p.target == "layers.1.wqkv.weight" for p in mapping.pairs)
    proof = prove(src, tgt, mapping, IDS)
    assert proof.equal, proof.summary()
    assert len(proof.fixes) == 2 and all(layout in f for f in proof.fixes), proof.fixes
    tgt.load_state_dict(proof.mapping.convert(src.state_dict()))
    torch.testing.assert_close(tgt(IDS), src(IDS))


@pytest.mark.parametrize(
    ("src_rope", "tgt_rope", "direction"),
    [(rope_pairs, rope_half, "rotate_half"), (rope_half, rope_pairs, "interleaved")],
)
def test_rope_row_order_is_found_in_both_directions(src_rope, tgt_rope, direction) -> None:
    src = Net(SeparateAttention(rope=src_rope), layers=2)
    tgt = Net(SeparateAttention(rope=tgt_rope), layers=2)
    _seeded(src, tgt)
    mapping = _naive(src, tgt, {})
    proof = prove(src, tgt, mapping, IDS)
    assert proof.equal, proof.summary()
    assert len(proof.fixes) == 2
    assert all(f"to={direction}" in f and "q_proj" in f and "k_proj" in f for f in proof.fixes)
    q = proof.mapping.pair("layers.1.q_proj.weight").transform
    assert q == TransformSpec("rope_permute", {"head_dim": HD, "to": direction})


class InOutLinear(nn.Module):
    """A Linear stored (in, out) like GPT-2's Conv1D: y = x @ W + b."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n, n))
        self.bias = nn.Parameter(torch.zeros(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight + self.bias


class Stack(nn.Module):
    def __init__(self, make) -> None:
        super().__init__()
        self.fc1, self.fc2 = make(D), make(D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def test_square_transposes_are_found() -> None:
    src, tgt = Stack(InOutLinear), Stack(lambda n: nn.Linear(n, n))
    _seeded(src, tgt)
    x = torch.randn(3, D)
    proof = prove(src, tgt, _naive(src, tgt, {}), x)
    assert proof.equal, proof.summary()
    assert [f.split(":")[0] for f in proof.fixes] == ["fc1", "fc2"]
    assert proof.mapping.pair("fc1.weight").transform.name == "transpose"


class FusedUpGate(nn.Module):
    """A gated MLP whose fused projection holds [up; gate] (the order some libraries use)."""

    def __init__(self, f: int = 24) -> None:
        super().__init__()
        self.w_in = nn.Linear(D, 2 * f)
        self.w_out = nn.Linear(f, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, gate = self.w_in(x).chunk(2, -1)
        return self.w_out(F.silu(gate) * up)


class GatedMLP(nn.Module):
    def __init__(self, f: int = 24) -> None:
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(D, f), nn.Linear(D, f)
        self.down_proj = nn.Linear(f, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def test_gate_up_order_is_found() -> None:
    src, tgt = FusedUpGate(), GatedMLP()
    _seeded(src, tgt)
    multi = [
        _split(f"w_in.{p}", [f"gate_proj.{p}", f"up_proj.{p}"], [24, 24])
        for p in ("weight", "bias")
    ]
    mapping = _naive(src, tgt, {"w_out": "down_proj"}, multi)
    proof = prove(src, tgt, mapping, torch.randn(2, 3, D))
    assert proof.equal, proof.summary()
    assert all("reorder" in f for f in proof.fixes), proof.summary()
    assert proof.mapping.multi[0].targets == ("up_proj.weight", "gate_proj.weight")


def test_separate_gate_and_up_swapped_are_found() -> None:
    src, tgt = GatedMLP(), GatedMLP()
    _seeded(src, tgt)
    swapped = _naive(src, tgt, {"gate_proj": "up_proj", "up_proj": "gate_proj"})
    assert swapped["gate_proj.weight"] == "up_proj.weight"
    proof = prove(src, tgt, swapped, torch.randn(2, D))
    assert proof.equal, proof.summary()
    assert proof.fixes == (": swap gate_proj ↔ up_proj",)


class ReluMLP(nn.Module):
    def __init__(self, act) -> None:
        super().__init__()
        self.act = act
        self.fc1, self.fc2 = nn.Linear(D, 24), nn.Linear(24, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, act) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(D)
        self.mlp = ReluMLP(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def test_no_fix_names_the_module_and_what_was_tried() -> None:
    src, tgt = Block(F.relu), Block(F.gelu)  # different functions: no layout can fix this
    _seeded(src, tgt)
    proof = prove(src, tgt, _naive(src, tgt, {}), torch.randn(2, D))
    assert proof.state == "differs"
    assert proof.module == "mlp" and proof.source_module == "mlp"
    assert proof.status.label() == "differs at mlp"
    assert proof.alternatives_tried == len(proof.tried_at) > 0
    assert any("mlp.fc1.weight → mlp.fc1.weight" in p for p in proof.pairs_at)
    assert "mlp" in proof.summary()


def test_budget_bounds_the_search() -> None:
    src, tgt, mapping = _fused_split_case(layers=1)
    proof = prove(src, tgt, mapping, IDS, budget=2)
    assert proof.state == "differs" and proof.budget_spent
    assert proof.forward_passes == 2 and proof.alternatives_tried == 1
    assert "budget" in proof.summary()


def test_settle_ambiguous_builds_on_the_search() -> None:
    src, tgt = Stack(InOutLinear), Stack(lambda n: nn.Linear(n, n))
    _seeded(src, tgt)
    naive = _naive(src, tgt, {})
    low = MappingResult([replace(p, confidence="low") for p in naive.pairs])
    settled, check = settle_ambiguous(src, tgt, low, torch.randn(3, D))
    assert check.equal
    assert settled.pair("fc2.weight").confidence == "high"


class KwNet(nn.Module):
    """Keyword signature and a ModelOutput-like dict return."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, *, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"last_hidden_state": self.proj(hidden), "aux": hidden}


class TupleNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, self.proj(x)


def test_source_and_target_called_differently() -> None:
    src, tgt = KwNet(), TupleNet()
    x = torch.randn(2, D)
    proof = prove(
        src,
        tgt,
        _naive(src, tgt, {}),
        ModelCall(kwargs={"hidden": x}),
        target_inputs=ModelCall(args=(x,), output=1),
    )
    assert proof.equal, proof.summary()
    assert proof.source_input == "hidden=(2, 16) float32"
    assert proof.target_input == "(2, 16) float32"


def test_a_failing_forward_names_the_side_and_the_input() -> None:
    src, tgt = Stack(InOutLinear), Stack(lambda n: nn.Linear(n, n))
    with pytest.raises(ForwardError, match=r"source network's forward failed on input \(3, 5\)"):
        prove(src, tgt, _naive(src, tgt, {}), torch.randn(3, 5))


def test_input_builders_are_deterministic() -> None:
    assert torch.equal(token_ids(1, 4, 10), token_ids(1, 4, 10))
    assert token_ids(2, 5, 7).shape == (2, 5) and int(token_ids(2, 5, 7).max()) < 7
    assert images(1, 3, 8).shape == (1, 3, 8, 8)
    call = encoder_decoder(1, 6, 3)
    assert set(call.kwargs) == {"input_ids", "decoder_input_ids"}
    assert call.kwargs["decoder_input_ids"].shape == (1, 3)


def test_a_pair_the_first_pass_missed_is_filled_from_unused_source_tensors() -> None:
    src, tgt = Block(F.relu), Block(F.relu)
    _seeded(src, tgt)
    partial = MappingResult(
        [p for p in _naive(src, tgt, {}).pairs if not p.source.startswith("norm")]
    )
    assert prove(src, tgt, partial, torch.randn(2, D), budget=1).module == "norm"
    proof = prove(src, tgt, partial, torch.randn(2, D))
    assert proof.equal, proof.summary()
    assert proof.fixes == ("norm: map norm → norm",)
    assert proof.mapping["norm.weight"] == "norm.weight"
    assert not proof.mapping.unmatched_target
    # a fill is labelled low (the scores did not find it) and its report is schema-valid
    filled = next(p for p in proof.mapping.pairs if p.source == "norm.weight")
    assert filled.confidence == "low" and filled.stage == "proof"
    validate_report(build_report(proof.mapping, hash_inputs=False, proof=proof))


def test_a_split_the_first_pass_missed_is_filled_in_the_right_order() -> None:
    src, tgt = FusedUpGate(), GatedMLP()
    _seeded(src, tgt)
    mapping = _naive(src, tgt, {"w_out": "down_proj"})  # w_in left unmapped
    assert not any(p.source.startswith("w_in") for p in mapping.pairs)
    proof = prove(src, tgt, mapping, torch.randn(2, 3, D))
    assert proof.equal, proof.summary()
    assert len(proof.fixes) == 1 and "split w_in into up_proj + gate_proj" in proof.fixes[0]
    assert [m.targets for m in proof.mapping.multi] == [
        ("up_proj.weight", "gate_proj.weight"),
        ("up_proj.bias", "gate_proj.bias"),
    ]


class Chain(nn.Module):
    """Three same-shape layers in a row: shape alone cannot tell which is which."""

    def __init__(self) -> None:
        super().__init__()
        self.l0, self.l1, self.l2 = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(torch.tanh(self.l0(x)))))


def test_an_alignment_shifted_by_one_is_moved_back_block_by_block() -> None:
    src, tgt = Chain(), Chain()
    _seeded(src, tgt)
    shifted = _naive(src, tgt, {"l0": "l1", "l1": "l2", "l2": "absent"})  # l2 left unused
    assert shifted["l0.weight"] == "l1.weight" and "l2.weight" not in shifted
    proof = prove(src, tgt, shifted, torch.randn(3, D))
    assert proof.equal, proof.summary()
    assert proof.fixes == (
        "l0: move l0 from l1 → l0",
        "l1: move l1 from l2 → l1",
        "l2: map l2 → l2",
    )


class KerasStyleConv(nn.Module):
    """A convolution whose kernel is stored (kh, kw, in, out), as TF/Keras store it."""

    def __init__(self) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(3, 3, 4, 8))
        self.bias = nn.Parameter(torch.zeros(8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel.permute(3, 2, 0, 1), self.bias, padding=1)


class ConvNet(nn.Module):
    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_a_missed_pair_in_another_dim_layout_is_filled_with_its_permutation() -> None:
    src, tgt = ConvNet(KerasStyleConv()), ConvNet(nn.Conv2d(4, 8, 3, padding=1))
    _seeded(src, tgt)
    proof = prove(src, tgt, MappingResult([]), torch.randn(1, 4, 6, 6))
    assert proof.equal, proof.summary()
    spec = proof.mapping.pair("conv.kernel").transform
    assert spec == TransformSpec("permute", {"dims": [3, 2, 0, 1]})


class RMSNorm(nn.Module):
    """RMS norm whose weight is stored as an offset from one (``1 + w``) when ``offset``."""

    def __init__(self, offset: bool) -> None:
        super().__init__()
        self.offset = offset
        self.weight = nn.Parameter(torch.zeros(D) if offset else torch.ones(D))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return x * (1 + self.weight if self.offset else self.weight)


class NormThenLinear(nn.Module):
    def __init__(self, offset: bool) -> None:
        super().__init__()
        self.norm, self.proj = RMSNorm(offset), nn.Linear(D, D)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x))


def test_a_norm_weight_stored_as_an_offset_is_found() -> None:
    src, tgt = NormThenLinear(offset=True), NormThenLinear(offset=False)
    _seeded(src, tgt)
    proof = prove(src, tgt, _naive(src, tgt, {}), torch.randn(2, D))
    assert proof.equal, proof.summary()
    assert proof.fixes == ("norm: norm offset +1 on norm.weight → norm.weight",)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, D)
        self.block = Block(F.relu)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.block(self.embed(ids))


class EncoderWithHead(nn.Module):
    """An encoder and what comes after it: the whole network computes more than the encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()
        self.head = nn.Linear(D, 5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(ids))


def test_an_encoder_kept_from_a_longer_network_is_named_as_a_different_function() -> None:
    src, tgt = EncoderWithHead(), Encoder()
    _seeded(src, tgt)
    mapping = MappingResult.from_simple(
        {k: k.removeprefix("encoder.") for k in src.state_dict() if k.startswith("encoder.")}
    )
    proof = prove(src, tgt, mapping, IDS)
    assert proof.state == "differs" and proof.alternatives_tried == 0
    assert proof.computes_source == "encoder" and proof.output_shapes == ((2, T, D), (2, T, 5))
    assert proof.status.label() == "differs at (the whole network)"
    assert "compute different functions" in proof.status.detail
    assert "source's encoder" in proof.summary()


class NoNormBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = ReluMLP(F.relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def test_an_unmapped_module_is_named_as_the_cause() -> None:
    src, tgt = NoNormBlock(), Block(F.relu)  # the source has nothing to fill the norm with
    _seeded(src, tgt)
    proof = prove(src, tgt, _naive(src, tgt, {}), torch.randn(2, D))
    assert proof.state == "differs" and proof.module == "norm"
    assert proof.unmapped == ("norm.bias", "norm.weight")
    assert "norm is not mapped" in proof.status.detail
    assert "no unused source tensor fills them" in proof.status.detail


def test_a_new_head_on_the_target_is_named_with_the_shapes() -> None:
    src, tgt = Encoder(), EncoderWithHead()  # the target adds a head the source does not have
    _seeded(src, tgt)
    mapping = MappingResult.from_simple({k: f"encoder.{k}" for k in src.state_dict()})
    proof = prove(src, tgt, mapping, IDS)
    assert proof.state == "differs" and proof.module == "head"
    assert proof.status.label() == "differs at head"
    assert "head is not mapped" in proof.status.detail
    assert "differ in shape too (target (2, 6, 5), source (2, 6, 16))" in proof.status.detail
