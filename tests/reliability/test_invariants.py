"""Mapping invariants on random model pairs (hypothesis): what every MappingResult must obey.

A random source network is drawn (linear, conv, norm, embedding layers with random sizes,
nested under random names); the target is the same network edited at random: modules
renamed, dropped, added, resized, reordered. Whatever the mapper decides, it must hold:

1. one-to-one: no source and no target key is used twice (split/merge only as ``multi``);
2. every pair is shape-compatible under its recorded transform, and the converted tensors
   have the target's shapes;
3. no pair or multi-pair scores below the threshold (the strategy's floor for
   ``conservative``);
4. every key is accounted for exactly once: mapped, or unmatched with a reason;
5. the JSON form round-trips.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from weightmapper.mapper import WeightMapper
from weightmapper.result import MappingResult, UnmatchedReason
from weightmapper.settings import CONSERVATIVE_FLOOR
from weightmapper.transforms import output_shapes

pytestmark = pytest.mark.reliability

EXAMPLES = 150
NAMES = ("conv", "fc", "proj", "norm", "bn", "embed", "dense", "attn", "mlp", "head", "stem")
SYNONYMS = {"fc": "linear", "conv": "convolution", "norm": "ln", "bn": "batchnorm"}

LayerSpec = tuple[str, tuple[int, ...]]


@st.composite
def layer(draw: st.DrawFn) -> LayerSpec:
    """→ (layer kind, two sizes); the kinds cover transposed layouts and fused attention."""
    kind = draw(
        st.sampled_from(
            [
                "linear",
                "linear",
                "conv",
                "layernorm",
                "batchnorm",
                "embed",
                "fused_attn",
                "split_attn",
                "gpt_conv1d",
            ]
        )
    )
    dims = tuple(draw(st.lists(st.sampled_from([2, 3, 4, 6, 8]), min_size=2, max_size=2)))
    return kind, dims


@st.composite
def network(draw: st.DrawFn) -> list[tuple[str, LayerSpec]]:
    """→ [(dotted module path, layer spec)] of a random network, paths unique."""
    n = draw(st.integers(1, 10))
    out: list[tuple[str, LayerSpec]] = []
    for i in range(n):
        block = draw(st.sampled_from(["", "encoder.", "blocks.0.", "blocks.1.", "head."]))
        name = f"{block}{draw(st.sampled_from(NAMES))}{i}"
        out.append((name, draw(layer())))
    return out


@st.composite
def edited(draw: st.DrawFn, net: list[tuple[str, LayerSpec]]) -> list[tuple[str, LayerSpec]]:
    """A network → the same network with random renames, drops, additions, resizes, moves."""
    out = []
    for name, spec in net:
        action = draw(
            st.sampled_from(["keep", "keep", "rename", "prefix", "drop", "resize", "swap_layout"])
        )
        if action == "drop":
            continue
        if action == "swap_layout":  # fused qkv ↔ separate q/k/v, Conv1D ↔ Linear
            spec = (_SWAPS.get(spec[0], spec[0]), spec[1])
        if action == "rename":
            for a, b in SYNONYMS.items():
                name = name.replace(a, b)
        elif action == "prefix":
            name = "model." + name
        elif action == "resize":
            spec = (spec[0], (spec[1][0] + 1, spec[1][1]))
        out.append((name, spec))
    if draw(st.booleans()):
        out.append(("extra.new_head", draw(layer())))
    if len(out) > 1 and draw(st.booleans()):
        i, j = draw(st.integers(0, len(out) - 1)), draw(st.integers(0, len(out) - 1))
        out[i], out[j] = out[j], out[i]
    return out


_SWAPS = {
    "fused_attn": "split_attn",
    "split_attn": "fused_attn",
    "gpt_conv1d": "linear",
    "linear": "gpt_conv1d",
}


def build(net: list[tuple[str, LayerSpec]]) -> nn.Module:
    """[(path, spec)] → an nn.Module holding those layers under those dotted paths."""
    root = nn.Module()
    for path, (kind, (a, b)) in net:
        parent = root
        *parents, leaf = path.split(".")
        for p in parents:
            if not hasattr(parent, p):
                parent.add_module(p, nn.Module())
            parent = getattr(parent, p)
        if hasattr(parent, leaf):
            continue
        parent.add_module(leaf, _layer(kind, a, b))
    return root


def _layer(kind: str, a: int, b: int) -> nn.Module:
    if kind == "linear":
        return nn.Linear(a, b)
    if kind == "conv":
        return nn.Conv2d(a, b, 3)
    if kind == "layernorm":
        return nn.LayerNorm(a)
    if kind == "batchnorm":
        return nn.BatchNorm2d(a)
    if kind == "gpt_conv1d":  # GPT-2's Conv1D: a Linear with its weight stored transposed
        from transformers.pytorch_utils import Conv1D

        return Conv1D(b, a)
    if kind in ("fused_attn", "split_attn"):
        m = nn.Module()
        names = ["qkv"] if kind == "fused_attn" else ["q_proj", "k_proj", "v_proj"]
        for n in names:
            m.add_module(n, nn.Linear(a, a * 3 if n == "qkv" else a))
        m.add_module("out_proj", nn.Linear(a, a))
        return m
    return nn.Embedding(a * 4, b)


def check_invariants(
    result: MappingResult, src: nn.Module, tgt: nn.Module, threshold: float, strategy: str
) -> None:
    """MappingResult + the two modules + settings → AssertionError on any broken invariant."""
    s_shapes = {k: tuple(v.shape) for k, v in src.state_dict().items()}
    t_shapes = {k: tuple(v.shape) for k, v in tgt.state_dict().items()}
    used_s = [p.source for p in result.pairs] + [s for m in result.multi for s in m.sources]
    used_t = [p.target for p in result.pairs] + [t for m in result.multi for t in m.targets]
    # 1. one-to-one, except declared split/merge
    assert len(used_s) == len(set(used_s)), f"a source key is mapped twice: {used_s}"
    assert len(used_t) == len(set(used_t)), f"a target key receives twice: {used_t}"
    # 2. shape-compatible under the recorded transform
    floor = max(threshold, CONSERVATIVE_FLOOR) if strategy == "conservative" else threshold
    for p in result.pairs:
        assert p.source in s_shapes and p.target in t_shapes, p
        assert output_shapes(p.transform, [s_shapes[p.source]]) == [t_shapes[p.target]], p
        # 3. nothing below the threshold
        assert p.score >= floor - 1e-9, f"{p.source} → {p.target} scored {p.score} < {floor}"
    for m in result.multi:
        produced = output_shapes(m.transform, [s_shapes[s] for s in m.sources])
        assert produced == [t_shapes[t] for t in m.targets], m
        assert m.score >= floor - 1e-9, m
    # 4. every key accounted for exactly once, every leftover with a reason
    un_s = [u.name for u in result.unmatched_source]
    un_t = [u.name for u in result.unmatched_target]
    assert sorted(used_s + un_s) == sorted(s_shapes), "source keys not accounted for once"
    assert sorted(used_t + un_t) == sorted(t_shapes), "target keys not accounted for once"
    for u in (*result.unmatched_source, *result.unmatched_target):
        assert isinstance(u.reason, UnmatchedReason) and u.reason.value, u
    # converted tensors really have the target's shapes
    converted = result.convert(src.state_dict())
    assert {k: tuple(v.shape) for k, v in converted.items()} == {k: t_shapes[k] for k in converted}
    # 5. the JSON record round-trips
    assert MappingResult.from_dict(result.to_dict()).to_json() == result.to_json()


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,  # the same examples in every CI run
    # ``tally`` is a plain session-wide counter: sharing it across examples is intended.
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(
    data=st.data(),
    threshold=st.sampled_from([0.0, 0.3, 0.5, 0.6, 0.8, 0.95]),
    strategy=st.sampled_from(["best_match", "best_match", "conservative", "shape_only"]),
)
def test_mapping_invariants(
    data: st.DataObject, threshold: float, strategy: str, tally: dict[str, dict[str, int]]
) -> None:
    src_net = data.draw(network(), label="source")
    tgt_net = data.draw(st.one_of(edited(src_net), network()), label="target")
    torch.manual_seed(0)
    src, tgt = build(src_net), build(tgt_net)
    result = WeightMapper(src, tgt).suggest_mapping(threshold=threshold, strategy=strategy)
    check_invariants(result, src, tgt, threshold, strategy)
    tally["invariants: random model pairs mapped and checked"][strategy] += 1
    checked = tally["invariants: decisions checked"]
    checked["pairs"] += len(result.pairs)
    checked["pairs with a non-identity transform"] += sum(
        not p.transform.is_identity for p in result.pairs
    )
    checked["split/merge pairs"] += len(result.multi)
    checked["unmatched keys (each with a reason)"] += len(result.unmatched_source) + len(
        result.unmatched_target
    )
