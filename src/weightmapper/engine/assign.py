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

import functools
import operator
from collections.abc import Mapping, Sequence
from dataclasses import replace
from itertools import repeat
from typing import Any

import numpy as np

from weightmapper.engine.calibration import feature_matrix, load
from weightmapper.engine.candidates import Candidates, Proposal
from weightmapper.engine.columns import Breakdowns, columns
from weightmapper.engine.margins import ambiguous_mask
from weightmapper.engine.signals import combine
from weightmapper.result import (
    CONFIDENCES,
    CONFIDENT_SCORE,
    MappingResult,
    MatchedPair,
    MultiPair,
    PendingPairs,
    UnmatchedKey,
    UnmatchedReason,
    matched_pairs,
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
    proposals = candidates.proposals
    fields = _fields_of(proposals)
    # every signal of every pair read once; scores, features and labels cut columns from it
    table = Breakdowns(fields["breakdown"])
    raws = _scores(table, w)
    confidence = fields["confidence"]
    # one feature matrix through the map instead of one call per pair (100k pairs)
    probs = _probabilities(fields, table, raws) if calibrated else raws
    labels = _labels(confidence, table, probs, calibrated=calibrated)
    accepted, rejected, reported = accept_many(
        proposals, probs, labels, bar, conservative=conservative, fields=fields
    )
    raw = raws.tolist()
    build = functools.partial(_matched, proposals, accepted, reported, raw, labels)
    if set(labels) <= set(CONFIDENCES):
        # a large mapping is often read only as source → target: its MatchedPairs are
        # built when first asked for (every label, not just the accepted ones', is checked
        # here: one pass; a label outside the vocabulary is rare and builds them at once)
        pairs: PendingPairs | list[MatchedPair] = PendingPairs(
            list(map(fields["source"].__getitem__, accepted)),
            list(map(fields["target"].__getitem__, accepted)),
            build,
        )
    else:
        pairs = build()  # refuses the label outside the vocabulary, naming its pair
    rejected_sources = {proposals[i].source for i in rejected}
    un_src: list[UnmatchedKey] = []
    un_tgt: list[UnmatchedKey] = []
    # the modules' pairs that rejected buffers follow, among the accepted ones
    followed = {proposals[i].follows for i in rejected} - {None}
    followed &= {proposals[i].source for i in accepted} if followed else set()
    for i in rejected:
        p, score, label = proposals[i], reported[i], labels[i]
        why = (
            f"best candidate {p.target} scored {score:.3f}, below the "
            f"{'conservative bar' if strategy == 'conservative' else 'threshold'} {bar:.2f}"
        )
        if strategy == "conservative" and label == "ambiguous" and score >= bar:
            why = f"best candidate {p.target} is ambiguous: an alternative scored nearly as well"
        elif strategy == "conservative" and label != "high" and score >= bar:
            why = f"best candidate {p.target} is a low-confidence guess ({p.stage})"
        if p.follows is not None and p.follows not in followed:
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
        if (
            reason is UnmatchedReason.LOST_TO_BETTER
            and n.side == "source"
            and n.best_taken_by in rejected_sources
        ):
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
    in, out when it is out. (:func:`accept_many` on dicts.)
    """
    keys = list(scored)
    proposals = [scored[k][0] for k in keys]
    scores = np.array([scored[k][1] for k in keys], np.float64)
    labels = [p.confidence for p in proposals]
    accepted, rejected, reported = accept_many(
        proposals, scores, labels, bar, conservative=conservative
    )
    return (
        {keys[i]: (proposals[i], reported[i]) for i in accepted},
        {keys[i]: (proposals[i], reported[i]) for i in rejected},
    )


def accept_many(
    proposals: Sequence[Proposal],
    scores: np.ndarray,
    labels: Sequence[str],
    bar: float,
    *,
    conservative: bool,
    fields: Mapping[str, Sequence[object]] | None = None,
) -> tuple[list[int], list[int], list[float]]:
    """Proposals + their scores and confidence labels + bar (+ their fields as
    :func:`_fields_of` reads them, when already read) → (numbers of the accepted
    proposals, of the rejected ones, the score each proposal reports): the rules of
    :func:`accept`, on arrays.

    The accepted come in proposal order, the pairs that follow no other first, then the
    followers; so do the rejected.
    """
    n = len(proposals)
    scores = np.asarray(scores, np.float64)
    follows = fields["follows"] if fields is not None else map(_FOLLOWS, proposals)
    grouped = fields["group"] if fields is not None else map(_GROUP, proposals)
    lead = np.fromiter(map(operator.is_, follows, repeat(None)), bool, n)
    group = np.fromiter(grouped, bool, n) & lead
    # the best score of each unit (module pair) with members matched as a group; only a
    # member below the bar reads it, so without one no unit is worked out
    below = group & (scores < bar)
    best = np.zeros(n, np.float64)
    members = np.flatnonzero(group) if below.any() else np.zeros(0, np.int64)
    if len(members):
        sources = fields["source"] if fields is not None else [p.source for p in proposals]
        targets = fields["target"] if fields is not None else [p.target for p in proposals]
        units: dict[tuple[str, str], int] = {}
        unit = np.array(
            [
                units.setdefault((_module(sources[i]), _module(targets[i])), len(units))
                for i in members.tolist()
            ],
            np.int64,
        )
        top = np.zeros(len(units), np.float64)
        np.fmax.at(top, unit, scores[members])  # max(0.0, ...) per unit, NaN never wins
        best[members] = top[unit]
    carried = below & (bar <= best)
    ok = (scores >= bar) | carried
    if conservative:
        ok &= np.fromiter(map(operator.eq, labels, repeat("high")), bool, n)
    reported = np.where(carried, best, scores).tolist()
    accepted = np.flatnonzero(lead & ok).tolist()
    rejected = np.flatnonzero(lead & ~ok).tolist()
    followers = np.flatnonzero(~lead).tolist()
    if followers:
        # a buffer is in when the pair it follows is (reporting the better of the two
        # scores), out when it is out
        taken = {proposals[i].source: reported[i] for i in accepted}
        for i in followers:
            p = proposals[i]
            lead_score = taken.get(p.follows)  # type: ignore[arg-type]
            if lead_score is None:
                rejected.append(i)
                continue
            if p.stage == "buffer":
                reported[i] = max(reported[i], lead_score)
            taken[p.source] = reported[i]
            accepted.append(i)
    return accepted, rejected, reported


_FOLLOWS = operator.attrgetter("follows")
_GROUP = operator.attrgetter("group")


def _matched(
    proposals: Sequence[Proposal],
    accepted: list[int],
    reported: list[float],
    raw: list[float],
    labels: list[str],
) -> list[MatchedPair]:
    """Proposals + numbers of the accepted ones + each one's reported score, raw score and
    label → their MatchedPairs, the raw score added to (a copy of) each breakdown: the
    candidates stay as they were, for another threshold."""
    chosen = [proposals[i] for i in accepted]
    return matched_pairs(
        [p.source for p in chosen],
        [p.target for p in chosen],
        [reported[i] for i in accepted],
        [{**p.breakdown, "raw": raw[i]} for p, i in zip(chosen, accepted, strict=True)],
        [p.source_shape for p in chosen],
        [p.target_shape for p in chosen],
        [p.transform for p in chosen],
        [p.group for p in chosen],
        [p.stage for p in chosen],
        [labels[i] for i in accepted],
        [p.note for p in chosen],
    )


def _fields_of(proposals: Sequence[Proposal]) -> dict[str, Sequence[Any]]:
    """Proposals → each field the assignment reads of every proposal (a tuple per field, in
    proposal order), all read in one pass: 100k proposals lie scattered in memory, and
    visiting each once rather than once per field is what saves the time."""
    if not proposals:
        return {name: () for name in _READ_FIELDS}
    return dict(zip(_READ_FIELDS, zip(*map(_READ, proposals), strict=True), strict=True))


_READ_FIELDS = ("breakdown", "confidence", "stage", "note", "follows", "group", "source", "target")
_READ = operator.attrgetter(*_READ_FIELDS)


def _probabilities(
    fields: Mapping[str, Sequence[Any]], table: Breakdowns, raws: np.ndarray
) -> np.ndarray:
    """Proposals' fields (:func:`_fields_of`) + their breakdowns read as columns + their raw
    scores → each one's calibrated probability (one matrix pass)."""
    if not len(table):
        return np.zeros(0, np.float64)
    x = feature_matrix(
        table,
        raws,
        confidence=fields["confidence"],
        stage=fields["stage"],
        note=fields["note"],
    )
    return load().probabilities(x)


def _labels(
    confidence: Sequence[str], table: Breakdowns, probs: np.ndarray, *, calibrated: bool
) -> list[str]:
    """Proposals' confidence labels + their breakdowns read as columns + their probabilities
    (their raw scores when not ``calibrated``) → each one's confidence label: ``ambiguous``
    when a same-shape alternative is nearly as good
    (:func:`~weightmapper.engine.margins.ambiguous_mask`), ``low`` when its probability is
    below :data:`~weightmapper.result.CONFIDENT_SCORE`, else its own."""
    out = list(confidence)
    high = np.fromiter(map(operator.eq, out, repeat("high")), bool, len(out))
    ambiguous = high & ambiguous_mask(table)
    for i in np.flatnonzero(ambiguous).tolist():
        out[i] = "ambiguous"
    if calibrated:
        # the evidence, weighed on the bench, does not settle it
        for i in np.flatnonzero(high & ~ambiguous & (probs < CONFIDENT_SCORE)).tolist():
            out[i] = "low"
    return out


def _calibrated_multi(m: MultiPair) -> MultiPair:
    """Split or merge → the same with its calibrated probability as score, ``raw`` kept."""
    prob = load().probability(m.breakdown, m.score, confidence=m.confidence, multi=True)
    confidence = "low" if m.confidence == "high" and prob < CONFIDENT_SCORE else m.confidence
    return replace(m, score=prob, breakdown={**m.breakdown, "raw": m.score}, confidence=confidence)


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _scores(table: Breakdowns, weights: Mapping[str, float]) -> np.ndarray:
    """Breakdowns read as columns + weights → combined score of each (vectorized
    :func:`combine`)."""
    if not len(table):
        return np.zeros(0, np.float64)
    keys = [k for k, v in weights.items() if v]
    total = sum(weights[k] for k in keys)
    cols = columns(table, keys)
    mat = np.empty((len(table), len(keys)), np.float64)  # C order, one pair per row
    for n, k in enumerate(keys):
        mat[:, n] = cols[k]
    w = np.array([weights[k] for k in keys], dtype=np.float64)
    return np.clip(mat @ w / total, 0.0, 1.0)
