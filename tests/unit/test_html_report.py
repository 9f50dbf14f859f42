"""The HTML page's structure without a browser: status, band counts, groups, reasons, splits."""

from __future__ import annotations

import re

from weightmapper.html_report import render_html
from weightmapper.report import build_report
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.review import band_counts
from weightmapper.transforms import TransformSpec


def _report(functional_check: dict | None = None, **extra: object) -> dict:
    pairs = [
        MatchedPair(f"blocks.{i}.fc.{p}", f"layers.{i}.linear.{p}", s, {"name": s}, (4,), (4,))
        for i, s in ((0, 0.95), (1, 0.9), (2, 0.7))
        for p in ("weight", "bias")
    ]
    pairs.append(MatchedPair("head.weight", "out.weight", 0.97, {"name": 1.0}, (4,), (4,),
                             confidence="low"))  # fmt: skip
    multi = [
        MultiPair(
            ("attn.qkv.weight",),
            ("attn.q.weight", "attn.k.weight", "attn.v.weight"),
            TransformSpec("split", {"dim": 0, "sizes": [8, 4, 4]}),
            0.88,
        )
    ]
    unmatched = [
        UnmatchedKey("extra.a", "source", UnmatchedReason.NO_SHAPE_PARTNER, "", (3,)),
        UnmatchedKey("extra.b", "source", UnmatchedReason.NO_SHAPE_PARTNER, "", (3,)),
        UnmatchedKey("extra.c", "source", UnmatchedReason.BELOW_THRESHOLD, "0.4 < 0.6", (5,)),
    ]
    result = MappingResult(pairs, unmatched, [], multi, source_name="S", target_name="T")
    report = build_report(result, functional_check=functional_check)
    report.update(extra)
    return report


def test_counts_on_the_page_equal_the_coloured_rows() -> None:
    report = _report()
    page = render_html(report)
    counts = band_counts(report)
    assert counts == {"high": 5, "medium": 3, "low": 0}  # the flagged 0.97 pair is yellow
    rows = re.findall(r'<tbody class="pair" data-band="(\w+)"', page)
    assert {b: rows.count(b) for b in counts} == counts
    for band, n in counts.items():
        assert f'data-band-count="{band}">{n} ' in page
    assert '>3</div><div class="l">pairs to review (yellow + red)' in page
    assert "low-confidence pairs" not in page


def test_pairs_grouped_by_template_and_unmatched_by_reason() -> None:
    page = render_html(_report())
    groups = re.findall(r'<details class="group" data-band="(\w+)"', page)
    assert len(groups) == 3  # blocks.{n}.fc.*, head.weight, splits and merges
    assert groups[0] == "medium"  # riskiest first
    assert "blocks.{n}.fc.* → layers.{n}.linear.*" in page
    reasons = re.findall(r'data-reason="(\w+)" open><summary>.*?<strong>(\d+)</strong>', page)
    assert reasons == [("no_shape_partner", "2"), ("below_threshold", "1")]


def test_split_rows_name_parts_sizes_and_order() -> None:
    page = render_html(_report())
    assert "split dim 0 into 8 + 4 + 4" in page
    order = [page.index(f"attn.{k}.weight <span") for k in "qkv"]
    assert order == sorted(order)
    assert "dim 0 [0:8)" in page and "dim 0 [8:12)" in page and "dim 0 [12:16)" in page


def test_status_shown_when_known_and_said_unknown_otherwise() -> None:
    assert 'data-state="loads">◐ loads, not proven' in render_html(_report())
    proven = render_html(_report(functional_check={"equal": True, "max_abs_diff": 0.0}))
    assert 'data-state="proven">✓ proven equal' in proven
    recorded = _report()
    recorded["status"] = {"state": "differs", "label": "differs at layers.2", "detail": ""}
    assert 'data-state="differs">✗ differs at layers.2' in render_html(recorded)
    old = _report()  # a report from before statuses were recorded, with no checks
    del old["status"], old["mapping"]["status"]
    assert "status: not checked" in render_html(old)


def test_markdown_carries_status_bands_groups_splits_and_reasons() -> None:
    from weightmapper.report import render_markdown

    check = {"equal": False, "first_diverging": "x", "first_diverging_target": "x"}
    text = render_markdown(_report(functional_check=check))
    assert "**Status: differs at x**" in text
    assert "5 green (> 0.8), 3 yellow (0.6–0.8), 0 red (< 0.6): **3 to review**" in text
    assert "| `blocks.{n}.fc.*` | `layers.{n}.linear.*` | 6 | 0.700 (medium) | 2 |" in text
    assert "| splits and merges | — | 1 |" in text
    assert r"1. `attn.q.weight` dim 0 \[0:8\)<br>2. `attn.k.weight` dim 0 \[8:12\)" in text
    assert text.index("### `no_shape_partner` (2)") < text.index("### `below_threshold` (1)")
    table = [line for line in text.splitlines() if line.startswith("| `") and "(medium)" in line]
    assert table[0].startswith("| `head.weight`")  # flagged and yellow: first to review
