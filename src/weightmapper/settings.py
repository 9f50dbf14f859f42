"""Mapper settings: frozen, validated once, used by the facade, the CLI, job files and stage keys.

:class:`ScoreSettings` holds what the score stage depends on, :class:`AssignSettings` what
only the assignment (the threshold) depends on; :class:`MapperSettings` holds both and
reads the flat form job files use. Constructing any of them checks every field and raises
one :class:`~weightmapper.errors.SettingsError` listing every problem found.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from weightmapper.errors import SettingsError

DEFAULT_WEIGHTS: dict[str, float] = {
    "shape": 0.2,
    "name": 0.3,
    "hierarchy": 0.15,
    "order": 0.15,
    "structure": 0.2,
}
"""Signal → weight in the combined score (see :mod:`weightmapper.engine.signals`)."""
SIGNALS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)
BUFFER_MODES: tuple[str, ...] = ("exclude", "lenient", "strict")
STRATEGIES: tuple[str, ...] = ("best_match", "conservative", "shape_only")
DEFAULT_THRESHOLD = 0.5
"""Default least probability of a kept pair: more likely right than wrong (see
``docs/scores.md``)."""
CONSERVATIVE_FLOOR = 0.85
"""Lowest score the ``conservative`` strategy accepts, whatever the threshold."""
MIN_PROPOSAL = 0.3
"""Default of :attr:`ScoreSettings.min_proposal`."""
PROOF_BUDGET = 256
"""Target forward passes a proof search may spend by default (the source runs once)."""
MAX_DUMMY_ELEMENTS = 1 << 26
"""Largest dummy input accepted (64 Mi elements, in at most 8 dimensions): a trace and a
proof need one small batch; more only fails later, in the allocator."""
MAX_DUMMY_DIMS = 8

_BUFFER_HELP = (
    "exclude: buffers follow their module's match; lenient: buffers are scored with a soft "
    "penalty; strict: buffers must match"
)
_STRATEGY_HELP = (
    "best_match: best one-to-one pairs above the threshold; conservative: only pairs scored "
    f"≥ {CONSERVATIVE_FLOOR}; shape_only: score by shape alone"
)


@dataclass(frozen=True)
class ScoreSettings:
    """Settings the score stage depends on; changing any of them rescores."""

    weights: Mapping[str, float] | None = None
    """Signal → weight (any subset of :data:`SIGNALS`; signals left out weigh 0); None: the
    defaults. Stored complete: every signal with its weight."""
    shape_tolerance: float = 0.0
    """Largest relative difference of one dimension for two shapes to still pair (0: exact)."""
    incompatible_pairs: Sequence[Sequence[str]] = ()
    """Component families that may never exchange tensors, e.g. ``[("attention", "mlp")]``."""
    buffer_matching_mode: str = "exclude"
    """How buffers are matched: one of :data:`BUFFER_MODES`."""
    min_proposal: float = MIN_PROPOSAL
    """Score below which the assignment stage does not propose a pair at all. A threshold
    below this bar accepts nothing more: such pairs never reach the threshold."""

    def __post_init__(self) -> None:
        problems = _score_problems(self)
        if problems:
            raise _error(problems)
        set_ = object.__setattr__
        set_(self, "weights", _full_weights(self.weights))
        set_(self, "shape_tolerance", float(self.shape_tolerance))
        set_(
            self, "incompatible_pairs", tuple((str(a), str(b)) for a, b in self.incompatible_pairs)
        )
        set_(self, "min_proposal", float(self.min_proposal))

    def __hash__(self) -> int:
        # The weights are a dict: hash their items, so settings (and stages holding them)
        # can be set members and dict keys like any other frozen value.
        weights = tuple(sorted((self.weights or {}).items()))
        rest = (self.shape_tolerance, self.incompatible_pairs, self.buffer_matching_mode)
        return hash((weights, *rest, self.min_proposal))


@dataclass(frozen=True)
class AssignSettings:
    """Settings only the assignment depends on: which scored pairs are accepted."""

    threshold: float = DEFAULT_THRESHOLD
    """Least score a pair needs to be accepted, in [0, 1]: with the default weights, the
    calibrated probability that the pair is right."""
    strategy: str = "best_match"
    """One of :data:`STRATEGIES`."""

    def __post_init__(self) -> None:
        problems = _assign_problems(self)
        if problems:
            raise _error(problems)
        object.__setattr__(self, "threshold", float(self.threshold))


@dataclass(frozen=True)
class MapperSettings:
    """Every mapper setting: what scoring and what the assignment depend on."""

    score: ScoreSettings = field(default_factory=ScoreSettings)
    assign: AssignSettings = field(default_factory=AssignSettings)

    @classmethod
    def from_flat(cls, data: Mapping[str, Any] | None) -> MapperSettings:
        """Flat settings (``threshold``, ``weights``... as job files write them) → MapperSettings.

        Unknown keys and bad values are reported together in one SettingsError.
        """
        data = dict(data or {})
        score_names = [f.name for f in dataclasses.fields(ScoreSettings)]
        assign_names = [f.name for f in dataclasses.fields(AssignSettings)]
        problems = [
            f"unknown setting {k!r} (known: {', '.join(score_names + assign_names)})"
            for k in sorted(set(data) - set(score_names) - set(assign_names), key=str)
        ]
        score = {k: data[k] for k in score_names if data.get(k) is not None}
        assign = {k: data[k] for k in assign_names if data.get(k) is not None}
        problems += _score_problems(_Fields(ScoreSettings, score))
        problems += _assign_problems(_Fields(AssignSettings, assign))
        if problems:
            raise _error(problems)
        return cls(ScoreSettings(**score), AssignSettings(**assign))

    def to_flat(self) -> dict[str, Any]:
        """MapperSettings → the flat dict :meth:`from_flat` reads (JSON-ready)."""
        return {**_json(dataclasses.asdict(self.score)), **dataclasses.asdict(self.assign)}

    def with_threshold(self, threshold: float) -> MapperSettings:
        """Threshold → the same settings with that threshold (validated)."""
        return dataclasses.replace(
            self, assign=dataclasses.replace(self.assign, threshold=threshold)
        )


def changed_fields(settings: ScoreSettings | AssignSettings) -> dict[str, Any]:
    """Settings → JSON-ready ``dataclasses.asdict`` of the fields not at their default.

    Stage keys are built from this: a setting left at its default does not enter the key,
    so adding a setting keeps the keys of every job that does not use it.
    """
    default = _json(dataclasses.asdict(type(settings)()))
    return {k: v for k, v in _json(dataclasses.asdict(settings)).items() if v != default[k]}


# --- validation ---------------------------------------------------------------------------
class _Fields:
    """Raw field values of a settings class, defaults filled in (validated before building)."""

    def __init__(self, kind: type, values: Mapping[str, Any]) -> None:
        for f in dataclasses.fields(kind):
            default = f.default if f.default is not dataclasses.MISSING else None
            setattr(self, f.name, values.get(f.name, default))


def _score_problems(s: Any) -> list[str]:
    problems = _weight_problems(s.weights)
    if not _number(s.shape_tolerance) or not s.shape_tolerance >= 0:
        problems.append(f"shape_tolerance must be a number ≥ 0, got {s.shape_tolerance!r}")
    problems += _pair_problems(s.incompatible_pairs)
    if s.buffer_matching_mode not in BUFFER_MODES:
        problems.append(
            f"unknown buffer_matching_mode {s.buffer_matching_mode!r}; choose one of "
            f"{list(BUFFER_MODES)} ({_BUFFER_HELP})"
        )
    if not _number(s.min_proposal) or not 0.0 <= s.min_proposal <= 1.0:
        problems.append(f"min_proposal must be a number in [0, 1], got {s.min_proposal!r}")
    return problems


def _assign_problems(s: Any) -> list[str]:
    problems = []
    if not _number(s.threshold) or not 0.0 <= s.threshold <= 1.0:
        problems.append(f"threshold must be a number in [0, 1], got {s.threshold!r}")
    if s.strategy not in STRATEGIES:
        problems.append(
            f"unknown strategy {s.strategy!r}; choose one of {list(STRATEGIES)} ({_STRATEGY_HELP})"
        )
    return problems


def _weight_problems(weights: Any) -> list[str]:
    if weights is None:
        return []
    if not isinstance(weights, Mapping):
        return [f"weights must be a dict of signal → weight, got {type(weights).__name__}"]
    problems = []
    unknown = sorted(set(weights) - set(SIGNALS), key=str)
    if unknown:
        problems.append(
            f"unknown scoring weight key(s) {unknown}; known signals: {list(SIGNALS)}. "
            "Signals you leave out keep weight 0."
        )
    bad = False
    for k, v in weights.items():
        if not _number(v) or not math.isfinite(v) or v < 0:
            problems.append(f"weight for {k!r} must be a finite number ≥ 0, got {v!r}")
            bad = True
    if not bad and not unknown and sum(weights.values()) <= 0:
        problems.append(f"at least one weight must be positive, got {dict(weights)}")
    return problems


def _pair_problems(pairs: Any) -> list[str]:
    if isinstance(pairs, str) or not isinstance(pairs, Sequence):
        return [
            "incompatible_pairs must be a list of pairs of component names like "
            f"[('attention', 'mlp')], got {pairs!r}"
        ]
    if not pairs:
        return []
    # The engine reads names this way; imported only for pairs given, as it loads torch
    # (reading a job without pairs must not).
    from weightmapper.engine.families import family_tokens

    problems = []
    for p in pairs:
        if isinstance(p, str) or not isinstance(p, Sequence) or len(p) != 2:
            problems.append(
                "each incompatible pair must be two component names like ('attention', 'mlp'); "
                f"got {p!r}"
            )
        elif not all(isinstance(x, str) and family_tokens(x) for x in p):
            problems.append(f"incompatible pair {p!r} names an empty component")
    return problems


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and not math.isnan(v)


def _full_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    out = {k: 0.0 for k in SIGNALS}
    out.update({k: float(v) for k, v in weights.items()})
    return out


def _json(d: dict[str, Any]) -> dict[str, Any]:
    """asdict output → JSON-ready (tuples as lists)."""
    return {k: [list(x) for x in v] if isinstance(v, tuple) else v for k, v in d.items()}


def _error(problems: list[str]) -> SettingsError:
    if len(problems) == 1:
        return SettingsError(problems[0], problems)
    return SettingsError(
        f"{len(problems)} problems in the mapper settings:\n"
        + "\n".join(f"- {p}" for p in problems),
        problems,
    )
