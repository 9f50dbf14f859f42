"""Runner-up margins: the raw scores of many alternatives at once equal those of one at a time."""

from __future__ import annotations

import numpy as np

from weightmapper.engine.margins import MARGIN_SIGNALS, _raw_many


def _raw(bd: dict[str, float], w: dict[str, float], total: float) -> float:
    """One pair's raw score as plain Python arithmetic (the reference)."""
    if total <= 0:
        return float(bd.get("shape", 0.0))
    return sum(w[k] * float(bd.get(k, 0.0)) for k in w) / total


def test_raw_many_equals_raw_bit_for_bit() -> None:
    rng = np.random.default_rng(0)
    n = 500
    sigs = {
        "name": rng.random(n),
        "hierarchy": rng.random(n).astype(np.float32),  # float32 signals count as float64
        "order": rng.random(n),
        "shape": rng.random(n),
    }
    for w in ({k: 1.0 for k in MARGIN_SIGNALS}, {"name": 0.4, "order": 0.35, "shape": 0.25}):
        total = sum(w.values())
        many = _raw_many(sigs, w, total)
        one = [_raw({k: float(v[i]) for k, v in sigs.items()}, w, total) for i in range(n)]
        assert many.tolist() == one
    assert _raw_many(sigs, {}, 0.0).tolist() == [
        _raw({"shape": float(s)}, {}, 0.0) for s in sigs["shape"]
    ]
