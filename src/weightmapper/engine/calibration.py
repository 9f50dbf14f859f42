"""Calibration: a pair's evidence → the probability that the pair is right.

The raw combined score (the weighted mean of the signals) ranks pairs but does not say how
often a pair of that score is right: identical names with identical shapes scored ~0.78 and
wrong pairs sat in the same band as right ones. The map here turns the evidence, the raw
score and what else separates right pairs from wrong ones (the runner-up margin, whether the
two roles agree, an exact name, a shape no other tensor has, a layout assumed from names),
into an estimate of that probability. It was fitted by ``bench/calibrate.py`` on part of the
accuracy bench and checked on a held-out part; it is stored as data (``calibration.json``
beside this module: coefficients, knots, the fit date, the data, the command that regenerates
it and the reliability it reached).

The map has two steps, both monotone:

1. a linear score ``z`` of the features (:data:`FEATURES`): every evidence feature has a
   non-negative coefficient, so more evidence never lowers ``z``, and every doubt a
   non-positive one; the flags (a split or merge, a pair made late in the cascade) may take
   either sign;
2. a non-decreasing piecewise-linear map from ``z`` to a probability in [0, 1], given by its
   knots (an isotonic fit of the observed accuracy on ``z``).

Four classes of pairs get their own estimate, the smoothed fraction of them that were right
in the fitting data, because a linear score cannot single them out: an exact name with equal
shapes (its layout not assumed) scores at least ``exact_p``; a pair that rests on its shape
alone (neither its name nor a real position agrees) scores at most ``shape_only_p``, unless
both tensors play a role the network has once and agree on it (the head, the final norm:
``role_unique``), which scores ``role_only_p``; a pair whose layout (RoPE rows, fused q/k/v
rows) was assumed from names scores at most ``assumed_p``. So the
probability never falls when the raw score or any evidence rises. The raw score stays
in the pair's breakdown as ``raw``.
"""

from __future__ import annotations

import hashlib
import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise, repeat
from pathlib import Path
from typing import Any

import numpy as np

from weightmapper.engine.columns import Breakdowns, columns
from weightmapper.engine.context import AGREE, CONTRADICT
from weightmapper.engine.evidence import EXACT_NAME, ROLE_AGREE, ROLE_CROSS
from weightmapper.errors import WeightMapperError

DATA = Path(__file__).with_name("calibration.json")
"""Where the fitted map is stored."""
EVIDENCE = (
    "raw", "shape", "name", "hierarchy", "order", "order_sorted", "structure",
    "index", "exact", "unique", "margin", "roles_agree", "named_stage", "role_unique",
    "context_agrees",
)  # fmt: skip
"""Features whose coefficient is non-negative (more evidence, higher probability)."""
DOUBTS = ("weak", "shape_only", "ambiguous", "cross_role", "low", "assumed", "context_contradicts")
"""Features whose coefficient is non-positive: an alternative nearly as good, a role
mismatch, a guess the evidence could not settle, a layout assumed from names, siblings that
went elsewhere never help."""
FLAGS = ("multi", "order_known", "alone")
"""Features whose coefficient may take either sign."""
FEATURES = EVIDENCE + DOUBTS + FLAGS
AMBIGUOUS_MARGIN = 0.03
"""Runner-up margin (in raw score) below which a pair is ``ambiguous``: an alternative is
nearly as good, so the pair is never labelled ``high``."""
MARGIN_SCALE = 0.2
"""Margin at which the ``margin`` feature saturates (a runner-up this far behind is no rival)."""
SHAPE_ONLY = 0.5
"""``name``, ``hierarchy`` and ``order`` (unless meaningless: keys stored sorted) all below
this: the pair rests on its shape alone."""
WEAK_RAW = 0.7
"""Raw score below which the ``weak`` doubt grows (linearly, to 1 at a raw score of 0): the
evidence of a low raw score counts more than its share of a weighted mean."""
NAMED_STAGES = frozenset({"exact", "normalized", "template", "buffer", "group"})
"""Cascade stages whose pairs rest on names (the others align by order and shape)."""


FEATURE_INPUTS: dict[str, float] = {
    "shape": 0.0, "name": 0.0, "hierarchy": 0.0, "order": 0.0, "structure": 0.0,
    "index": 0.5, "unique": 0.0, "margin": 1.0, "runner_up": float("nan"), "roles": 0.5,
    "order_known": 1.0, "role_unique": 0.0, "context": 0.5,
}  # fmt: skip
"""Breakdown entries the features read, each with the value it has when absent (an absent
``runner_up`` is NaN: no margins were recorded, which is not "no alternative")."""


