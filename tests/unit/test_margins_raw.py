"""Runner-up margins: the alternatives and raw scores of many pairs at once equal those found
one at a time."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from weightmapper.engine.margins import (
    MARGIN_SIGNALS,
    NEIGHBOURS,
    _alternatives,
    _better,
    _raw_halves,
    _raw_many,
)


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


def _alternatives_one_by_one(st: SimpleNamespace, pairs: SimpleNamespace) -> list[tuple]:
    """Each (alternative source, alternative target, owning proposal), pair by pair: leads
    ordered by shape bucket, source position and proposal number; each onto its
    NEIGHBOURS next ones of its bucket, both ways, each swap an alternative of both."""
    leads = [n for n in range(len(pairs.lead)) if pairs.lead[n]]

    def bucket(n: int) -> tuple[int, int]:
        return int(st.s.shape_code[pairs.source[n]]), int(st.t.shape_code[pairs.target[n]])

    leads.sort(key=lambda n: (bucket(n), st.s.group_pos[st.s.group[pairs.source[n]]], n))
    out = []
    for i, a in enumerate(leads):
        for b in leads[i + 1 : i + 1 + NEIGHBOURS]:
            if bucket(a) != bucket(b):
                continue
            for src, tgt in (
                (pairs.source[a], pairs.target[b]),
                (pairs.source[b], pairs.target[a]),
            ):
                out += [(int(src), int(tgt), a), (int(src), int(tgt), b)]
    return sorted(out)


def test_alternatives_hold_each_neighbour_swap_for_both_pairs() -> None:
    rng = np.random.default_rng(1)
    n_keys, n_groups, n = 300, 120, 200
    side = SimpleNamespace(
        shape_code=rng.integers(0, 3, n_keys),
        group=rng.integers(0, n_groups, n_keys),
        group_pos=rng.integers(0, 40, n_groups) / 40.0,  # ties in position
    )
    st = SimpleNamespace(s=side, t=side)
    pairs = SimpleNamespace(
        lead=rng.random(n) < 0.9,
        source=rng.permutation(n_keys)[:n],
        target=rng.permutation(n_keys)[:n],
    )
    rows, cols, first, second = _alternatives(st, pairs)
    half = len(first)
    got = [
        (int(rows[k]), int(cols[k]), int(owner[k % half]))
        for k in range(len(rows))
        for owner in (first, second)
    ]
    assert sorted(got) == _alternatives_one_by_one(st, pairs)
    assert len(rows) == 2 * half and half > 0


def test_best_of_each_pair_equals_its_alternatives_one_at_a_time() -> None:
    rng = np.random.default_rng(2)
    n, n_props = 400, 150
    sigs = {k: rng.random(2 * n) for k in ("name", "hierarchy", "order")}
    first, second = rng.integers(0, n_props, n), rng.integers(0, n_props, n)
    shape = rng.choice([1.0, 0.9], n_props)
    keep = rng.random(2 * n) < 0.7
    w = {"shape": 0.2, "name": 0.3, "hierarchy": 0.15, "order": 0.15}
    total = sum(w.values())
    for counted in (None, keep):
        for owner in (first, second):
            best = np.full(n_props, -np.inf)
            np.maximum.at(best, owner, _better(_raw_halves(sigs, shape[owner], w, total), counted))
            want = [-np.inf] * n_props
            for k in range(2 * n):
                if counted is None or counted[k]:
                    o = int(owner[k % n])
                    bd = {"shape": float(shape[o])} | {s: float(v[k]) for s, v in sigs.items()}
                    want[o] = max(want[o], _raw(bd, w, total))
            assert best.tolist() == want
