"""Rule export: few rules, exact reproduction, and every format usable as its loader expects."""

from __future__ import annotations

import re

import pytest

from weightmapper.errors import MappingError
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.rules import (
    FORMATS,
    apply_rules_sequentially,
    compress_mapping,
    format_rules,
)
from weightmapper.transforms import TransformSpec


def test_deeper_source_keeps_extra_layers_out_of_the_rules() -> None:
    # A 6-layer source onto a 4-layer target: layers 4 and 5 stay unmatched.
    src = [f"h.{i}.mlp.{n}" for i in range(6) for n in ("weight", "bias")]
    mapping = {k: k.replace("h.", "blocks.", 1) for k in src if int(k.split(".")[1]) < 4}
    rules = compress_mapping(mapping, source_keys=src)
    assert rules.verified, rules.problems
    assert len(rules.rules) == 1
    assert rules.apply("h.5.mlp.weight") is None
    assert rules.rules[0].pattern == r"h\.(0|1|2|3)\.(.+)"


def test_two_layer_indices_are_lifted_and_expanded_for_transformers() -> None:
    src = [f"stages.{s}.blocks.{b}.conv.weight" for s in range(3) for b in range(4)]
    mapping = {k: re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"layers.\2.stage.\1", k) for k in src}
    rules = compress_mapping(mapping)
    assert rules.verified and len(rules.rules) == 1
    assert rules.rules[0].pattern == r"stages\.(\d+)\.blocks\.(\d+)\.(.+)"
    assert rules.rules[0].replacement == r"layers.\2.stage.\1.\3"
    hf = format_rules(rules, "hf-key-mapping")
    namespace: dict = {}
    exec(hf, namespace)
    assert len(namespace["KEY_MAPPING"]) == 4  # one entry per block: transformers fills only \1
    for key in src:
        out = key
        for p, r in namespace["KEY_MAPPING"].items():
            if m := re.search(p, out):
                out = out.replace(m.group(0), r.replace("\\1", m.group(1)), 1)
        assert out == mapping[key]


def test_a_shared_tail_becomes_one_group() -> None:
    src = [f"stages.{s}.blocks.{b}.conv.weight" for s in range(3) for b in range(4)]
    mapping = {k: k.replace("stages.", "layers.").replace(".blocks.", ".sub.") for k in src}
    rules = compress_mapping(mapping)
    assert [(r.pattern, r.replacement) for r in rules.rules] == [
        (r"stages\.(\d+)\.blocks\.(.+)", r"layers.\1.sub.\2")
    ]


def test_irregular_pairs_become_literal_rules() -> None:
    mapping = {
        "layer1.0.weight": "stages.0.blocks.0.weight",  # stage index shifted: no template
        "fc.weight": "head.linear.weight",
        **{f"blocks.{i}.w": f"layers.{i}.w" for i in range(5)},
    }
    rules = compress_mapping(mapping)
    assert rules.verified
    literal = [r for r in rules.rules if r.literal]
    assert {r.keys[0] for r in literal} == {"layer1.0.weight", "fc.weight"}
    assert len(rules.rules) == 3


def test_transforms_are_named_and_splits_reported_as_unexpressed() -> None:
    t = TransformSpec("transpose", {"dim0": 0, "dim1": 1})
    pairs = [
        MatchedPair(f"h.{i}.c_fc.weight", f"l.{i}.fc.weight", 0.9, transform=t) for i in range(4)
    ]
    pairs += [MatchedPair(f"h.{i}.c_fc.bias", f"l.{i}.fc.bias", 0.9) for i in range(4)]
    split = MultiPair(
        ("h.0.c_attn.weight",),
        ("l.0.q.weight", "l.0.k.weight"),
        TransformSpec("split", {"dim": 1}),
        0.9,
    )
    result = MappingResult(
        pairs,
        [UnmatchedKey("h.0.c_fc.extra", "source", UnmatchedReason.NO_SHAPE_PARTNER)],
        multi=[split],
    )
    rules = compress_mapping(result)
    assert rules.verified
    assert len(rules.rules) == 2  # weights (transposed) and biases kept apart
    by_transform = {tuple(r.transforms): r for r in rules.rules}
    assert by_transform[("transpose",)].transforms == {"transpose": 4}
    assert rules.apply("h.0.c_fc.extra") is None
    assert rules.unexpressed[0][0] == "h.0.c_attn.weight"
    text = format_rules(rules, "regex")
    assert "needs transform transpose (4 key(s))" in text
    assert "Not expressible as renames" in text and "h.0.c_attn.weight" in text
    mixed = compress_mapping(MappingResult(pairs), split_by_transform=False)
    assert len(mixed.rules) == 1 and mixed.rules[0].transforms == {"transpose": 4}


def test_sequential_order_avoids_renaming_twice() -> None:
    # a → b and b → c: applied in turn, b must be renamed before a's output appears.
    mapping = {f"a.{i}.w": f"b.{i}.w" for i in range(3)} | {
        f"b.{i}.w": f"c.{i}.w" for i in range(3)
    }
    rules = compress_mapping(mapping)
    assert rules.verified, rules.problems
    for key, target in mapping.items():
        assert apply_rules_sequentially(rules.rules, key) == target


def test_unknown_format_and_bad_input_raise_our_errors() -> None:
    rules = compress_mapping({"a.w": "b.w"})
    with pytest.raises(MappingError, match="python, regex, hf-key-mapping, mmengine"):
        format_rules(rules, "yaml")
    with pytest.raises(MappingError, match="MappingResult"):
        compress_mapping(["a.w"])  # type: ignore[arg-type]
    assert set(FORMATS) == {"python", "regex", "hf-key-mapping", "mmengine"}
