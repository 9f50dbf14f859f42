"""One definition of bands, review order and mapping status, shared by every rendering."""

from __future__ import annotations

import pytest

from weightmapper.review import (
    band_counts,
    mapping_status,
    multi_layout,
    multi_parts,
    ordered,
    pair_band,
    score_band,
)


def _pair(source: str, score: float, **kw: object) -> dict:
    return {"source": source, "target": "t." + source, "score": score, **kw}


def test_bands_and_flagged_pairs_are_never_green() -> None:
    assert [score_band(s) for s in (0.95, 0.8, 0.6, 0.59)] == ["high", "medium", "medium", "low"]
    assert pair_band(_pair("a", 0.95)) == "high"
    assert pair_band(_pair("a", 0.95, confidence="low")) == "medium"
    assert pair_band(_pair("a", 0.95, ambiguous=True)) == "medium"
    assert pair_band(_pair("a", 0.4, confidence="low")) == "low"


def test_counts_agree_with_the_bands_of_every_row() -> None:
    pairs = [_pair("a", 0.9), _pair("b", 0.9, confidence="low"), _pair("c", 0.5)]
    multi = [{"sources": ["q"], "targets": ["x", "y"], "score": 0.7, "kind": "split"}]
    report = {"mapping": {"pairs": pairs, "multi": multi}}
    assert band_counts(report) == {"high": 1, "medium": 2, "low": 1}


def test_score_order_puts_red_then_flagged_then_lowest_first() -> None:
    pairs = [
        _pair("layers.10.w", 0.95),
        _pair("layers.2.w", 0.95),
        _pair("b", 0.7),
        _pair("c", 0.9, confidence="low"),
        _pair("d", 0.3),
        _pair("e", 0.65, probability=0.99),
    ]
    assert [p["source"] for p in ordered(pairs)] == [
        "d", "c", "b", "e", "layers.2.w", "layers.10.w",
    ]  # fmt: skip
    assert [p["source"] for p in ordered(pairs, "name")] == [
        "b", "c", "d", "e", "layers.2.w", "layers.10.w",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="unknown sort"):
        ordered(pairs, "size")


def test_status_is_read_from_the_report_or_from_its_checks() -> None:
    base = {"mapping": {"pairs": []}}
    assert mapping_status(base) is None
    assert mapping_status({**base, "validation": {"ok": True}}) == ("loads", "loads, not proven")
    equal = {**base, "functional_check": {"equal": True}}
    assert mapping_status(equal) == ("proven", "proven equal")
    differs = {**base, "functional_check": {"equal": False, "first_diverging": "blocks.1"}}
    assert mapping_status(differs) == ("differs", "differs at blocks.1")
    recorded = {**equal, "status": "differs at layers.3.mlp"}
    assert mapping_status(recorded) == ("differs", "differs at layers.3.mlp")
    in_mapping = {"mapping": {"pairs": [], "status": {"status": "loads, not proven"}}}
    assert mapping_status(in_mapping) == ("loads", "loads, not proven")


def test_split_and_merge_layouts_name_dim_sizes_and_order() -> None:
    split = {
        "kind": "split",
        "sources": ["attn.qkv.weight"],
        "targets": ["attn.q.weight", "attn.k.weight", "attn.v.weight"],
        "transform": {"name": "split", "params": {"dim": 0, "sizes": [8, 4, 4]}},
    }
    assert multi_layout(split) == "split dim 0 into 8 + 4 + 4"
    assert multi_parts(split) == [
        ("attn.q.weight", "dim 0 [0:8)"),
        ("attn.k.weight", "dim 0 [8:12)"),
        ("attn.v.weight", "dim 0 [12:16)"),
    ]
    chained = {
        "kind": "merge",
        "sources": ["w1", "w3"],
        "targets": ["gate_up"],
        "transform": {
            "name": "chain",
            "params": {
                "steps": [
                    {"name": "merge", "params": {"dim": 1, "sizes": [2, 3]}},
                    {"name": "transpose", "params": {"dim0": 0, "dim1": 1}},
                ]
            },
        },
    }
    assert (
        multi_layout(chained) == "concatenate along dim 1 (2 + 3), then transpose(dim0=0, dim1=1)"
    )
    assert multi_parts(chained) == [("w1", "dim 1 [0:2)"), ("w3", "dim 1 [2:5)")]
    stacked = {"kind": "merge", "sources": ["e0", "e1"], "targets": ["e"],
               "transform": {"name": "stack", "params": {"dim": 0}}}  # fmt: skip
    assert multi_layout(stacked) == "stack along a new dim 0"
    assert multi_parts(stacked) == [("e0", ""), ("e1", "")]
