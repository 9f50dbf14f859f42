"""Calibration: a pair's raw score and signal breakdown → the probability that the pair is right.

The raw combined score (the weighted mean of the signals) ranks pairs but does not say how
often a pair of that score is right: identical names with identical shapes scored ~0.78 and
wrong pairs sat in the same band as right ones. The map here turns the evidence into an
estimate of that probability. It was fitted by ``bench/calibrate.py`` on part of the accuracy
bench and checked on a held-out part; it is stored as data (``calibration.json`` beside this
module: coefficients, knots, the fit date, the data and the command that regenerates it).

The map has two steps, both monotone:

1. a linear score ``z`` of the features (:data:`FEATURES`); every evidence feature has a
   non-negative coefficient, so more evidence never lowers ``z``, and the doubt (a runner-up
   within :data:`AMBIGUOUS_MARGIN`) a non-positive one; the flags (a low-confidence layout,
   a split or merge) may take either sign;
2. an isotonic (non-decreasing) piecewise-linear map from ``z`` to a probability in [0, 1],
   given by its knots.

So the probability never falls when the raw score or any signal rises. The raw score stays in
the pair's breakdown as ``raw``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

from weightmapper.errors import WeightMapperError

DATA = Path(__file__).with_name("calibration.json")
"""Where the fitted map is stored."""
EVIDENCE = ("raw", "shape", "name", "hierarchy", "order", "structure", "exact")
"""Features whose coefficient is non-negative (more evidence, higher probability)."""
DOUBTS = ("ambiguous",)
"""Features whose coefficient is non-positive: an alternative nearly as good never helps."""
FLAGS = ("low_layout", "multi")
"""Features whose coefficient may take either sign."""
FEATURES = EVIDENCE + DOUBTS + FLAGS
EXACT_NAME = 0.999
"""``name`` signal at or above which two names count as the same."""
AMBIGUOUS_MARGIN = 0.03
"""Runner-up margin (in raw score) below which a pair is ``ambiguous``: an alternative is
nearly as good, so the pair is never labelled ``high``."""


def features(
    breakdown: Mapping[str, float], raw: float, *, confidence: str, multi: bool
) -> list[float]:
    """A pair's breakdown + raw score + labels → its feature vector (order of :data:`FEATURES`)."""
    get = breakdown.get
    exact = float(get("name", 0.0) >= EXACT_NAME and get("shape", 0.0) >= 1.0)
    ambiguous = float(get("margin", 1.0) < AMBIGUOUS_MARGIN)
    return [
        float(raw),
        float(get("shape", 0.0)),
        float(get("name", 0.0)),
        float(get("hierarchy", 0.0)),
        float(get("order", 0.0)),
        float(get("structure", 0.0)),
        exact,
        ambiguous,
        float(confidence == "low"),
        float(multi),
    ]


@dataclass(frozen=True)
class Calibration:
    """A fitted map: intercept and coefficients of ``z``, knots of the isotonic step."""

    intercept: float
    coef: dict[str, float]
    knots_z: tuple[float, ...]
    knots_p: tuple[float, ...]
    meta: dict[str, Any]

    def z(self, x: list[float]) -> float:
        """Feature vector → linear score."""
        return self.intercept + sum(
            self.coef.get(f, 0.0) * v for f, v in zip(FEATURES, x, strict=True)
        )

    def from_z(self, z: np.ndarray | float) -> np.ndarray:
        """Linear score(s) → probability(ies) through the isotonic knots."""
        p = np.interp(z, self.knots_z, self.knots_p)
        return np.clip(p, 0.0, 1.0)

    def probability(
        self, breakdown: Mapping[str, float], raw: float, *, confidence: str, multi: bool = False
    ) -> float:
        """A pair's breakdown + raw score → the estimated probability that it is right."""
        x = features(breakdown, raw, confidence=confidence, multi=multi)
        return float(self.from_z(self.z(x)))

    def to_dict(self) -> dict[str, Any]:
        """Calibration → JSON-ready dict."""
        return {
            **self.meta,
            "features": list(FEATURES),
            "intercept": self.intercept,
            "coef": self.coef,
            "knots": {"z": list(self.knots_z), "p": list(self.knots_p)},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        """JSON dict → Calibration; a map that is not monotone or leaves [0, 1] is refused."""
        try:
            z = tuple(float(v) for v in d["knots"]["z"])
            p = tuple(float(v) for v in d["knots"]["p"])
            coef = {str(k): float(v) for k, v in d["coef"].items()}
            intercept = float(d["intercept"])
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
            or any(coef.get(f, 0.0) < 0 for f in EVIDENCE)
            or any(coef.get(f, 0.0) > 0 for f in DOUBTS)
        )
        if bad:
            raise WeightMapperError(
                "calibration knots are not a monotone map into [0, 1] (or an evidence "
                "coefficient is negative, or a doubt's positive); regenerate them with bench/calibrate.py"
            )
        meta = {k: v for k, v in d.items() if k not in ("intercept", "coef", "knots", "features")}
        return cls(intercept, coef, z, p, meta)


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
