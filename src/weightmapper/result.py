"""MappingResult: the answer of the mapper, a read-only source → target Mapping with reasons.

Everything a later stage needs travels here: each pair's score and per-signal breakdown,
its tensor transform, multi-tensor splits and merges, and a reason for every key left
unmatched. ``to_dict`` / ``from_dict`` give the JSON form that mapping files and reports use.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from itertools import chain
from typing import Any

import torch

from weightmapper._version import __version__
from weightmapper.errors import CheckpointFormatError, KeyCollisionError, MappingError
from weightmapper.transforms import IDENTITY, TransformSpec, apply_one, apply_transform

MAPPING_SCHEMA_VERSION = "1.0"
CONFIDENCES: tuple[str, ...] = ("high", "ambiguous", "low")
"""Labels of a pair: ``high``; ``ambiguous`` when an alternative (a swap with a same-shape
sibling, another target) scored nearly as well; ``low`` for a guess the evidence could not
settle (a square transpose read from a bare checkpoint)."""
CONFIDENT_SCORE = 0.9
"""Least score (the estimated probability of being right) of a *confident* pair, which is
also labelled ``high``: the pairs counted by the confident coverage."""


def _check_confidence(label: str, what: str) -> None:
    """Confidence label of a pair → nothing; a label outside :data:`CONFIDENCES` raises
    :class:`MappingError` (a report or mapping file carrying it would fail its schema)."""
    if label not in CONFIDENCES:
        raise MappingError(
            f"{what} has confidence {label!r}; expected one of {', '.join(CONFIDENCES)}. "
            "Fix the label in the mapping file, or map again to rebuild it."
        )


class UnmatchedReason(str, Enum):
    """Why a key was left without a partner; the value is the stable code used in JSON."""

    NO_SHAPE_PARTNER = "no_shape_partner"
    """No key on the other side has a compatible shape (even under a transform)."""
    BELOW_THRESHOLD = "below_threshold"
    """The best candidate scored under the threshold (or the strategy's confidence bar)."""
    LOST_TO_BETTER = "lost_to_better_candidate"
    """Its candidates were all taken by pairs that scored higher."""
    BUFFER_EXCLUDED = "buffer_excluded"
    """A buffer with no counterpart in its matched module (buffer mode ``exclude``)."""
    INCOMPATIBLE = "incompatible_component"
    """Every shape-compatible candidate lies in a component family declared incompatible."""
    AMBIGUOUS = "ambiguous"
    """Several candidates tie and no evidence separates them; a guess would be unsafe."""
    NO_CANDIDATES = "no_candidates"
    """The other side has no keys left at all."""


STATUS_STATES = ("proven_equal", "loads_not_proven", "differs", "does_not_load")
_STATUS_LABELS = {
    "proven_equal": "proven equal",
    "loads_not_proven": "loads, not proven",
    "differs": "differs",
    "does_not_load": "does not load",
}


@dataclass(frozen=True)
class MappingStatus:
    """What is known of a mapping: outputs proven equal, only loads, differs, or does not load."""

    state: str = "loads_not_proven"
    """One of :data:`STATUS_STATES`."""
    detail: str = ""
    """The evidence: differences and input for a proof, the module and what was tried."""
    module: str | None = None
    """For ``differs``: the target module where the outputs first differ."""

    def __post_init__(self) -> None:
        if self.state not in STATUS_STATES:
            raise MappingError(
                f"unknown mapping status {self.state!r}; expected one of {list(STATUS_STATES)}"
            )

    def label(self) -> str:
        """MappingStatus → ``proven equal``, ``loads, not proven``, ``differs at X`` …"""
        if self.state == "differs" and self.module is not None:
            return f"differs at {self.module or '(the whole network)'}"
        return _STATUS_LABELS[self.state]

    def to_dict(self) -> dict[str, Any]:
        """MappingStatus → ``{"state", "label", "detail", "module"}``."""
        return {
            "state": self.state,
            "label": self.label(),
            "detail": self.detail,
            "module": self.module,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> MappingStatus | None:
        """JSON dict (or None) → MappingStatus (or None)."""
        if not d:
            return None
        return cls(
            str(d.get("state", "loads_not_proven")), str(d.get("detail", "")), d.get("module")
        )


PROVE_HINT = "give the source module to prove it"
"""What proves a mapping whose target is a module: running the source beside it."""
CHECKPOINT_TARGET_HINT = (
    "the target is a checkpoint, which cannot be run: give the target as a module "
    "(its architecture) and the source module to prove it"
)
"""What proves a mapping whose target is only a checkpoint: nothing runs it as it is."""


def status_of(
    validation: Any = None,
    functional_check: Any = None,
    unmapped_targets: Sequence[str] = (),
    *,
    target_runs: bool = True,
) -> MappingStatus:
    """A load check and an output check (objects or dicts, either may be None) → MappingStatus.

    Without either check, ``unmapped_targets`` (target keys the mapping gives no source) decide:
    a strict load would miss them, so such a mapping does not load. ``target_runs=False`` (the
    target is a checkpoint, not a module) makes an unproven status say what would prove it.
    """
    hint = PROVE_HINT if target_runs else CHECKPOINT_TARGET_HINT

    def as_dict(obj: Any) -> Mapping[str, Any] | None:
        return obj.to_dict() if hasattr(obj, "to_dict") else obj

    check, valid = as_dict(functional_check), as_dict(validation)
    if check:
        diffs = diff_text(check)
        if check.get("not_finite"):
            return MappingStatus("loads_not_proven", f"outputs compared, but {check['not_finite']}")
        if check.get("equal"):
            return MappingStatus("proven_equal", diffs)
        where = check.get("first_diverging_target")
        shapes = check.get("output_shapes")
        return MappingStatus(
            "differs",
            # Outputs of different shapes have no element-wise difference worth printing.
            (f"the outputs differ in shape ({shapes_text(shapes)})" if shapes else "outputs differ")
            + ("" if shapes else f": {diffs}")
            + (f"; first differs at {check.get('first_diverging')}" if where is not None else ""),
            module=where,
        )
    if valid and not valid.get("ok", True):
        return MappingStatus("does_not_load", "the converted checkpoint does not load strictly")
    if valid:
        return MappingStatus(
            "loads_not_proven",
            f"loads strictly; outputs not compared ({hint})",
        )
    if unmapped_targets:
        names = sorted(unmapped_targets)
        return MappingStatus(
            "does_not_load",
            f"{len(names)} target tensor(s) have no source, e.g. {', '.join(names[:3])}: a "
            "strict load would miss them; map them, or load with strict=False knowing they "
            "keep their initial values",
        )
    return MappingStatus("loads_not_proven", f"outputs not compared ({hint})")


def shapes_text(shapes: Sequence[Sequence[int]]) -> str:
    """(target's output shape, source's) → ``target (1, 12), source (1, 10)``."""
    target, source = shapes
    return f"target {tuple(target)}, source {tuple(source)}"


def check_verdict(check: Mapping[str, Any]) -> str:
    """Functional-check dict → ``equal``, ``not proven`` (the source's output is not finite)
    or ``DIFFER``."""
    if check.get("equal"):
        return "equal"
    return "not proven" if check.get("not_finite") else "DIFFER"


def diff_text(check: Mapping[str, Any]) -> str:
    """Functional-check dict → ``max abs diff 3e-07, max rel diff 1e-07``, or why there are no
    numbers: the outputs differ in shape (no element-wise difference), or nothing was measured.
    """
    if check.get("not_finite"):
        return str(check["not_finite"])
    shapes = check.get("output_shapes")
    if shapes:
        return f"no element-wise difference: the outputs differ in shape ({shapes_text(shapes)})"

    max_abs = finite_number(check.get("max_abs_diff"))
    max_rel = finite_number(check.get("max_rel_diff"))
    if max_abs is None:
        return "differences not measured"
    return f"max abs diff {max_abs:.3g}" + (
        f", max rel diff {max_rel:.3g}" if max_rel is not None else ""
    )


def finite_number(value: Any) -> float | None:
    """Any value → itself when it is a finite number, else None (JSON has no NaN or
    infinity, and a report may hold a string or nothing where a number was not measured)."""
    return value if isinstance(value, int | float) and math.isfinite(value) else None


@dataclass(frozen=True)
class MatchedPair:
    """One source tensor mapped onto one target tensor."""

    source: str
    target: str
    score: float
    """Estimated probability in [0, 1] that the pair is right (the calibrated combined score;
    the raw weighted mean of the signals is ``breakdown["raw"]``)."""
    breakdown: dict[str, float] = field(default_factory=dict)
    """Per-signal sub-scores in [0, 1] (``shape``, ``name``, ``hierarchy``, ``order``, ...),
    the ``raw`` combined score, and the runner-up's raw score and the ``margin`` over it."""
    source_shape: tuple[int, ...] = ()
    target_shape: tuple[int, ...] = ()
    transform: TransformSpec = IDENTITY
    group: bool = True
    """True when matched as part of a whole parameter group, False when matched alone."""
    stage: str = ""
    """Cascade stage that settled it: ``exact``, ``normalized``, ``structural``, ``assignment``."""
    confidence: str = "high"
    """``high``, ``ambiguous`` (an alternative scored nearly as well) or ``low`` (a guess the
    evidence could not settle, such as a square transpose); see :data:`CONFIDENCES`."""
    note: str = ""
    """What the pair rests on beyond its scores (``layout assumed from names: …``), if anything."""

    def __post_init__(self) -> None:
        _check_confidence(self.confidence, f"pair {self.source} → {self.target}")

    @property
    def confident(self) -> bool:
        """True for a ``high`` pair scored at least :data:`CONFIDENT_SCORE`."""
        return self.confidence == "high" and self.score >= CONFIDENT_SCORE

    def to_dict(self) -> dict[str, Any]:
        """MatchedPair → JSON-ready dict."""
        return {
            "source": self.source,
            "target": self.target,
            "score": round(float(self.score), 6),
            "breakdown": {k: round(float(v), 6) for k, v in sorted(self.breakdown.items())},
            "source_shape": list(self.source_shape),
            "target_shape": list(self.target_shape),
            "transform": self.transform.to_dict(),
            "group": self.group,
            "stage": self.stage,
            "confidence": self.confidence,
            **({"note": self.note} if self.note else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MatchedPair:
        """JSON dict → MatchedPair."""
        return cls(
            source=_key_name(d, "source"),
            target=_key_name(d, "target"),
            score=float(d.get("score", 1.0)),
            breakdown={k: float(v) for k, v in (d.get("breakdown") or {}).items()},
            source_shape=tuple(d.get("source_shape") or ()),
            target_shape=tuple(d.get("target_shape") or ()),
            transform=TransformSpec.from_dict(d.get("transform")),
            group=bool(d.get("group", True)),
            stage=str(d.get("stage", "")),
            confidence=str(d.get("confidence", "high")),
            note=str(d.get("note", "")),
        )


def matched_pairs(*fields: Sequence[Any]) -> list[MatchedPair]:
    """One sequence per field of :class:`MatchedPair`, in its field order, all of one length
    → the MatchedPairs, what ``MatchedPair(*row)`` gives for each row.

    A large checkpoint maps 100k pairs: the labels are checked once for all of them, and
    each pair is filled in without the frozen dataclass's per-field ``__init__``.
    """
    names = tuple(MatchedPair.__dataclass_fields__)
    if len(fields) != len(names):
        raise TypeError(f"matched_pairs takes {len(names)} field sequences, got {len(fields)}")
    label = names.index("confidence")
    bad = set(fields[label]) - set(CONFIDENCES)
    if bad:  # the first such pair raises, as its own construction would
        MatchedPair(*next(row for row in zip(*fields, strict=True) if row[label] in bad))
    out = []
    new = object.__new__
    for row in zip(*fields, strict=True):
        pair = new(MatchedPair)
        pair.__dict__.update(zip(names, row, strict=True))
        out.append(pair)
    return out


@dataclass(frozen=True)
class MultiPair:
    """Several tensors on one side ↔ one or several on the other: a split or a merge.

    A split has one source and several targets (fused qkv → q, k, v); a merge has several
    sources and one target (per-expert tensors stacked into one).
    """

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    transform: TransformSpec
    score: float
    breakdown: dict[str, float] = field(default_factory=dict)
    confidence: str = "high"

    def __post_init__(self) -> None:
        _check_confidence(self.confidence, f"{self.kind} {', '.join(self.sources)}")

    @property
    def confident(self) -> bool:
        """True for a ``high`` split or merge scored at least :data:`CONFIDENT_SCORE`."""
        return self.confidence == "high" and self.score >= CONFIDENT_SCORE

    @property
    def kind(self) -> str:
        """``split`` (one source, many targets) or ``merge`` (many sources, one target)."""
        return "split" if len(self.sources) == 1 else "merge"

    def to_dict(self) -> dict[str, Any]:
        """MultiPair → JSON-ready dict."""
        return {
            "kind": self.kind,
            "sources": list(self.sources),
            "targets": list(self.targets),
            "transform": self.transform.to_dict(),
            "score": round(float(self.score), 6),
            "breakdown": {k: round(float(v), 6) for k, v in sorted(self.breakdown.items())},
            "confidence": self.confidence,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiPair:
        """JSON dict → MultiPair."""
        return cls(
            sources=_key_names(d, "sources"),
            targets=_key_names(d, "targets"),
            transform=TransformSpec.from_dict(d.get("transform")),
            score=float(d.get("score", 1.0)),
            breakdown={k: float(v) for k, v in (d.get("breakdown") or {}).items()},
            confidence=str(d.get("confidence", "high")),
        )


@dataclass(frozen=True)
class UnmatchedKey:
    """A key left without a partner, and why."""

    name: str
    side: str
    """``source`` or ``target``."""
    reason: UnmatchedReason
    detail: str = ""
    """Human sentence with the evidence (best candidate, its score, the threshold)."""
    shape: tuple[int, ...] = ()
    best_candidate: str | None = None
    best_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """UnmatchedKey → JSON-ready dict."""
        return {
            "name": self.name,
            "side": self.side,
            "reason": self.reason.value,
            "detail": self.detail,
            "shape": list(self.shape),
            "best_candidate": self.best_candidate,
            "best_score": None if self.best_score is None else round(float(self.best_score), 6),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UnmatchedKey:
        """JSON dict → UnmatchedKey."""
        return cls(
            name=_key_name(d, "name"),
            side=str(d["side"]),
            reason=UnmatchedReason(d["reason"]),
            detail=d.get("detail", ""),
            shape=tuple(d.get("shape") or ()),
            best_candidate=d.get("best_candidate"),
            best_score=d.get("best_score"),
        )


def _key_name(d: Mapping[str, Any], field_name: str) -> str:
    """A JSON object + field → that field as a tensor key; MappingError unless a non-empty str."""
    value = d[field_name]
    if not isinstance(value, str) or not value:
        raise MappingError(
            f"mapping field {field_name!r} must be a tensor key (a non-empty string), found "
            f"{value!r}; expected the JSON that `weightmapper map --out` writes"
        )
    return value


def _key_names(d: Mapping[str, Any], field_name: str) -> tuple[str, ...]:
    """A JSON object + list field → tuple of tensor keys; MappingError unless non-empty strs."""
    values = d[field_name]
    if not isinstance(values, list) or not values:
        raise MappingError(f"mapping field {field_name!r} must be a non-empty list of keys")
    return tuple(_key_name({field_name: v}, field_name) for v in values)


@dataclass(frozen=True)
class PendingPairs:
    """One-to-one pairs not built yet: their source and target keys (one order), and how to
    build their MatchedPairs (in that order). A MappingResult given these answers every
    source → target question at once and builds the pairs when first asked for one (a
    100k-tensor mapping is often only read as a mapping)."""

    sources: list[str]
    targets: list[str]
    build: Callable[[], list[MatchedPair]]
    """() → the MatchedPairs, one per source, in the order of :attr:`sources`."""


_SOURCE = operator.attrgetter("source")
_TARGET = operator.attrgetter("target")


def _refuse_collisions(pairs: Sequence[MatchedPair], multi: Sequence[MultiPair]) -> None:
    """Pairs (sorted by source) + splits and merges → KeyCollisionError naming the target
    keys that several of them write (the first five, in the order they are written)."""
    seen_targets: dict[str, list[str]] = {}
    for p in pairs:
        seen_targets.setdefault(p.target, []).append(p.source)
    for m in multi:
        for t in m.targets if m.kind == "split" else m.targets[:1]:
            seen_targets.setdefault(t, []).append(" + ".join(m.sources))
    collisions = {t: s for t, s in seen_targets.items() if len(s) > 1}
    raise KeyCollisionError(
        f"{len(collisions)} target key(s) would receive several source tensors: "
        + "; ".join(f"{t} ← {s}" for t, s in list(collisions.items())[:5]),
        collisions,
    )


class MappingResult(Mapping[str, str]):
    """Read-only source key → target key mapping, with scores, transforms and reasons.

    Iterating, indexing and ``len`` see the one-to-one pairs only; multi-tensor pairs are
    in :attr:`splits`, :attr:`merges` and :attr:`multi`.
    """

    def __init__(
        self,
        pairs: list[MatchedPair] | tuple[MatchedPair, ...] | PendingPairs,
        unmatched_source: list[UnmatchedKey] | tuple[UnmatchedKey, ...] = (),
        unmatched_target: list[UnmatchedKey] | tuple[UnmatchedKey, ...] = (),
        multi: list[MultiPair] | tuple[MultiPair, ...] = (),
        *,
        source_count: int | None = None,
        target_count: int | None = None,
        settings: dict[str, Any] | None = None,
        source_name: str = "source",
        target_name: str = "target",
        metadata: dict[str, Any] | None = None,
        status: MappingStatus | None = None,
    ) -> None:
        self._built: dict[str, MatchedPair] | None = None
        self._pending: tuple[Callable[[], list[MatchedPair]], list[str]] | None = None
        if not isinstance(pairs, PendingPairs) or not self._defer(pairs):
            # built pairs (pending ones with a source twice are built to be refused by name)
            self._keep(pairs.build() if isinstance(pairs, PendingPairs) else pairs)
        written = [t for m in multi for t in (m.targets if m.kind == "split" else m.targets[:1])]
        if len(set(chain(self._targets.values(), written))) != len(self._targets) + len(written):
            _refuse_collisions(list(self._pairs.values()), multi)
        self.multi: tuple[MultiPair, ...] = tuple(multi)
        self.unmatched_source: tuple[UnmatchedKey, ...] = tuple(
            sorted(unmatched_source, key=lambda u: u.name)
        )
        self.unmatched_target: tuple[UnmatchedKey, ...] = tuple(
            sorted(unmatched_target, key=lambda u: u.name)
        )
        n_multi_src = sum(len(m.sources) for m in self.multi)
        n_multi_tgt = sum(len(m.targets) for m in self.multi)
        self.source_count = (
            source_count
            if source_count is not None
            else len(self._targets) + n_multi_src + len(self.unmatched_source)
        )
        self.target_count = (
            target_count
            if target_count is not None
            else len(self._targets) + n_multi_tgt + len(self.unmatched_target)
        )
        self.settings: dict[str, Any] = dict(settings or {})
        self.source_name = source_name
        self.target_name = target_name
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.status: MappingStatus | None = status
        """What is known of this mapping; None until a load or output check sets it."""

    def _defer(self, pairs: PendingPairs) -> bool:
        """Unbuilt pairs → True with their keys kept sorted by source, as the built pairs
        will be, when each source comes once (the pairs are built when first asked for,
        :attr:`_pairs`); False, keeping nothing, otherwise."""
        # sorted (source, target) pairs are sorted by source when each source comes once
        targets = dict(sorted(zip(pairs.sources, pairs.targets, strict=True)))
        if len(targets) != len(pairs.sources):
            return False
        self._targets: dict[str, str] = targets
        self._pending = (pairs.build, pairs.sources)
        return True

    def _keep(self, pairs: Sequence[MatchedPair]) -> None:
        """MatchedPairs → kept sorted by source; KeyCollisionError for a source mapped twice."""
        ordered = sorted(pairs, key=_SOURCE)
        self._built = {p.source: p for p in ordered}
        if len(self._built) != len(ordered):
            seen: set[str] = set()
            for p in ordered:
                if p.source in seen:
                    raise KeyCollisionError(f"source key {p.source!r} is mapped twice")
                seen.add(p.source)
        self._targets = {source: p.target for source, p in self._built.items()}

    # --- Mapping protocol ------------------------------------------------------------------
    def __getitem__(self, key: str) -> str:
        return self._targets[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    @property
    def _pairs(self) -> dict[str, MatchedPair]:
        """Source key → its MatchedPair, sorted by source; pairs handed over as
        :class:`PendingPairs` are built here, once, when first asked for."""
        if self._built is None:
            build, sources = self._pending  # type: ignore[misc]  # set while _built is None
            made = build()
            order = sorted(range(len(sources)), key=sources.__getitem__)
            self._built = {p.source: p for p in map(made.__getitem__, order)}
            self._pending = None
        return self._built

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with its pairs built (a build function is no data)."""
        state = dict(self.__dict__)
        state["_built"], state["_pending"] = self._pairs, None
        return state

    def __repr__(self) -> str:
        cov = self.coverage()
        return (
            f"MappingResult({len(self)} pairs, {len(self.multi)} split/merge, "
            f"source coverage {cov['source_coverage']:.1%}, "
            f"target coverage {cov['target_coverage']:.1%})"
        )

    # --- queries ---------------------------------------------------------------------------
    @property
    def pairs(self) -> tuple[MatchedPair, ...]:
        """All one-to-one pairs, sorted by source key."""
        return tuple(self._pairs.values())

    def pair(self, source: str) -> MatchedPair:
        """Source key → its MatchedPair (KeyError if unmapped)."""
        return self._pairs[source]

    def target_to_source(self) -> dict[str, str]:
        """Target key → source key for the one-to-one pairs."""
        return {t: s for s, t in self._targets.items()}

    @property
    def splits(self) -> dict[str, list[str]]:
        """Source key → the target keys it is split into."""
        return {m.sources[0]: list(m.targets) for m in self.multi if m.kind == "split"}

    @property
    def merges(self) -> dict[str, list[str]]:
        """Target key → the source keys merged (concatenated or stacked) into it."""
        return {m.targets[0]: list(m.sources) for m in self.multi if m.kind == "merge"}

    def get_mapping_with_scores(self) -> dict[str, tuple[str, float]]:
        """MappingResult → {source: (target, score)}, highest score first, then by source key.

        A dict for lookups (``scores["fc.weight"]``) whose order ranks the pairs
        (``list(scores.items())[:3]`` are the three best).
        """
        ranked = sorted(self._pairs.values(), key=lambda p: (-p.score, p.source))
        return {p.source: (p.target, p.score) for p in ranked}

    def get_unmatched(self) -> dict[str, list[str]]:
        """MappingResult → {"source": [...], "target": [...]} unmatched key names, sorted."""
        return {
            "source": [u.name for u in self.unmatched_source],
            "target": [u.name for u in self.unmatched_target],
        }

    def unmatched_reasons(self) -> dict[str, dict[str, UnmatchedKey]]:
        """MappingResult → {"source": {name: UnmatchedKey}, "target": {...}}."""
        return {
            "source": {u.name: u for u in self.unmatched_source},
            "target": {u.name: u for u in self.unmatched_target},
        }

    def score_breakdown(self, source: str) -> dict[str, float]:
        """Source key → its per-signal sub-scores."""
        return dict(self._pairs[source].breakdown)

    def coverage(self) -> dict[str, float | int]:
        """MappingResult → counts and the fraction of source and target tensors mapped, by all
        pairs and by the confident ones (``high`` and scored ≥ :data:`CONFIDENT_SCORE`)."""
        n_src = len(self._targets) + sum(len(m.sources) for m in self.multi)
        n_tgt = len(self._targets) + sum(len(m.targets) for m in self.multi)
        sure = [p for p in self._pairs.values() if p.confident]
        sure_multi = [m for m in self.multi if m.confident]
        c_src = len(sure) + sum(len(m.sources) for m in sure_multi)
        c_tgt = len(sure) + sum(len(m.targets) for m in sure_multi)
        return {
            "mapped_pairs": len(self._pairs),
            "multi_pairs": len(self.multi),
            "source_total": self.source_count,
            "target_total": self.target_count,
            "source_mapped": n_src,
            "target_mapped": n_tgt,
            "source_unmatched": len(self.unmatched_source),
            "target_unmatched": len(self.unmatched_target),
            "source_coverage": n_src / self.source_count if self.source_count else 1.0,
            "target_coverage": n_tgt / self.target_count if self.target_count else 1.0,
            "confident_pairs": len(sure) + len(sure_multi),
            "source_confident_coverage": c_src / self.source_count if self.source_count else 1.0,
            "target_confident_coverage": c_tgt / self.target_count if self.target_count else 1.0,
        }

    # --- conversion ------------------------------------------------------------------------
    def convert(self, state_dict: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Source state dict or checkpoint as loaded → target-named state dict, transforms applied.

        Takes what ``torch.load`` returned: a state dict, also with wrapper prefixes
        (``module.``, ``_orig_mod.``) or under a prefix the mapping lacks (Lightning's
        ``model.``), or a checkpoint dict holding one (Lightning's ``state_dict``, a usual
        nesting key). Source keys the mapping does not mention are dropped; when mapped
        source keys are missing whatever the cleaning, CheckpointFormatError lists the
        missing and the unexpected keys.
        """
        tensors = _source_tensors(state_dict, self._source_keys())
        out: dict[str, torch.Tensor] = {}
        for s, p in self._pairs.items():
            out[p.target] = apply_one(p.transform, tensors[s])
        for m in self.multi:
            produced = apply_transform(m.transform, [tensors[s] for s in m.sources])
            out.update(zip(m.targets, produced, strict=True))
        return out

    def _source_keys(self) -> list[str]:
        """MappingResult → every source key a conversion reads (pairs, then splits/merges)."""
        return [*self._targets, *(s for m in self.multi for s in m.sources)]

    # --- JSON ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """MappingResult → JSON-ready dict (the ``mapping`` part of a report)."""
        return {
            "schema_version": MAPPING_SCHEMA_VERSION,
            "tool_version": __version__,
            "source_name": self.source_name,
            "target_name": self.target_name,
            "settings": self.settings,
            "coverage": self.coverage(),
            "pairs": [p.to_dict() for p in self._pairs.values()],
            "multi": [m.to_dict() for m in self.multi],
            "unmatched": {
                "source": [u.to_dict() for u in self.unmatched_source],
                "target": [u.to_dict() for u in self.unmatched_target],
            },
            "metadata": self.metadata,
            "status": (
                self.status or status_of(unmapped_targets=self.get_unmatched()["target"])
            ).to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MappingResult:
        """JSON dict (a mapping, or a report holding one under ``mapping``) → MappingResult."""
        if "pairs" not in data and isinstance(data.get("mapping"), dict):
            data = data["mapping"]
        if "pairs" not in data:
            raise CheckpointFormatError(
                "this JSON holds no mapping: expected a 'pairs' list (a weightmapper mapping "
                "or report file). Create one with `weightmapper map`."
            )
        cov = data.get("coverage") or {}
        um = data.get("unmatched") or {}
        if not isinstance(data["pairs"], list) or not isinstance(um, dict):
            raise MappingError(
                "the mapping's 'pairs' must be a list and 'unmatched' an object; expected the "
                "JSON that `weightmapper map --out` writes"
            )
        return cls(
            [MatchedPair.from_dict(p) for p in data["pairs"]],
            [UnmatchedKey.from_dict(u) for u in um.get("source", [])],
            [UnmatchedKey.from_dict(u) for u in um.get("target", [])],
            [MultiPair.from_dict(m) for m in data.get("multi", [])],
            source_count=cov.get("source_total"),
            target_count=cov.get("target_total"),
            settings=data.get("settings") or {},
            source_name=data.get("source_name", "source"),
            target_name=data.get("target_name", "target"),
            metadata=data.get("metadata") or {},
            status=MappingStatus.from_dict(data.get("status")),
        )

    def to_json(self) -> str:
        """MappingResult → canonical JSON text (sorted keys, stable across runs)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_simple(cls, mapping: Mapping[str, str]) -> MappingResult:
        """Plain {source: target} dict → MappingResult with identity transforms, score 1."""
        return cls([MatchedPair(s, t, 1.0, stage="user") for s, t in mapping.items()])


def _source_tensors(obj: Mapping[str, Any], needed: list[str]) -> Mapping[str, torch.Tensor]:
    """Checkpoint as loaded + the source keys a mapping reads → a dict holding all of them.

    Cleaned the way :mod:`weightmapper.checkpoint` cleans a checkpoint file: the state dict
    is taken out of a checkpoint dict, wrapper prefixes are stripped, then a prefix shared
    by every key is dropped, or the one shared by the mapping's keys added. The first form
    that holds every needed key wins; CheckpointFormatError when none does.
    """
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"convert expects a state dict (a mapping of names to tensors), got "
            f"{type(obj).__name__}; pass model.state_dict() or what torch.load returned"
        )
    if all(k in obj for k in needed):
        return obj
    from weightmapper.checkpoint import extract_state_dict, strip_wrapper_prefixes, suggest_prefix

    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        flat: dict[str, torch.Tensor] = {str(k): v for k, v in obj.items()}
        how = []
    else:
        flat, _fmt, meta = extract_state_dict(obj, source="the checkpoint given to convert")
        how = [f"took the state dict under {meta['nested_key']!r}"] if "nested_key" in meta else []
    names, stripped = strip_wrapper_prefixes(flat)
    if stripped:
        how.append(f"stripped {' and '.join(repr(p) for p in stripped)}")
    cleaned = dict(zip(names, flat.values(), strict=True))
    tries = [cleaned]
    shared = suggest_prefix(cleaned)
    if shared is not None:  # Lightning's ``model.``: the mapping was made on the bare model
        tries.append({k[len(shared) :]: v for k, v in cleaned.items()})
    wanted = suggest_prefix(needed)
    if wanted is not None:  # the other way round: the mapping kept a prefix this dict lacks
        tries.append({wanted + k: v for k, v in cleaned.items()})
    for candidate in tries:
        if all(k in candidate for k in needed):
            return candidate
    want = set(needed)
    missing = [k for k in needed if k not in cleaned]
    unexpected = sorted(k for k in cleaned if k not in want)
    tried = f" (after cleaning: {', '.join(how)})" if how else ""
    raise CheckpointFormatError(
        f"the state dict does not hold what the mapping reads{tried}: "
        f"{len(missing)} mapped source key(s) missing, e.g. {missing[:5]}; "
        f"{len(unexpected)} key(s) the mapping does not know, e.g. {unexpected[:5]}. "
        "Pass the checkpoint the mapping was made for, or re-run `weightmapper map` on this one."
    )
