"""Scores are probabilities: the calibration map, exact pairs, ambiguous swaps, thresholds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch import nn

from weightmapper.engine import assign
from weightmapper.engine.calibration import (
    AMBIGUOUS_MARGIN,
    DOUBTS,
    EVIDENCE,
    FEATURES,
    Calibration,
    load,
)
from weightmapper.engine.candidates import Candidates, Proposal
from weightmapper.engine.evidence import ROLE_AGREE, ROLE_CROSS, ROLE_UNKNOWN, role_agreement
from weightmapper.engine.margins import WEAK_NAME, is_ambiguous
from weightmapper.errors import WeightMapperError
from weightmapper.mapper import WeightMapper
from weightmapper.roles import SideRoles
from weightmapper.settings import DEFAULT_THRESHOLD, DEFAULT_WEIGHTS, AssignSettings
from weightmapper.transforms import IDENTITY


class _Layer(nn.Module):
    def __init__(self, d: int = 16, h: int = 40) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(d)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, d, bias=False)
        self.v_proj = nn.Linear(d, d, bias=False)
        self.o_proj = nn.Linear(d, d, bias=False)
        self.post_attention_layernorm = nn.LayerNorm(d)
        self.gate_proj = nn.Linear(d, h, bias=False)
        self.up_proj = nn.Linear(d, h, bias=False)
        self.down_proj = nn.Linear(h, d, bias=False)


class _Llama(nn.Module):
    """A tiny Llama-shaped model (square q/k/v/o: equal-shape siblings in every layer)."""

    def __init__(self, n: int = 3) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(50, 16)
        self.layers = nn.ModuleList(_Layer() for _ in range(n))
        self.norm = nn.LayerNorm(16)
        self.lm_head = nn.Linear(16, 50, bias=False)


def _renamed_llama_checkpoint() -> dict:
    """A Llama checkpoint under a wrapper prefix (``model.``): every key renamed."""
    return {"model." + k: v for k, v in _Llama().state_dict().items()}


# --- the map ---------------------------------------------------------------------------------
def test_packaged_map_is_monotone_and_within_unit_interval() -> None:
    cal = load()
    assert len(cal.knots_z) >= 2
    assert all(np.diff(cal.knots_z) > 0)
    assert all(np.diff(cal.knots_p) >= 0)
    z = np.linspace(min(cal.knots_z) - 5, max(cal.knots_z) + 5, 500)
    p = cal.from_z(z)
    assert np.all(np.diff(p) >= 0)
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert all(cal.coef.get(f, 0.0) >= 0 for f in EVIDENCE)
    assert all(cal.coef.get(f, 0.0) <= 0 for f in DOUBTS)
    assert {"fitted", "data", "command"} <= set(cal.meta)


def test_probability_never_falls_when_evidence_rises() -> None:
    cal = load()
    rng = np.random.default_rng(0)
    signals = ("shape", "name", "hierarchy", "order", "structure", "unique", "index")
    for _ in range(300):
        bd = {k: float(v) for k, v in zip(signals, rng.random(len(signals)), strict=True)}
        bd["runner_up"] = float(rng.random() * 0.8)
        bd["margin"] = float(rng.random() * 0.2)
        bd["roles"] = float(rng.choice([0.0, 0.5, 1.0]))
        bd["order_known"] = float(rng.choice([0.0, 1.0]))
        raw = float(rng.random())
        base = cal.probability(bd, raw, confidence="high")
        assert 0.0 <= base <= 1.0
        for k in signals:
            up = cal.probability({**bd, k: min(1.0, bd[k] + 0.3)}, raw, confidence="high")
            assert up >= base - 1e-12, k
        assert cal.probability(bd, min(1.0, raw + 0.3), confidence="high") >= base - 1e-12
        wider = {**bd, "margin": bd["margin"] + 0.1}
        assert cal.probability(wider, raw, confidence="high") >= base - 1e-12
        agree = {**bd, "roles": min(1.0, bd["roles"] + 0.5)}
        assert cal.probability(agree, raw, confidence="high") >= base - 1e-12
        lone = {**bd, "role_unique": 1.0}
        assert cal.probability(lone, raw, confidence="high") >= base - 1e-12
        assert cal.probability(bd, raw, confidence="low") <= base + 1e-12
        assumed = cal.probability(bd, raw, confidence="high", note="layout assumed from names")
        assert assumed <= base + 1e-12


def test_no_pair_is_certain_and_a_threshold_of_1_keeps_nothing() -> None:
    cal = load()
    assert max(cal.knots_p) < 1.0 and cal.exact_p < 1.0
    mapper = WeightMapper.from_state_dict(_renamed_llama_checkpoint(), _Llama())
    assert mapper.suggest_mapping(threshold=1.0).coverage()["mapped_pairs"] == 0


def test_a_pair_resting_on_its_shape_alone_stays_below_the_default_threshold() -> None:
    """A lone same-shape pair whose name, module path and position all disagree (a
    classifier head onto a detector's box classifier) is about as often wrong as right."""
    bd = {"shape": 1.0, "name": 0.33, "hierarchy": 0.24, "order": 0.22, "structure": 0.9}
    bd |= {"runner_up": 0.0, "margin": 1.0, "roles": 1.0, "unique": 1.0, "order_known": 1.0}
    p = load().probability(bd, 0.55, confidence="high", stage="template")
    assert p < DEFAULT_THRESHOLD
    named = {**bd, "name": 0.9, "hierarchy": 0.8, "order": 0.9}
    assert load().probability(named, 0.85, confidence="high", stage="template") > 0.9


def test_a_shape_only_pair_of_one_lone_role_on_both_sides_gets_that_class_estimate() -> None:
    """The head onto the head under names that share nothing: the shape-only cap gives way to
    the accuracy of pairs whose one-per-network role both sides agree on."""
    cal = load()
    bd = {"shape": 1.0, "name": 0.2, "hierarchy": 0.1, "order": 0.3, "structure": 0.9}
    bd |= {"runner_up": 0.0, "margin": 1.0, "roles": 0.5, "unique": 1.0, "order_known": 0.0}
    alone = cal.probability(bd, 0.5, confidence="high", stage="assignment")
    assert alone <= cal.shape_only_p < DEFAULT_THRESHOLD
    assert cal.role_only_p is not None and cal.role_only_p > DEFAULT_THRESHOLD
    lone = cal.probability({**bd, "role_unique": 1.0}, 0.5, confidence="high", stage="assignment")
    assert lone == pytest.approx(cal.role_only_p)
    assert cal.probability({**bd, "role_unique": 0.0}, 0.5, confidence="high") <= alone + 1e-12


def test_a_layout_assumed_from_names_scores_at_most_its_class_estimate() -> None:
    cal = load()
    bd = {"shape": 1.0, "name": 1.0, "hierarchy": 0.9, "order": 1.0, "structure": 1.0}
    bd |= {"runner_up": 0.7, "margin": 0.3, "roles": 1.0, "unique": 0.25, "order_known": 0.0}
    sure = cal.probability(bd, 0.97, confidence="high", stage="template")
    note = "layout assumed from names: RoPE interleaved → rotate_half; give the source module"
    assumed = cal.probability(bd, 0.97, confidence="ambiguous", stage="template", note=note)
    assert assumed <= cal.assumed_p < sure


def test_a_map_that_is_not_monotone_is_refused(tmp_path) -> None:
    good = load().to_dict()
    bad = {**good, "knots": {"z": [0.0, 1.0, 2.0], "p": [0.2, 0.9, 0.5]}}
    with pytest.raises(WeightMapperError, match="monotone"):
        Calibration.from_dict(bad)
    negative = {**good, "coef": {**good["coef"], "name": -1.0}}
    with pytest.raises(WeightMapperError, match="monotone"):
        Calibration.from_dict(negative)
    broken = tmp_path / "calibration.json"
    broken.write_text("{not json")
    with pytest.raises(WeightMapperError, match=r"calibrate\.py"):
        load.__wrapped__(broken)
    assert Calibration.from_dict(json.loads(json.dumps(good))).knots_p == load().knots_p
    assert len(FEATURES) == len(good["features"])


# --- the engine ------------------------------------------------------------------------------
def test_exact_names_with_equal_shapes_score_at_least_095() -> None:
    target = _Llama()
    for mapper in (
        WeightMapper.from_state_dict(_renamed_llama_checkpoint(), target),
        WeightMapper(_Llama(), target),
    ):
        result = mapper.suggest_mapping(threshold=0.0)
        exact = [p for p in result.pairs if p.source.removeprefix("model.") == p.target]
        assert len(exact) == len(target.state_dict())
        assert min(p.score for p in exact) >= 0.95
        assert all(p.confidence == "high" for p in exact)
        assert all("raw" in p.breakdown and "margin" in p.breakdown for p in exact)


def test_threshold_keeps_exactly_the_pairs_whose_probability_reaches_it() -> None:
    mapper = WeightMapper(_padded("zeta", "alpha"), _padded("foo", "bar"))
    every = mapper.suggest_mapping(threshold=0.0)
    scores = sorted({round(p.score, 6) for p in every.pairs})
    assert len(scores) >= 2  # the swap's pairs score less than the exactly named ones
    for bar in scores:
        kept = mapper.suggest_mapping(threshold=bar)
        assert all(p.score >= bar - 1e-9 for p in kept.pairs)
        reach = {p.source for p in every.pairs if p.score >= bar - 1e-9}
        carried = {p.source for p in kept.pairs} - reach
        assert reach <= {p.source for p in kept.pairs}
        # the rest are members of a module whose pair reached the bar (the group carry)
        modules = {s.rpartition(".")[0] for s in reach}
        assert all(s.rpartition(".")[0] in modules for s in carried)


def test_threshold_and_strategies_keep_a_renamed_llama() -> None:
    n = len(_Llama().state_dict())
    mapper = WeightMapper.from_state_dict(_renamed_llama_checkpoint(), _Llama())
    strict = mapper.suggest_mapping(threshold=0.8)
    assert len(strict.pairs) == n
    assert all(p.source == "model." + p.target for p in strict.pairs)
    conservative = mapper.suggest_mapping(strategy="conservative")
    assert len(conservative.pairs) == n
    cov = conservative.coverage()
    assert cov["confident_pairs"] == n
    assert cov["target_confident_coverage"] == 1.0
    shape_only = mapper.suggest_mapping(strategy="shape_only")
    assert all(p.score == p.breakdown["shape"] for p in shape_only.pairs)


def _proposal(source: str, target: str, margin: float, name: float) -> Proposal:
    bd = {"shape": 1.0, "name": name, "hierarchy": 0.8, "order": 1.0, "structure": 0.5}
    bd["margin"] = margin
    return Proposal(source, target, bd, IDENTITY, "assignment", False, "high", (8, 8), (8, 8))


def test_a_pair_whose_runner_up_is_nearly_as_good_is_ambiguous() -> None:
    sure = _proposal("a.weight", "x.weight", 0.3, 0.9)
    swap = _proposal("b.weight", "y.weight", AMBIGUOUS_MARGIN / 3, 0.2)
    cands = Candidates("s", "t", [sure, swap], [], dict(DEFAULT_WEIGHTS), {}, 2, 2)
    result = assign(cands, AssignSettings(threshold=0.0))
    assert result.pair("a.weight").confidence == "high"
    assert result.pair("b.weight").confidence == "ambiguous"
    assert result.coverage()["confident_pairs"] <= 1
    conservative = assign(cands, AssignSettings(threshold=0.0, strategy="conservative"))
    assert "b.weight" not in conservative
    why = conservative.unmatched_reasons()["source"]["b.weight"].detail
    assert "ambiguous" in why


def _padded(a: str, b: str) -> nn.Module:
    """Sixty uniquely shaped, equally named layers around a block of two equal-shape siblings."""
    m = nn.Module()
    for i in range(30):
        m.add_module(f"pre{i}", nn.Linear(10 + i, 11 + i))
    block = nn.Module()
    block.add_module(a, nn.Linear(8, 8))
    block.add_module(b, nn.Linear(8, 8))
    m.add_module("block", block)
    for i in range(30):
        m.add_module(f"post{i}", nn.Linear(50 + i, 51 + i))
    return m


def test_a_same_shape_swap_without_evidence_is_ambiguous() -> None:
    """Two equal-shape siblings whose names say nothing: whichever way they are paired, the
    swap is nearly as good, so neither pair is ``high``; the exactly named layers are."""
    for mapper in (
        WeightMapper.from_state_dict(_padded("zeta", "alpha").state_dict(), _padded("foo", "bar")),
        WeightMapper(_padded("zeta", "alpha"), _padded("foo", "bar")),
    ):
        result = mapper.suggest_mapping(threshold=0.0)
        swapped = [p for p in result.pairs if p.source.startswith("block.")]
        assert len(swapped) == 4
        assert all(p.confidence == "ambiguous" for p in swapped)
        assert all(p.breakdown["margin"] < AMBIGUOUS_MARGIN for p in swapped)
        assert result.pair("pre3.weight").confidence == "high"
        cov = result.coverage()
        assert cov["confident_pairs"] == cov["mapped_pairs"] - 4


# --- roles -----------------------------------------------------------------------------------
def test_role_agreement_reads_roles_and_module_paths() -> None:
    src = SideRoles(roles={"a.q.weight": "attn.q", "a.fc.weight": "mlp.up"})
    tgt = SideRoles(
        roles={"b.q.weight": "attn.q", "b.up.weight": "mlp.up", "b.pool.weight": "head.pooler"},
        stacks={"dec.0.weight": "decoder"},
    )
    assert role_agreement("a.q.weight", "b.q.weight", src, tgt)[0] == ROLE_AGREE
    assert role_agreement("a.x.weight", "b.q.weight", src, tgt)[0] == ROLE_UNKNOWN
    # a role known on one side, the other side's module path says what it is
    cross, why = role_agreement("a.fc.weight", "blk.attention.o.weight", src, tgt)
    assert cross == ROLE_CROSS and "attn" in why
    assert role_agreement("cls.head.weight", "b.pool.weight", src, tgt)[0] == ROLE_CROSS
    assert role_agreement("encoder.0.weight", "dec.0.weight", src, tgt)[0] == ROLE_CROSS
    # a layer called "decoder" (an MLM head) is not a decoder stack
    assert role_agreement("lm.decoder.weight", "encoder.x.weight", src, tgt)[0] == ROLE_UNKNOWN


class _Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(12, 16)
        self.head = nn.Linear(16, 4)


class _Pooled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(12, 16)
        self.pooler = nn.Linear(16, 4)


def test_a_cross_role_pair_is_noted_and_never_high() -> None:
    result = WeightMapper.from_state_dict(_Classifier().state_dict(), _Pooled()).suggest_mapping(
        threshold=0.0
    )
    pair = result.pair("head.weight")
    assert pair.target == "pooler.weight"
    assert "cross-role pair" in pair.note and "pooler" in pair.note
    assert pair.confidence != "high" and not pair.confident
    assert pair.breakdown["roles"] == ROLE_CROSS
    assert result.pair("body.weight").confidence == "high"


# --- coverage --------------------------------------------------------------------------------
def test_confident_coverage_is_reported_beside_all_pairs() -> None:
    from weightmapper.html_report import render_html
    from weightmapper.report import build_report, render_markdown
    from weightmapper.visualize import summary_panel

    mapper = WeightMapper(_padded("zeta", "alpha"), _padded("foo", "bar"))
    result = mapper.suggest_mapping(threshold=0.0)
    cov = result.coverage()
    assert cov["confident_pairs"] == cov["mapped_pairs"] - 4  # the ambiguous swap
    assert cov["target_confident_coverage"] < cov["target_coverage"] == 1.0
    report = build_report(result)
    assert report["mapping"]["coverage"]["confident_pairs"] == cov["confident_pairs"]
    share = f"{cov['target_confident_coverage']:.1%}"
    assert "confident coverage" in render_markdown(report) and share in render_markdown(report)
    assert "target coverage, confident pairs" in render_html(report)
    panel = summary_panel(report)
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(panel)
    text = console.export_text()
    assert "confident" in text and share in text


def _stack(names: tuple[str, ...], outer: str) -> nn.Module:
    """A stem, four blocks of equal-shape 1×1 convolutions named ``names``, and a head."""
    m = nn.Module()
    m.add_module("stem", nn.Conv2d(3, 8, 3))
    stack = nn.Module()
    for i in range(4):
        block = nn.Module()
        for name in names:
            block.add_module(name, nn.Conv2d(8, 8, 1))
        stack.add_module(str(i), block)
    m.add_module(outer, stack)
    m.add_module("head", nn.Linear(8, 5))
    return m


def test_same_shape_siblings_read_sorted_are_ambiguous_unless_names_decide(tmp_path) -> None:
    """Siblings of equal shape whose names prefer no pairing: from a ``.safetensors`` file
    (keys stored sorted) only the names' sort order chose between them, so the pair is
    ``ambiguous`` even though its raw margin clears the bar; from a state dict that kept its
    registration order the same pair is ``high``."""
    from safetensors.torch import save_file

    source = _stack(("a", "conv2", "b"), "layers")
    sd = {k: v.contiguous().clone() for k, v in source.state_dict().items()}
    path = tmp_path / "source.safetensors"
    save_file(sd, path)
    target = _stack(("conv1", "x", "branch"), "blocks")
    sorted_result = WeightMapper.from_checkpoint(path, target).suggest_mapping(threshold=0.0)
    ordered = WeightMapper.from_state_dict(sd, target).suggest_mapping(threshold=0.0)
    for i in range(4):
        pair = sorted_result.pair(f"layers.{i}.b.weight")
        assert pair.breakdown["order_known"] == 0.0
        assert pair.breakdown["margin"] >= AMBIGUOUS_MARGIN  # the raw score alone would say high
        assert pair.breakdown["name_margin"] < AMBIGUOUS_MARGIN
        assert pair.confidence == "ambiguous"
        assert ordered.pair(f"layers.{i}.b.weight").confidence == "high"
    assert sorted_result.pair("stem.weight").confidence == "high"
    assert sorted_result.pair("head.weight").confidence == "high"


def _named(margin: float, name_margin: float, name: float, *, order_known: float) -> dict:
    return {
        "shape": 1.0, "name": name, "hierarchy": 0.8, "order": 1.0, "structure": 0.8,
        "runner_up": 0.6, "margin": margin, "name_margin": name_margin,
        "order_known": order_known,
    }  # fmt: skip


def test_ambiguity_by_names_needs_an_untrusted_or_contradicted_position() -> None:
    """The raw margin clears the bar in every case here: names that tie an alternative make
    the pair ambiguous when the keys were sorted; names that prefer the alternative make it
    ambiguous when they share little with either; otherwise a real position decides."""
    tie, against = AMBIGUOUS_MARGIN / 2, -2 * AMBIGUOUS_MARGIN
    assert is_ambiguous(_named(0.1, tie, 0.7, order_known=0.0))
    assert not is_ambiguous(_named(0.1, tie, 0.7, order_known=1.0))
    assert not is_ambiguous(_named(0.1, 3 * AMBIGUOUS_MARGIN, 0.7, order_known=0.0))
    assert is_ambiguous(_named(0.1, against, WEAK_NAME / 2, order_known=1.0))
    assert not is_ambiguous(_named(0.1, against, (1 + WEAK_NAME) / 2, order_known=1.0))
    alone = {**_named(1.0, 1.0, 0.3, order_known=0.0), "runner_up": 0.0}
    assert not is_ambiguous(alone)
    assert is_ambiguous(_named(AMBIGUOUS_MARGIN / 3, 0.5, 0.9, order_known=1.0))
    p = Proposal("s.weight", "t.weight", _named(0.1, tie, 0.7, order_known=0.0), IDENTITY,
                 "structural", False, "high", (8, 8), (8, 8))  # fmt: skip
    result = assign(Candidates("s", "t", [p], [], dict(DEFAULT_WEIGHTS), {}, 1, 1))
    assert result.pair("s.weight").confidence == "ambiguous"
    assert result.coverage()["confident_pairs"] == 0