def features(
    breakdown: Mapping[str, float],
    raw: float,
    *,
    confidence: str,
    multi: bool = False,
    stage: str = "",
    note: str = "",
) -> list[float]:
    """A pair's breakdown + raw score + labels → its feature vector (order of :data:`FEATURES`)."""
    x = feature_matrix(
        [breakdown], [raw], confidence=[confidence], multi=[multi], stage=[stage], note=[note]
    )
    return x[0].tolist()


def feature_matrix(
    breakdowns: Sequence[Mapping[str, float]] | Breakdowns,
    raw: Sequence[float] | np.ndarray,
    *,
    confidence: Sequence[str],
    stage: Sequence[str],
    note: Sequence[str],
    multi: Sequence[bool] | None = None,
) -> np.ndarray:
    """Pairs' breakdowns (or a :class:`~weightmapper.engine.columns.Breakdowns` read of them) +
    raw scores + labels (one each) → their feature vectors as the rows of a C-ordered float64
    matrix (columns in the order of :data:`FEATURES`)."""
    n = len(breakdowns)
    get = columns(breakdowns, FEATURE_INPUTS)
    raw = np.asarray(raw, np.float64)
    low = np.fromiter(map(operator.eq, confidence, repeat("low")), bool, n)
    assumed = np.fromiter(map(operator.contains, note, repeat("assumed")), bool, n)
    named_stage = np.fromiter(map(NAMED_STAGES.__contains__, stage), bool, n)
    is_multi = np.zeros(n, bool) if multi is None else np.fromiter(multi, bool, n)
    name, shape, order = get["name"], get["shape"], get["order"]
    # an exact name with equal shapes, its layout not assumed: right in practice every time
    exact = (name >= EXACT_NAME) & (shape >= 1.0) & ~low & ~assumed
    margin = get["margin"]
    # no same-shape alternative at all: the margin says nothing (``alone`` says that)
    alone = (get["runner_up"] <= 0.0) & (margin >= 1.0)
    roles = get["roles"]
    # the order signal of a side whose keys were sorted by name says little: its own feature
    known = get["order_known"]
    context = get["context"]
    cols = [
        raw,
        shape,
        name,
        get["hierarchy"],
        order * known,
        order * (1.0 - known),
        get["structure"],
        get["index"],
        exact,
        get["unique"],
        np.where(alone, 0.0, np.minimum(1.0, np.maximum(0.0, margin) / MARGIN_SCALE)),
        roles >= ROLE_AGREE,
        named_stage,
        get["role_unique"] >= 1.0,
        context >= AGREE,
        np.maximum(0.0, WEAK_RAW - raw) / WEAK_RAW,
        ~is_multi
        & (np.maximum(name, get["hierarchy"]) < SHAPE_ONLY)
        & ((order < SHAPE_ONLY) | (known == 0.0))
        & (context < AGREE),
        margin < AMBIGUOUS_MARGIN,
        roles <= ROLE_CROSS,
        low,
        assumed,
        context <= CONTRADICT,
        is_multi,
        known,
        alone,
    ]
    # filled a feature per row (contiguous writes), then turned into one pair per row in C
    # order by one transposing copy: a column at a time into that order is a strided write
    # per feature
    by_feature = np.empty((len(FEATURES), n), np.float64)
    for f, values in enumerate(cols):
        by_feature[f] = values
    return by_feature.T.copy(order="C")


