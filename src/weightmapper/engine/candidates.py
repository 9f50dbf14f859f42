"""Candidates: the threshold-free outcome of scoring.

``score_inventories`` (:mod:`weightmapper.engine.cascade`) runs the whole cascade and
returns Candidates: every proposed pair with its per-signal breakdown, and for every key
left over its best alternative and why. :func:`weightmapper.engine.assign.assign` applies a
threshold and a strategy, which is cheap, so a pipeline can cache scoring and re-run the
assignment. Candidates pickle and round-trip through JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from weightmapper.result import MultiPair, UnmatchedReason
from weightmapper.transforms import TransformSpec


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
    note: str = ""
    """What the pair rests on beyond its scores (a layout assumed from names), if anything."""

    def relabelled(self, breakdown: dict[str, float], confidence: str) -> Proposal:
        """Breakdown + confidence label → a copy of this proposal carrying them.

        What ``dataclasses.replace`` gives, without its per-call field walk: the assignment
        relabels every proposal (100k of them for a large checkpoint).
        """
        new = object.__new__(Proposal)
        fields = new.__dict__
        fields.update(self.__dict__)
        fields["breakdown"] = breakdown
        fields["confidence"] = confidence
        return new

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
            "note": self.note,
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
            str(d.get("note", "")),
        )


def proposals_of(rows: Iterable[tuple[Any, ...]]) -> list[Proposal]:
    """Rows of every field of :class:`Proposal`, in its field order → the Proposals, what
    ``Proposal(*row)`` gives for each row, without the frozen dataclass's per-field
    ``__init__`` (a large checkpoint makes 100k of them): each proposal is given its
    fields' dict whole."""
    out = []
    new = object.__new__
    give = object.__setattr__  # the frozen class refuses a plain assignment
    for row in rows:
        proposal = new(Proposal)
        give(proposal, "__dict__", _fields(*row))
        out.append(proposal)
    return out


def _fields(
    source: str, target: str, breakdown: dict[str, float], transform: TransformSpec,
    stage: str, group: bool, confidence: str, source_shape: tuple[int, ...],
    target_shape: tuple[int, ...], follows: str | None, note: str,
) -> dict[str, Any]:  # fmt: skip
    """A :class:`Proposal`'s fields, in its field order → the dict of them its instance
    holds (one dict display: the cheapest way to build it)."""
    return {
        "source": source, "target": target, "breakdown": breakdown, "transform": transform,
        "stage": stage, "group": group, "confidence": confidence, "source_shape": source_shape,
        "target_shape": target_shape, "follows": follows, "note": note,
    }  # fmt: skip


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
