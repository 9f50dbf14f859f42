"""Layer-index similarity tables: the array form agrees with the per-pair definition."""

from __future__ import annotations

import itertools

import numpy as np

from weightmapper.engine.primitives import IndexKey, index_eq, index_sim, index_sim_one

# Depths 0-3, equal and different primary indices, so every branch of the definition is hit.
KEYS: list[IndexKey] = [
    ((), -1),
    ((0,), 0),
    ((1,), 1),
    ((0, 1), 0),
    ((0, 2), 0),
    ((1, 2), 1),
    ((2, 1), 2),
    ((1, 1, 0), 1),
    ((1, 2, 0), 1),
    ((0, 2, 0), 2),
]


def _eq_one(a: IndexKey, b: IndexKey) -> float:
    if a[0] == b[0]:
        return 1.0
    if len(a[0]) != len(b[0]) and a[0] and b[0] and a[1] == b[1]:
        return 0.8
    return 0.0


def test_index_sim_matches_the_pairwise_definition() -> None:
    a = [k for k, _ in itertools.product(KEYS, range(2))]  # repeated keys share a code
    b = KEYS[::-1]
    want = np.array([[index_sim_one(x, y) for y in b] for x in a], dtype=np.float32)
    got = index_sim(a, b)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_index_eq_matches_the_pairwise_definition() -> None:
    want = np.array([[_eq_one(x, y) for y in KEYS] for x in KEYS], dtype=np.float32)
    np.testing.assert_array_equal(index_eq(KEYS, KEYS), want)


def test_empty_sides_give_empty_tables() -> None:
    assert index_sim([], KEYS).shape == (0, len(KEYS))
    assert index_eq(KEYS, []).shape == (len(KEYS), 0)
