"""Rich views captured from a Console: rows, colours, badges, trees and score bars."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from rich.console import Console
from torch import nn

from weightmapper.errors import MappingError
from weightmapper.inventory import Inventory
from weightmapper.report import build_report
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.transforms import TransformSpec
from weightmapper.visualize import (
    score_text,
    visualize_hierarchies,
    visualize_mapping,
    visualize_score_breakdown,
)

ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Source(nn.Module):
    """Old layout: a GPT-2-style fused attention (Conv1D layout) and an extra head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.block = nn.Module()
        self.block.attn = nn.Linear(4, 12)
        self.block.proj = nn.Linear(4, 6)
        self.block.scale = nn.Parameter(torch.ones(4, 1, 1))
        self.norm = nn.BatchNorm1d(4)
        self.head = nn.Linear(4, 7)


class Target(nn.Module):
    """New layout: separate q/k/v, a transposed projection, a flat scale."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(10, 4)
        self.layer = nn.Module()
        self.layer.q = nn.Linear(4, 4)
        self.layer.k = nn.Linear(4, 4)
        self.layer.v = nn.Linear(4, 4)
        self.layer.out = nn.Linear(6, 4, bias=False)
        self.layer.gamma = nn.Parameter(torch.ones(4))
        self.norm = nn.BatchNorm1d(4)
        self.classifier = nn.Linear(4, 3)


def _mapper() -> SimpleNamespace:
    pairs = [
        MatchedPair(
            "embed.weight",
            "tok.weight",
            0.95,
            {"shape": 1.0, "name": 0.5, "order": 1.0},
            (10, 4),
            (10, 4),
            stage="structural",
        ),
        MatchedPair(
            "block.proj.weight",
            "layer.out.weight",
            0.72,
            {"shape": 0.9, "name": 0.4, "order": 0.8},
            (6, 4),
            (4, 6),
            TransformSpec("transpose", {"dim0": 0, "dim1": 1}),
            group=False,
        ),
        MatchedPair(
            "block.scale",
            "layer.gamma",
            0.55,
            {"shape": 0.8, "name": 0.1, "order": 0.6},
            (4, 1, 1),
            (4,),
            TransformSpec("reshape", {"shape": [4]}),
            group=False,
            confidence="low",
        ),
        MatchedPair("norm.weight", "norm.weight", 1.0, {"shape": 1.0, "name": 1.0}, (4,), (4,)),
        MatchedPair("norm.bias", "norm.bias", 1.0, {"shape": 1.0, "name": 1.0}, (4,), (4,)),
    ]
    multi = [
        MultiPair(
            ("block.attn.weight",),
            ("layer.q.weight", "layer.k.weight", "layer.v.weight"),
            TransformSpec("split", {"dim": 0, "sizes": [4, 4, 4]}),
            0.88,
        )
    ]
    unmatched_src = [
        UnmatchedKey(
            "head.weight",
            "source",
            UnmatchedReason.NO_SHAPE_PARTNER,
            "no target has [7, 4]",
            (7, 4),
        ),
        UnmatchedKey(
            "head.bias", "source", UnmatchedReason.NO_SHAPE_PARTNER, "no target has [7]", (7,)
        ),
        UnmatchedKey(
            "block.attn.bias", "source", UnmatchedReason.AMBIGUOUS, "3 candidates tie", (12,)
        ),
        UnmatchedKey("block.proj.bias", "source", UnmatchedReason.LOST_TO_BETTER, "", (6,)),
    ]
    unmatched_tgt = [
        UnmatchedKey(
            "classifier.weight",
            "target",
            UnmatchedReason.BELOW_THRESHOLD,
            "best candidate head.weight scored 0.31 < 0.6",
            (3, 4),
            "head.weight",
            0.31,
        ),
    ]
    result = MappingResult(
        pairs, unmatched_src, unmatched_tgt, multi,
        settings={"threshold": 0.6, "strategy": "best_match",
                  "weights": {"shape": 0.5, "name": 0.3, "order": 0.2}},
        source_name="Source", target_name="Target",
    )  # fmt: skip
    return SimpleNamespace(
        result=result,
        source_inventory=Inventory.from_module(Source()),
        target_inventory=Inventory.from_module(Target()),
    )


def _plain(width: int = 200) -> Console:
    return Console(record=True, width=width, force_terminal=False, color_system=None)


def _line(text: str, needle: str) -> str:
    return next(line for line in text.splitlines() if needle in line)


def test_mapping_view_lists_rows_badges_and_reasons() -> None:
    con = visualize_mapping(_mapper(), console=_plain())
    text = con.export_text()
    assert "source 83.3%" in text or "coverage" in text
    assert "5 one-to-one, 1 split/merge" in text and "threshold=0.6" in text
    assert "4 green, 1 yellow, 1 red: 2 to review (1 flagged" in text
    assert "split dim 0 into 4 + 4 + 4" in _line(text, "block.attn.weight")
    row = _line(text, "block.proj.weight")
    assert "layer.out.weight" in row and "🔄 transpose" in row and "INDIV" in row
    assert "6×4 → 4×6" in row
    assert "📐 reshape" in _line(text, "block.scale") and "?" in _line(text, "block.scale")
    assert "✓ exact" in _line(text, "embed.weight") and "GROUP" in _line(text, "embed.weight")
    assert "split" in _line(text, "block.attn.weight")
    assert "Unmatched source keys (4)" in text and "Unmatched target keys (1)" in text
    assert "no_shape_partner" in _line(text, "head.weight  ")
    assert "ambiguous" in _line(text, "block.attn.bias")
    assert "below_threshold" in _line(text, "classifier.weight  ")
    assert not ANSI.search(text)  # plain text when the console is not a terminal


def _table_keys(text: str) -> list[str]:
    keys = [
        "block.scale", "block.proj.weight", "block.attn.weight", "embed.weight",
        "norm.bias", "norm.weight",
    ]  # fmt: skip
    # The mapping table only: the pairs to check, listed after it, repeat flagged keys.
    table = text.split("Pairs to check", 1)[0]
    rows = [line.split()[0] for line in table.splitlines() if line.split()[:1]]
    return [k for k in rows if k in keys]


def test_mapping_view_puts_risky_pairs_first_by_default_or_sorts_by_name() -> None:
    by_score = _table_keys(visualize_mapping(_mapper(), console=_plain()).export_text())
    # red first, then yellow, then green by rising score; ties in natural key order
    assert by_score == [
        "block.scale", "block.proj.weight", "block.attn.weight", "embed.weight",
        "norm.bias", "norm.weight",
    ]  # fmt: skip
    by_name = _table_keys(visualize_mapping(_mapper(), sort="name", console=_plain()).export_text())
    assert by_name == [
        "block.proj.weight", "block.scale", "embed.weight", "norm.bias", "norm.weight",
        "block.attn.weight",
    ]  # fmt: skip
    capped = visualize_mapping(_mapper(), max_matches=2, console=_plain()).export_text()
    assert _table_keys(capped) == ["block.scale", "block.proj.weight"]
    assert "4 more rows not shown" in capped


def test_mapping_view_colours_scores_by_band() -> None:
    assert score_text(0.95).style == "green"
    assert score_text(0.7).style == "yellow"
    assert score_text(0.8).style == "yellow"
    assert score_text(0.55).style == "red"
    con = Console(record=True, width=200, force_terminal=True, color_system="standard")
    visualize_mapping(_mapper(), console=con)
    text = con.export_text(styles=True)
    assert re.search(r"\x1b\[32m\s*0\.950", _line(text, "embed.weight"))  # green
    assert re.search(r"\x1b\[33m\s*0\.720", _line(text, "block.proj.weight"))  # yellow
    assert re.search(r"\x1b\[31m\s*0\.550", _line(text, "block.scale"))  # red


def test_mapping_view_caps_rows_and_hides_unmatched_on_request() -> None:
    text = visualize_mapping(
        _mapper(), show_unmatched=False, max_matches=2, console=_plain()
    ).export_text()
    assert "… 4 more rows" in text
    assert "Unmatched" not in text
    capped = visualize_mapping(_mapper(), max_unmatched=1, console=_plain()).export_text()
    assert "… 3 more" in capped


def test_mapping_view_accepts_an_explicit_result_and_a_report() -> None:
    m = _mapper()
    other = MappingResult.from_simple({"embed.weight": "tok.weight"})
    text = visualize_mapping(m, result=other, console=_plain()).export_text()
    assert "1 one-to-one" in text
    report = build_report(m)
    assert (
        visualize_mapping(report, console=_plain()).export_text()
        == visualize_mapping(m, console=_plain()).export_text()
    )


def test_hierarchies_show_two_trees_with_badges_and_matches() -> None:
    text = visualize_hierarchies(_mapper(), show_matches=True, console=_plain(220)).export_text()
    assert "source: Source" in text and "target: Target" in text
    row = _line(text, "proj (Linear)")
    assert "[W 6×4] [B 6]" in row and "◐ → layer.out (1/2)" in row
    assert "✓ ← block.proj" in _line(text, "out (Linear)")
    assert "✗ unmatched" in _line(text, "head (Linear)")
    assert "✗ unmatched" in _line(text, "classifier (Linear)")
    assert "✓ → layer.q, layer.k, layer.v" in _line(text, "attn (Linear)") or "◐" in _line(
        text, "attn (Linear)"
    )
    assert "[W 4] [B 4] +3 buffers" in _line(text, "norm (BatchNorm1d)")
    plain = visualize_hierarchies(_mapper(), console=_plain(220)).export_text()
    assert "✓" not in plain and "[W 10×4]" in plain


def test_hierarchies_fold_modules_below_max_depth() -> None:
    text = visualize_hierarchies(_mapper(), max_depth=1, console=_plain(220)).export_text()
    assert "proj (Linear)" not in text
    assert "… 2 module(s) deeper than depth 1" in text  # block.attn, block.proj
    assert "… 4 module(s) deeper than depth 1" in text  # layer.q, .k, .v, .out
    assert "[scale 4×1×1]" in _line(text, "block (Module)")


def test_score_breakdown_shows_signals_weights_and_contributions() -> None:
    text = visualize_score_breakdown(_mapper(), "block.proj.weight", console=_plain()).export_text()
    assert "block.proj.weight → layer.out.weight" in text and "🔄 transpose" in text
    shape = _line(text, "shape ")
    assert "0.900" in shape and "0.50" in shape and "0.450" in shape  # 0.5 × 0.9 / 1.0
    assert "█" in shape and "░" in shape
    assert "0.160" in _line(text, "order ")  # 0.2 × 0.8
    assert "0.730" in _line(text, "weighted sum")  # 0.45 + 0.12 + 0.16
    by_target = visualize_score_breakdown(_mapper(), "layer.out.weight", console=_plain())
    assert "block.proj.weight → layer.out.weight" in by_target.export_text()
    split = visualize_score_breakdown(_mapper(), "layer.k.weight", console=_plain()).export_text()
    assert "block.attn.weight → layer.q.weight, layer.k.weight, layer.v.weight" in split


def test_score_breakdown_says_what_each_signal_and_evidence_means() -> None:
    report = build_report(_mapper(), hash_inputs=False)
    pair = report["mapping"]["pairs"][0]
    pair["breakdown"].update({"context": 0.5, "role_unique": 1.0, "runner_up": 0.4})
    text = visualize_score_breakdown(report, pair["source"], console=_plain()).export_text()
    assert "1 with its siblings, 0 not, 0.5 unknown" in _line(text, "context ")
    assert "a role the network has once" in _line(text, "role_unique ")
    assert "best alternative" in _line(text, "runner_up ")
    assert "names alike" in _line(text, "name ")
    assert "weight —: evidence the calibration reads beside the raw score" in text


def test_every_breakdown_key_the_engine_writes_has_a_meaning() -> None:
    """A split's breakdown (hint, layout_settled, order_settled) and a pair's are explained."""
    from torch import nn

    from weightmapper import WeightMapper
    from weightmapper.review import SIGNAL_TEXT

    fused = nn.Module()
    fused.attn = nn.Module()
    fused.attn.qkv = nn.Linear(8, 24)
    fused.attn.proj = nn.Linear(8, 8)
    separate = nn.Module()
    separate.attn = nn.Module()
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
        setattr(separate.attn, name, nn.Linear(8, 8))
    report = build_report(WeightMapper(fused, separate).suggest_mapping(), hash_inputs=False)
    entries = [*report["mapping"]["pairs"], *report["mapping"]["multi"]]
    assert report["mapping"]["multi"]
    keys = {k for e in entries for k in e["breakdown"]}
    assert keys - set(SIGNAL_TEXT) == set()


def test_score_breakdown_explains_unknown_and_unmatched_keys() -> None:
    with pytest.raises(MappingError, match=r"Did you mean block\.proj\.weight"):
        visualize_score_breakdown(_mapper(), "block.proj.weights", console=_plain())
    with pytest.raises(MappingError, match=r"unmatched source key \(no_shape_partner"):
        visualize_score_breakdown(_mapper(), "head.weight", console=_plain())


def test_score_breakdown_without_recorded_weights_says_so() -> None:
    m = _mapper()
    m.result.settings.pop("weights")
    text = visualize_score_breakdown(m, "embed.weight", console=_plain()).export_text()
    assert "weights not recorded" in text


def test_weightmapper_facade_renders_through_these_views() -> None:
    from weightmapper.examples.cnn import OldCNN, RefactoredCNN
    from weightmapper.mapper import WeightMapper

    mapper = WeightMapper(OldCNN(num_classes=10, width=8), RefactoredCNN(num_classes=5, width=8))
    result = mapper.suggest_mapping()
    text = mapper.visualize_mapping(console=_plain(), max_matches=100).export_text()
    assert f"{len(result)} one-to-one" in text
    assert all(p.source in text for p in result.pairs)
    trees = mapper.visualize_hierarchies(show_matches=True, console=_plain(220)).export_text()
    assert "source: OldCNN" in trees and "target: RefactoredCNN" in trees
    first = result.pairs[0]
    shown = mapper.visualize_score_breakdown(first.source, console=_plain()).export_text()
    assert f"{first.source} → {first.target}" in shown


def test_summary_panel_shows_recorded_checks() -> None:
    m = _mapper()
    m.result.metadata["functional_check"] = {
        "equal": True,
        "max_abs_diff": 0.0,
        "max_rel_diff": 0.0,
    }
    m.result.metadata["validation"] = {"ok": False, "missing": ["x"], "unexpected": ["y", "z"]}
    text = visualize_mapping(m, console=_plain()).export_text()
    assert "equal (max abs diff 0, max rel diff 0)" in _line(text, "outputs")
    assert "NO: 1 missing, 2 unexpected, 0 shape mismatches" in _line(text, "loads")
