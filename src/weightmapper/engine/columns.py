"""Columns of proposals: one numpy array per breakdown signal, for work done on every pair.

A 100k-tensor checkpoint makes 100k proposals; reading a signal out of each breakdown dict
once into a float64 column, and computing margins, evidence and probabilities on columns,
costs one pass per signal instead of Python arithmetic per pair. Each column holds exactly
the floats ``float(breakdown.get(key, default))`` gives, so results stay bit for bit the
same as the per-pair formulas they replace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def column(breakdowns: Sequence[Mapping[str, float]], key: str, default: float = 0.0) -> np.ndarray:
    """Breakdowns + signal name (+ value when absent) → float64 array, one value per breakdown."""
    return np.fromiter(
        (bd.get(key, default) for bd in breakdowns), dtype=np.float64, count=len(breakdowns)
    )


def columns(
    breakdowns: Sequence[Mapping[str, float]],
    keys: Sequence[str] | Mapping[str, float],
    default: float = 0.0,
) -> dict[str, np.ndarray]:
    """Breakdowns + signal names (or names → their values when absent) → {name: :func:`column`}."""
    if isinstance(keys, Mapping):
        return {k: column(breakdowns, k, d) for k, d in keys.items()}
    return {k: column(breakdowns, k, default) for k in keys}


def weighted_mean(
    cols: Mapping[str, np.ndarray], weights: Mapping[str, float], total: float
) -> np.ndarray:
    """Signal columns + weights (in their order) + their total → the weighted mean of each
    row, summed left to right in float64 as ``sum(w[k] * x[k] for k in w) / total`` is."""
    n = len(next(iter(cols.values()))) if cols else 0
    acc = np.zeros(n, np.float64)
    for k, weight in weights.items():
        acc = acc + weight * np.asarray(cols[k], np.float64)
    return acc / total