@dataclass(frozen=True)
class Calibration:
    """A fitted map: intercept and coefficients of ``z``, knots of the isotonic step."""

    intercept: float
    coef: dict[str, float]
    knots_z: tuple[float, ...]
    knots_p: tuple[float, ...]
    meta: dict[str, Any]
    exact_p: float = 0.0
    """Least probability of an exact name with equal shapes (0: no such floor)."""
    shape_only_p: float = 1.0
    """Most probability of a pair that rests on its shape alone (1: no such cap)."""
    role_only_p: float | None = None
    """Probability of a pair that rests on its shape and a one-per-network role both sides
    agree on (``role_unique``) alone, in place of ``shape_only_p`` (None: no such class)."""
    assumed_p: float = 1.0
    """Most probability of a pair whose layout was assumed from names (1: no such cap)."""

    def z(self, x: list[float]) -> float:
        """Feature vector → linear score."""
        return self.intercept + sum(
            self.coef.get(f, 0.0) * v for f, v in zip(FEATURES, x, strict=True)
        )

    def from_z(self, z: np.ndarray | float) -> np.ndarray:
        """Linear score(s) → probability(ies) through the isotonic knots."""
        p = np.interp(z, self.knots_z, self.knots_p)
        return np.clip(p, 0.0, 1.0)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Feature matrix (rows in the order of :data:`FEATURES`) → probabilities."""
        coef = np.array([self.coef.get(f, 0.0) for f in FEATURES])
        p = self.from_z(self.intercept + x @ coef)
        exact = x[:, FEATURES.index("exact")] > 0.5
        shape_only = x[:, FEATURES.index("shape_only")] > 0.5
        if self.role_only_p is not None:
            # a lone role on both sides: the class's own estimate, never below the shape-only
            # cap (more evidence never lowers a probability)
            role = shape_only & (x[:, FEATURES.index("role_unique")] > 0.5)
            lone = np.maximum(np.minimum(p, self.shape_only_p), self.role_only_p)
            p = np.where(role, lone, p)
            shape_only = shape_only & ~role
        p = np.where(shape_only, np.minimum(p, self.shape_only_p), p)
        p = np.where(x[:, FEATURES.index("assumed")] > 0.5, np.minimum(p, self.assumed_p), p)
        return np.where(exact, np.maximum(p, self.exact_p), p)

    def probability(
        self,
        breakdown: Mapping[str, float],
        raw: float,
        *,
        confidence: str,
        multi: bool = False,
        stage: str = "",
        note: str = "",
    ) -> float:
        """A pair's breakdown + raw score + labels → the estimated probability that it is right."""
        x = features(breakdown, raw, confidence=confidence, multi=multi, stage=stage, note=note)
        return float(self.probabilities(np.array([x], np.float64))[0])

    def to_dict(self) -> dict[str, Any]:
        """Calibration → JSON-ready dict."""
        return {
            **self.meta,
            "features": list(FEATURES),
            "intercept": self.intercept,
            "coef": self.coef,
            "knots": {"z": list(self.knots_z), "p": list(self.knots_p)},
            "exact_p": self.exact_p,
            "shape_only_p": self.shape_only_p,
            "role_only_p": self.role_only_p,
            "assumed_p": self.assumed_p,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """JSON dict → Calibration; a map that is not monotone or leaves [0, 1] is refused."""
        try:
            z = tuple(float(v) for v in d["knots"]["z"])
            p = tuple(float(v) for v in d["knots"]["p"])
            coef = {str(k): float(v) for k, v in d["coef"].items()}
            intercept = float(d["intercept"])
            exact_p = float(d.get("exact_p", 0.0))
            shape_only_p = float(d.get("shape_only_p", 1.0))
            role_only = d.get("role_only_p")
            role_only_p = None if role_only is None else float(role_only)
            assumed_p = float(d.get("assumed_p", 1.0))
        except (KeyError, TypeError, ValueError) as e:
            raise WeightMapperError(
                f"calibration data lacks {e}; expected intercept, coef and knots z/p; "
                "regenerate it with bench/calibrate.py"
            ) from e
        bad = (
            len(z) != len(p)
            or len(z) < 2
            or any(b < a for a, b in pairwise(z))
            or any(b < a for a, b in pairwise(p))
            or any(not 0.0 <= v <= 1.0 for v in p)
            or not 0.0 <= exact_p <= 1.0
            or not 0.0 <= shape_only_p <= 1.0
            or not 0.0 <= assumed_p <= 1.0
            or (role_only_p is not None and not 0.0 <= role_only_p <= 1.0)
            or any(coef.get(f, 0.0) < 0 for f in EVIDENCE)
            or any(coef.get(f, 0.0) > 0 for f in DOUBTS)
        )
        if bad:
            raise WeightMapperError(
                "calibration knots are not a monotone map into [0, 1] (or an evidence "
                "coefficient is negative, or a doubt's positive); regenerate them with bench/calibrate.py"
            )
        fitted = ("intercept", "coef", "knots", "features", "exact_p", "shape_only_p")
        fitted += ("role_only_p", "assumed_p")
        meta = {k: v for k, v in d.items() if k not in fitted}
        return cls(intercept, coef, z, p, meta, exact_p, shape_only_p, role_only_p, assumed_p)


@cache
def calibration_digest(path: Path = DATA) -> str:
    """Path of the stored map → SHA-256 of its bytes (part of the assign stage's cache key)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise WeightMapperError(
            f"cannot read the calibration map {path.name}: {e}; reinstall the package or "
            "regenerate it with bench/calibrate.py"
        ) from e


@cache
def load(path: Path = DATA) -> Calibration:
    """Path of the stored map (default: the packaged one) → Calibration, read once."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise WeightMapperError(
            f"cannot read the calibration map {path.name}: {e}; expected the JSON that "
            "bench/calibrate.py writes; reinstall the package or regenerate it"
        ) from e
    return Calibration.from_dict(data)
