"""Split/merge proposals: fused qkv ↔ separate q/k/v (equal outputs both ways), experts."""

from __future__ import annotations

import math

import torch
from torch import nn

from weightmapper.engine import propose_multi
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.tensor_info import TensorInfo
from weightmapper.verify import check_outputs

D, HEADS = 16, 4


class SeparateAttention(nn.Module):
    """Self-attention with separate q/k/v projections; same function as nn.MultiheadAttention."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # registered v, k, q on purpose: names, not registration order, must settle the order
        self.v_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1)
        return self.out_proj((att @ v).transpose(1, 2).reshape(b, t, d))


class FusedBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(D, HEADS, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x, x, x, need_weights=False)[0]


class SeparateBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = SeparateAttention(D, HEADS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.attn(x)


class Stack(nn.Module):
    def __init__(self, block: type[nn.Module], n: int = 2) -> None:
        super().__init__()
        self.layers = nn.ModuleList(block() for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def _infos(sd: dict[str, torch.Tensor]) -> dict[str, TensorInfo]:
    return {k: TensorInfo.from_tensor(k, v) for k, v in sd.items()}


def _types(m: nn.Module) -> dict[str, str]:
    return {n: type(x).__name__ for n, x in m.named_modules()}


def _mapping(src: nn.Module, tgt: nn.Module) -> MappingResult:
    """Same-name keys pair one-to-one; everything else goes to propose_multi."""
    s_sd, t_sd = src.state_dict(), tgt.state_dict()
    pairs = [MatchedPair(k, k, 1.0) for k in s_sd if k in t_sd]
    multi = propose_multi(
        _infos({k: v for k, v in s_sd.items() if k not in t_sd}),
        _infos({k: v for k, v in t_sd.items() if k not in s_sd}),
        source_types=_types(src),
        target_types=_types(tgt),
    )
    return MappingResult(pairs, multi=multi)


def test_fused_qkv_to_separate_has_equal_outputs() -> None:
    src, tgt = Stack(FusedBlock).eval(), Stack(SeparateBlock).eval()
    mapping = _mapping(src, tgt)
    assert mapping.splits == {
        f"layers.{i}.attn.in_proj_{p}": [f"layers.{i}.attn.{r}_proj.{p}" for r in "qkv"]
        for i in (0, 1)
        for p in ("weight", "bias")
    }
    assert all(m.confidence == "high" and m.kind == "split" for m in mapping.multi)
    check = check_outputs(src, tgt, mapping, torch.randn(2, 5, D))
    assert check.equal, check.summary()


def test_separate_qkv_to_fused_has_equal_outputs() -> None:
    src, tgt = Stack(SeparateBlock).eval(), Stack(FusedBlock).eval()
    mapping = _mapping(src, tgt)
    assert mapping.merges["layers.1.attn.in_proj_weight"] == [
        "layers.1.attn.q_proj.weight",
        "layers.1.attn.k_proj.weight",
        "layers.1.attn.v_proj.weight",
    ]
    assert {m.transform.name for m in mapping.multi} == {"merge"}
    check = check_outputs(src, tgt, mapping, torch.randn(2, 5, D))
    assert check.equal, check.summary()


def test_layer_indices_pick_the_right_layer_among_equal_shapes() -> None:
    fused = {f"blocks.{i}.attn.qkv.weight": torch.zeros(24, 8) for i in range(3)}
    sep = {
        f"layers.{i}.self_attn.{r}.weight": torch.zeros(8, 8)
        for i in reversed(range(3))
        for r in ("query", "key", "value")
    }
    multi = propose_multi(_infos(fused), _infos(sep))
    assert {m.sources[0]: m.targets[0] for m in multi} == {
        f"blocks.{i}.attn.qkv.weight": f"layers.{i}.self_attn.query.weight" for i in range(3)
    }
    # no module types: square chunks leave the target layout open → low confidence
    assert all(m.confidence == "low" for m in multi)


def test_conv1d_fused_weight_gets_transpose_then_split() -> None:
    src = {"h.0.attn.c_attn.weight": torch.randn(8, 24), "h.0.attn.c_attn.bias": torch.randn(24)}
    tgt = {f"layers.0.attn.{r}_proj.{p}": torch.zeros(8, 8) for r in "qkv" for p in ["weight"]}
    tgt |= {f"layers.0.attn.{r}_proj.bias": torch.zeros(8) for r in "qkv"}
    types = {"layers.0.attn.q_proj": "Linear", "layers.0.attn.k_proj": "Linear"}
    types["layers.0.attn.v_proj"] = "Linear"
    multi = propose_multi(
        _infos(src), _infos(tgt), source_types={"h.0.attn.c_attn": "Conv1D"}, target_types=types
    )
    by_source = {m.sources[0]: m for m in multi}
    w = by_source["h.0.attn.c_attn.weight"]
    assert w.transform.name == "chain"
    assert [s["name"] for s in w.transform.params["steps"]] == ["transpose", "split"]
    assert w.confidence == "high"
    out = MappingResult([], multi=multi).convert(src)
    assert torch.equal(out["layers.0.attn.k_proj.weight"], src["h.0.attn.c_attn.weight"][:, 8:16].T)
    assert torch.equal(out["layers.0.attn.v_proj.bias"], src["h.0.attn.c_attn.bias"][16:])


def test_grouped_query_sizes_add_up() -> None:
    src = {"attn.qkv_proj.weight": torch.zeros(16, 8)}
    tgt = {
        "attn.q_proj.weight": torch.zeros(8, 8),
        "attn.k_proj.weight": torch.zeros(4, 8),
        "attn.v_proj.weight": torch.zeros(4, 8),
    }
    (m,) = propose_multi(_infos(src), _infos(tgt))
    assert m.transform.params == {"dim": 0, "sizes": [8, 4, 4]}
    assert m.confidence == "high"  # non-square chunks settle the layout


def test_only_exact_shapes_are_proposed() -> None:
    src = {"attn.qkv.weight": torch.zeros(25, 8)}
    tgt = {f"attn.{r}_proj.weight": torch.zeros(8, 8) for r in "qkv"}
    assert propose_multi(_infos(src), _infos(tgt)) == []


def test_unnamed_siblings_and_interleaved_layouts_are_low_confidence() -> None:
    src = {"attn.qkv.weight": torch.zeros(24, 8)}
    tgt = {f"attn.{n}.weight": torch.zeros(8, 8) for n in ("first", "second", "third")}
    (m,) = propose_multi(
        _infos(src),
        _infos(tgt),
        target_types={f"attn.{n}": "Linear" for n in ("first", "second", "third")},
    )
    assert m.targets == ("attn.first.weight", "attn.second.weight", "attn.third.weight")
    assert m.confidence == "low" and m.breakdown["order_settled"] == 0.0
    neox = {"layers.0.attention.query_key_value.weight": torch.zeros(24, 8)}
    tgt = {f"layers.0.attention.{r}_proj.weight": torch.zeros(8, 8) for r in "qkv"}
    types = {f"layers.0.attention.{r}_proj": "Linear" for r in "qkv"}
    (m,) = propose_multi(_infos(neox), _infos(tgt), target_types=types)
    assert m.confidence == "low"  # GPT-NeoX interleaves heads: a contiguous split may be wrong


def test_experts_stack_and_unstack() -> None:
    experts = {f"moe.experts.{i}.w1.weight": torch.randn(6, 4) for i in range(4)}
    experts |= {f"moe.experts.{i}.w2.weight": torch.randn(4, 6) for i in range(4)}
    stacked = {"moe.w1": torch.zeros(4, 6, 4), "moe.w2": torch.zeros(4, 4, 6)}
    multi = propose_multi(_infos(experts), _infos(stacked))
    merges = MappingResult([], multi=multi).merges
    assert merges == {
        "moe.w1": [f"moe.experts.{i}.w1.weight" for i in range(4)],
        "moe.w2": [f"moe.experts.{i}.w2.weight" for i in range(4)],
    }
    out = MappingResult([], multi=multi).convert(experts)
    assert torch.equal(out["moe.w1"][2], experts["moe.experts.2.w1.weight"])
    back = propose_multi(_infos(out), _infos(experts))
    assert {m.kind for m in back} == {"split"}
    again = MappingResult([], multi=back).convert(out)
    assert all(torch.equal(again[k], experts[k]) for k in experts)


def test_incomplete_expert_sets_are_not_stacked() -> None:
    experts = {f"moe.experts.{i}.w": torch.zeros(2, 2) for i in (0, 1, 3)}
    assert propose_multi(_infos(experts), _infos({"moe.w": torch.zeros(3, 2, 2)})) == []


def test_execution_order_orders_unnamed_projections() -> None:
    src = {"attn.qkv.weight": torch.zeros(24, 8)}
    names = ("a", "b", "c")
    tgt = {f"attn.{n}.weight": torch.zeros(8, 8) for n in names}
    ran = {"attn.c": 0, "attn.a": 1, "attn.b": 2}  # traced: c runs first
    (m,) = propose_multi(_infos(src), _infos(tgt), target_order=ran)
    assert m.targets == ("attn.c.weight", "attn.a.weight", "attn.b.weight")
    assert m.confidence == "low"


def test_fused_gate_up_splits_into_meta_w1_w3() -> None:
    src = {"layers.0.mlp.gate_up_proj.weight": torch.randn(12, 4)}
    tgt = {"layers.0.ff.w1.weight": torch.zeros(6, 4), "layers.0.ff.w3.weight": torch.zeros(6, 4)}
    (m,) = propose_multi(_infos(src), _infos(tgt))
    assert m.targets == ("layers.0.ff.w1.weight", "layers.0.ff.w3.weight")
    assert m.confidence == "high"
    out = MappingResult([], multi=[m]).convert(src)
    assert torch.equal(out["layers.0.ff.w1.weight"], src["layers.0.mlp.gate_up_proj.weight"][:6])


def test_stacked_w1_w3_merge_into_3d_gate_up() -> None:
    src = {"l.0.experts.w3": torch.randn(4, 6, 8), "l.0.experts.w1": torch.randn(4, 6, 8)}
    tgt = {"l.0.mlp.experts.gate_up_proj": torch.zeros(4, 12, 8)}
    (m,) = propose_multi(_infos(src), _infos(tgt))
    assert m.sources == ("l.0.experts.w1", "l.0.experts.w3")  # gate before up
    out = MappingResult([], multi=[m]).convert(src)
    want = torch.cat([src["l.0.experts.w1"], src["l.0.experts.w3"]], dim=1)
    assert torch.equal(out["l.0.mlp.experts.gate_up_proj"], want)


def test_per_expert_gate_and_up_concatenate_then_stack_both_ways() -> None:
    experts = {}
    for e in range(3):
        for w, shape in (("w1", (6, 4)), ("w2", (4, 6)), ("w3", (6, 4))):
            experts[f"moe.experts.{e}.{w}.weight"] = torch.randn(shape)
    stacked = {"moe.gate_up_proj": torch.zeros(3, 12, 4), "moe.down_proj": torch.zeros(3, 4, 6)}
    multi = propose_multi(_infos(experts), _infos(stacked))
    out = MappingResult([], multi=multi).convert(experts)
    gate_up = torch.cat([experts["moe.experts.1.w1.weight"], experts["moe.experts.1.w3.weight"]])
    assert torch.equal(out["moe.gate_up_proj"][1], gate_up)
    assert torch.equal(out["moe.down_proj"][2], experts["moe.experts.2.w2.weight"])
    back = propose_multi(_infos(out), _infos(experts))
    again = MappingResult([], multi=back).convert(out)
    assert set(again) == set(experts)
    assert all(torch.equal(again[k], experts[k]) for k in experts)


def test_mismatched_gate_up_sizes_are_not_proposed() -> None:
    src = {"layers.0.mlp.gate_up_proj.weight": torch.zeros(13, 4)}
    tgt = {"layers.0.ff.w1.weight": torch.zeros(6, 4), "layers.0.ff.w3.weight": torch.zeros(6, 4)}
    assert propose_multi(_infos(src), _infos(tgt)) == []


def _info(name: str, shape: tuple[int, ...]) -> TensorInfo:
    return TensorInfo(name, shape, "float32")


def test_deep_stack_pairs_each_fused_tensor_with_its_own_layer() -> None:
    # Every layer's q/k/v set fits every layer's fused tensor by shape; the layer index
    # must decide, including for a layer whose own fused tensor is missing.
    layers = 12
    src = {
        f"layers.{i}.attn.{p}.weight": _info(f"layers.{i}.attn.{p}.weight", (D, D))
        for i in range(layers)
        for p in ("q_proj", "k_proj", "v_proj")
    }
    tgt = {
        f"layers.{i}.attn.qkv_proj.weight": _info(f"layers.{i}.attn.qkv_proj.weight", (3 * D, D))
        for i in range(layers)
        if i != 5
    }
    multi = propose_multi(src, tgt)
    merged = {m.targets[0]: m.sources for m in multi}
    for i in range(layers):
        if i == 5:
            continue
        want = tuple(f"layers.{i}.attn.{p}.weight" for p in ("q_proj", "k_proj", "v_proj"))
        assert merged[f"layers.{i}.attn.qkv_proj.weight"] == want
    assert len(multi) == layers - 1


def test_roles_name_the_parts_when_names_do_not() -> None:
    # litgpt's gated MLP is fc_1 (gate), fc_2 (up): nothing in the names says so, their roles
    # do (its naming convention, or a forward pass). Registered up first on purpose.
    src = {"h.0.mlp.gate_up_proj.weight": torch.randn(12, 4)}
    tgt = {"h.0.mlp.fc_2.weight": torch.zeros(6, 4), "h.0.mlp.fc_1.weight": torch.zeros(6, 4)}
    assert propose_multi(_infos(src), _infos(tgt)) == []
    roles = {"h.0.mlp.fc_1.weight": "mlp.gate", "h.0.mlp.fc_2.weight": "mlp.up"}
    (m,) = propose_multi(_infos(src), _infos(tgt), target_roles=roles)
    assert m.targets == ("h.0.mlp.fc_1.weight", "h.0.mlp.fc_2.weight")
    out = MappingResult([], multi=[m]).convert(src)
    assert torch.equal(out["h.0.mlp.fc_1.weight"], src["h.0.mlp.gate_up_proj.weight"][:6])
    # and the merge the other way
    back = propose_multi(_infos(out), _infos(src), source_roles=roles)
    assert [b.kind for b in back] == ["merge"]
    assert back[0].sources == ("h.0.mlp.fc_1.weight", "h.0.mlp.fc_2.weight")
