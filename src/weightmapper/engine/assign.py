"""Assign: Candidates + AssignSettings → MappingResult. Scores, labels, the threshold.

Each proposal's raw score (the weighted mean of its signals) becomes the calibrated
probability that the pair is right (:mod:`weightmapper.engine.calibration`; the raw score
stays in the breakdown as ``raw``), and a pair whose runner-up is nearly as good
(:mod:`weightmapper.engine.margins`: by its raw score, or by its names where position
cannot be trusted) is labelled ``ambiguous`` rather than ``high``.
Which scored proposals are accepted: those scored at or above the threshold (the
``conservative`` strategy: at or above :data:`~weightmapper.settings.CONSERVATIVE_FLOOR`
and of high confidence only); a parameter group is accepted as a unit (the group-carry
rule, :func:`accept`); buffers follow their module's pair. Every key left out gets its
reason. Cheap, so a pipeline caches scoring and re-runs this with another threshold.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np

from weightmapper.engine.calibration import feature_matrix, load
from weightmapper.engine.candidates import Candidates, Proposal
from weightmapper.engine.columns import columns
from weightmapper.engine.margins import ambiguous_mask
from weightmapper.engine.signals import combine
from weightmapper.result import (
    CONFIDENT_SCORE,
    MappingResult,
    MatchedPair,
    MultiPair,
    UnmatchedKey,
    UnmatchedReason,
)
from weightmapper.settings import CONSERVATIVE_FLOOR, DEFAULT_WEIGHTS, AssignSettings

Scored = dict[str, tuple[Proposal, float]]
"""Source key → (its proposal, its combined score)."""


def assign(candidates: Candidates, settings: AssignSettings | None = None) -> MappingResult:
    """Candidates + AssignSettings → MappingResult with a reason for every leftover.

    ``shape_only`` rescores by the shape signal alone (the pairing itself is not redone)
    and reports that uncalibrated score, as do weights other than the default ones (the
    map was fitted on those); otherwise scores are probabilities. The ``ambiguous`` label
    does not depend on either.
    """
    settings = settings if settings is not None else AssignSettings()
    strategy = settings.strategy
    w = dict(candidates.weights)
    if strategy == "shape_only":
        w = {k: (1.0 if k == "shape" else 0.0) for k in w}
    conservative = strategy == "conservative"
    bar = max(settings.threshold, CONSERVATIVE_FLOOR) if conservative else settings.threshold
    # the map was fitted on the default weighting: other weights get their own raw score
    calibrated = strategy != "shape_only" and w == DEFAULT_WEIGHTS
    scored: Scored = {}
    raws = _scores(candidates.proposals, w)
    # one feature matrix through the map instead of one call per pair (100k pairs)
    probs = _probabilities(candidates.proposals, raws) if calibrated else raws
    labels = _labels(candidates.proposals, probs, calibrated=calibrated)
    for p, raw, prob, label in zip(candidates.proposals, raws, probs, labels, strict=True):
        scored[p.source] = (p.relabelled({**p.breakdown, "raw": raw}, label), prob)
    accepted, rejected = accept(scored, bar, conservative=conservative)

    pairs = [
        # positional (in MatchedPair's field order): 100k keyword calls cost a tenth of a second
        MatchedPair(
            p.source,
            p.target,
            score,
            p.breakdown,
            p.source_shape,
            p.target_shape,
            p.transform,
            p.group,
            p.stage,
            p.confidence,
            p.note,
        )
        for p, score in accepted.values()
    ]
    un_src: list[UnmatchedKey] = []
    un_tgt: list[UnmatchedKey] = []
    for p, score in rejected.values():
        why = (
            f"best candidate {p.target} scored {score:.3f}, below the "
            f"{'conservative bar' if strategy == 'conservative' else 'threshold'} {bar:.2f}"
        )
        if strategy == "conservative" and p.confidence == "ambiguous" and score >= bar:
            why = f"best candidate {p.target} is ambiguous: an alternative scored nearly as well"
        elif strategy == "conservative" and p.confidence != "high" and score >= bar:
            why = f"best candidate {p.target} is a low-confidence guess ({p.stage})"
        if p.follows is not None and p.follows not in accepted:
            why = f"its module's pair ({p.follows}) was not accepted"
        un_src.append(
            UnmatchedKey(
                p.source,
                "source",
                UnmatchedReason.BELOW_THRESHOLD,
                why,
                p.source_shape,
                p.target,
                score,
            )
        )
        un_tgt.append(
            UnmatchedKey(
                p.target, "target", UnmatchedReason.BELOW_THRESHOLD,
                f"best candidate {p.source} scored {score:.3f}, below {bar:.2f}",
                p.target_shape, p.source, score,
            )
        )  # fmt: skip
    for n in candidates.notes:
        best = combine(n.best_breakdown, w) if n.best_breakdown else None
        if best is not None and calibrated and n.best_breakdown is not None:
            best = load().probability(n.best_breakdown, best, confidence="high")
        reason = n.reason
        detail = n.detail
        if reason is UnmatchedReason.LOST_TO_BETTER and n.best_taken_by is not None:
            taken = scored.get(n.best_taken_by) if n.side == "source" else None
            if n.side == "source" and taken is not None and n.best_taken_by in rejected:
                reason = UnmatchedReason.BELOW_THRESHOLD
                detail = f"best candidate {n.best_candidate} scored {best:.3f}"
        unmatched = UnmatchedKey(n.name, n.side, reason, detail, n.shape, n.best_candidate, best)
        (un_src if n.side == "source" else un_tgt).append(unmatched)

    multi = []
    for m in candidates.multi:
        if calibrated:
            m = _calibrated_multi(m)
        low = strategy == "conservative" and m.confidence != "high"
        if m.score >= bar and not low:
            multi.append(m)
            continue
        why = (
            f"{m.kind} {list(m.sources)} → {list(m.targets)} is a low-confidence guess"
            if low and m.score >= bar
            else f"{m.kind} {list(m.sources)} → {list(m.targets)} scored {m.score:.3f}, "
            f"below {bar:.2f}"
        )
        reason = UnmatchedReason.BELOW_THRESHOLD
        for name in m.sources:
            un_src.append(UnmatchedKey(name, "source", reason, why, (), m.targets[0], m.score))
        for name in m.targets:
            un_tgt.append(UnmatchedKey(name, "target", reason, why, (), m.sources[0], m.score))

    n_tied_src = len(candidates.tied.get("source", {}))
    n_tied_tgt = len(candidates.tied.get("target", {}))
    metadata = dict(candidates.metadata)
    metadata["tied"] = candidates.tied
    return MappingResult(
        pairs,
        un_src,
        un_tgt,
        multi,
        source_count=candidates.source_count - n_tied_src,
        target_count=candidates.target_count - n_tied_tgt,
        settings={
            **candidates.settings,
            "threshold": settings.threshold,
            "strategy": strategy,
            "weights": w,
        },
        source_name=candidates.source_name,
        target_name=candidates.target_name,
        metadata=metadata,
    )


def accept(scored: Scored, bar: float, *, conservative: bool) -> tuple[Scored, Scored]:
    """Scored proposals + bar → (accepted, rejected), each with the score it reports.

    The group-carry rule: a parameter group is matched as a unit, so a member scored below
    the bar is accepted when another member of the same module pair reaches it (a bias
    whose own name evidence is thinner than its weight's), and then reports that best
    score: nothing in a result scores below the bar it was accepted at. ``conservative``
    accepts high-confidence proposals only. Buffers that follow a pair are in when it is
    in, out when it is out.
    """
    accepted: Scored = {}
    rejected: Scored = {}
    unit_best: dict[tuple[str, str], float] = {}
    for p, score in scored.values():
        if p.follows is None and p.group:
            unit = (_module(p.source), _module(p.target))
            unit_best[unit] = max(unit_best.get(unit, 0.0), score)
    for src, (p, score) in scored.items():
        if p.follows is not None:
            continue
        best = unit_best.get((_module(p.source), _module(p.target)), 0.0)
        carried = p.group and score < bar <= best
        ok = (score >= bar or carried) and not (conservative and p.confidence != "high")
        (accepted if ok else rejected)[src] = (p, best if carried else score)
    for src, (p, score) in scored.items():
        if p.follows is None:
            continue
        lead = accepted.get(p.follows)
        if lead is not None:
            accepted[src] = (p, max(score, lead[1]) if p.stage == "buffer" else score)
        else:
            rejected[src] = (p, score)
    return accepted, rejected


def _probabilities(proposals: list[Proposal], raws: list[float]) -> list[float]:
    """Proposals + their raw scores → each one's calibrated probability (one matrix pass)."""
    if not proposals:
        return []
    x = feature_matrix(
        [p.breakdown for p in proposals],
        raws,
        confidence=[p.confidence for p in proposals],
        stage=[p.stage for p in proposals],
        note=[p.note for p in proposals],
    )
    return load().probabilities(x).tolist()


def _labels(proposals: list[Proposal], probs: list[float], *, calibrated: bool) -> list[str]:
    """Proposals + their probabilities (their raw scores when not ``calibrated``) → each
    one's confidence label: ``ambiguous`` when a same-shape alternative is nearly as good
    (:func:`~weightmapper.engine.margins.ambiguous_mask`), ``low`` when its probability is
    below :data:`~weightmapper.result.CONFIDENT_SCORE`, else its own."""
    ambiguous = ambiguous_mask([p.breakdown for p in proposals]).tolist()
    out = []
    for p, amb, prob in zip(proposals, ambiguous, probs, strict=True):
        confidence = p.confidence
        if confidence == "high" and amb:
            confidence = "ambiguous"
        elif confidence == "high" and calibrated and prob < CONFIDENT_SCORE:
            confidence = "low"  # the evidence, weighed on the bench, does not settle it
        out.append(confidence)
    return out


def _calibrated_multi(m: MultiPair) -> MultiPair:
    """Split or merge → the same with its calibrated probability as score, ``raw`` kept."""
    prob = load().probability(m.breakdown, m.score, confidence=m.confidence, multi=True)
    confidence = "low" if m.confidence == "high" and prob < CONFIDENT_SCORE else m.confidence
    return replace(m, score=prob, breakdown={**m.breakdown, "raw": m.score}, confidence=confidence)


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _scores(proposals: list[Proposal], weights: Mapping[str, float]) -> list[float]:
    """Proposals + weights → combined score of each (vectorized :func:`combine`)."""
    if not proposals:
        return []
    keys = [k for k, v in weights.items() if v]
    total = sum(weights[k] for k in keys)
    cols = columns([p.breakdown for p in proposals], keys)
    mat = np.empty((len(proposals), len(keys)), np.float64)  # C order, one pair per row
    for n, k in enumerate(keys):
        mat[:, n] = cols[k]
    w = np.array([weights[k] for k in keys], dtype=np.float64)
    return np.clip(mat @ w / total, 0.0, 1.0).tolist()
