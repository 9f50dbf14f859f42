"""Candidates: the threshold-free outcome of scoring, and its turn into a MappingResult.

``score_inventories`` (in :mod:`weightmapper.assign`) runs the whole cascade and returns
Candidates: every proposed pair with its per-signal breakdown, and for every key left
over its best alternative and why. :func:`assign_candidates` applies a threshold and a
strategy, which is cheap, so a pipeline can cache scoring and re-run assignment.
Candidates pickle and round-trip through JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from weightmapper.errors import MappingError
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.scoring import combine, validate_weights
from weightmapper.transforms import TransformSpec

STRATEGIES: tuple[str, ...] = ("best_match", "conservative", "shape_only")
CONSERVATIVE_FLOOR = 0.85
"""Lowest score the ``conservative`` strategy accepts, whatever the threshold."""


@dataclass(frozen=True)
class Proposal:
    """One proposed source → target pair before thresholding."""

    source: str
    target: str
    breakdown: dict[str, float]
    transform: TransformSpec
    stage: str
    group: bool
    confidence: str
    source_shape: tuple[int, ...]
    target_shape: tuple[int, ...]
    follows: str | None = None
    """For a buffer that follows its module's match: the source key whose pair it follows."""

    def to_dict(self) -> dict[str, Any]:
        """Proposal → JSON-ready dict."""
        return {
            "source": self.source,
            "target": self.target,
            "breakdown": dict(self.breakdown),
            "transform": self.transform.to_dict(),
            "stage": self.stage,
            "group": self.group,
            "confidence": self.confidence,
            "source_shape": list(self.source_shape),
            "target_shape": list(self.target_shape),
            "follows": self.follows,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Proposal:
        """JSON dict → Proposal."""
        return cls(
            d["source"],
            d["target"],
            {k: float(v) for k, v in d["breakdown"].items()},
            TransformSpec.from_dict(d["transform"]),
            d["stage"],
            bool(d["group"]),
            d["confidence"],
            tuple(d["source_shape"]),
            tuple(d["target_shape"]),
            d.get("follows"),
        )


@dataclass(frozen=True)
class KeyNote:
    """A key without a proposal: its best alternative and the reason it stays unmatched."""

    name: str
    side: str
    shape: tuple[int, ...]
    reason: UnmatchedReason
    detail: str = ""
    best_candidate: str | None = None
    best_breakdown: dict[str, float] | None = None
    best_taken_by: str | None = None
    """When the best candidate went to another key: that key."""

    def to_dict(self) -> dict[str, Any]:
        """KeyNote → JSON-ready dict."""
        return {
            "name": self.name,
            "side": self.side,
            "shape": list(self.shape),
            "reason": self.reason.value,
            "detail": self.detail,
            "best_candidate": self.best_candidate,
            "best_breakdown": self.best_breakdown,
            "best_taken_by": self.best_taken_by,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> KeyNote:
        """JSON dict → KeyNote."""
        return cls(
            d["name"],
            d["side"],
            tuple(d["shape"]),
            UnmatchedReason(d["reason"]),
            d.get("detail", ""),
            d.get("best_candidate"),
            d.get("best_breakdown"),
            d.get("best_taken_by"),
        )


@dataclass(frozen=True)
class Candidates:
    """Outcome of scoring two inventories: proposals and notes, no threshold applied yet."""

    source_name: str
    target_name: str
    proposals: list[Proposal]
    notes: list[KeyNote]
    weights: dict[str, float]
    settings: dict[str, Any]
    source_count: int
    target_count: int
    tied: dict[str, dict[str, str]] = field(default_factory=dict)
    """``{"source": {key: primary}, "target": {...}}``: tied duplicates not counted as keys."""
    multi: list[MultiPair] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Candidates → JSON-ready dict."""
        return {
            "source_name": self.source_name,
            "target_name": self.target_name,
            "proposals": [p.to_dict() for p in self.proposals],
            "notes": [n.to_dict() for n in self.notes],
            "weights": dict(self.weights),
            "settings": dict(self.settings),
            "source_count": self.source_count,
            "target_count": self.target_count,
            "tied": self.tied,
            "multi": [m.to_dict() for m in self.multi],
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Candidates:
        """JSON dict → Candidates."""
        return cls(
            d["source_name"],
            d["target_name"],
            [Proposal.from_dict(p) for p in d["proposals"]],
            [KeyNote.from_dict(n) for n in d["notes"]],
            dict(d["weights"]),
            dict(d["settings"]),
            int(d["source_count"]),
            int(d["target_count"]),
            d.get("tied") or {},
            [MultiPair.from_dict(m) for m in d.get("multi") or []],
            d.get("metadata") or {},
        )


def check_strategy(strategy: str) -> str:
    """Strategy name → itself; MappingError listing the known strategies otherwise."""
    if strategy not in STRATEGIES:
        raise MappingError(
            f"unknown strategy {strategy!r}; choose one of {list(STRATEGIES)} "
            "(best_match: best one-to-one pairs above the threshold; conservative: "
            f"only pairs scored ≥ {CONSERVATIVE_FLOOR}; shape_only: score by shape alone)."
        )
    return strategy


def check_threshold(threshold: float) -> float:
    """Threshold → float in [0, 1]; MappingError otherwise."""
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise MappingError(f"threshold must be a number in [0, 1], got {threshold!r}") from None
    if not 0.0 <= t <= 1.0:
        raise MappingError(f"threshold must be in [0, 1], got {threshold!r}")
    return t


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def _scores(proposals: list[Proposal], weights: dict[str, float]) -> list[float]:
    """Proposals + weights → combined score of each (vectorized :func:`combine`)."""
    if not proposals:
        return []
    keys = [k for k, v in weights.items() if v]
    total = sum(weights[k] for k in keys)
    mat = np.array([[p.breakdown.get(k, 0.0) for k in keys] for p in proposals], dtype=np.float64)
    w = np.array([weights[k] for k in keys], dtype=np.float64)
    return np.clip(mat @ w / total, 0.0, 1.0).tolist()


def assign_candidates(
    candidates: Candidates,
    threshold: float = 0.6,
    strategy: str = "best_match",
    weights: dict[str, float] | None = None,
) -> MappingResult:
    """Candidates + threshold + strategy → MappingResult with a reason for every leftover.

    ``weights`` overrides the weights the candidates were scored with (rescoring only:
    the pairing itself is not redone). ``shape_only`` scores by the shape signal alone.
    """
    check_strategy(strategy)
    threshold = check_threshold(threshold)
    w = validate_weights(weights) if weights is not None else dict(candidates.weights)
    if strategy == "shape_only":
        w = {k: (1.0 if k == "shape" else 0.0) for k in w}
    bar = max(threshold, CONSERVATIVE_FLOOR) if strategy == "conservative" else threshold

    scored = {
        p.source: (p, s)
        for p, s in zip(candidates.proposals, _scores(candidates.proposals, w), strict=True)
    }
    accepted: dict[str, tuple[Proposal, float]] = {}
    rejected: dict[str, tuple[Proposal, float]] = {}
    # A parameter group is matched as a unit: its best-scored pair carries the others
    # (a bias whose own name evidence is thinner than its weight's).
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
        ok = (score >= bar or carried) and not (
            strategy == "conservative" and p.confidence != "high"
        )
        # A carried member is accepted as part of its group, so it reports the group's score:
        # nothing in a result scores below the bar it was accepted at.
        (accepted if ok else rejected)[src] = (p, best if carried else score)
    # Buffers follow the pair of their module: in when it is in, out when it is out.
    for src, (p, score) in scored.items():
        if p.follows is None:
            continue
        lead = accepted.get(p.follows)
        if lead is not None:
            accepted[src] = (p, max(score, lead[1]) if p.stage == "buffer" else score)
        else:
            rejected[src] = (p, score)

    pairs = [
        MatchedPair(
            source=p.source,
            target=p.target,
            score=score,
            breakdown=p.breakdown,
            source_shape=p.source_shape,
            target_shape=p.target_shape,
            transform=p.transform,
            group=p.group,
            stage=p.stage,
            confidence=p.confidence,
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
        if strategy == "conservative" and p.confidence != "high" and score >= bar:
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
            "threshold": threshold,
            "strategy": strategy,
            "weights": w,
        },
        source_name=candidates.source_name,
        target_name=candidates.target_name,
        metadata=metadata,
    )
