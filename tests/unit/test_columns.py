"""Columns of proposals and index keys: array results equal the per-pair formulas bit for bit."""

from __future__ import annotations

import numpy as np
from rapidfuzz import fuzz, process

from weightmapper.engine.columns import (
    Breakdowns,
    IndexColumns,
    column,
    columns,
    distinct_pairs,
    weighted_mean,
)
from weightmapper.engine.margins import ambiguous_mask, is_ambiguous
from weightmapper.engine.names import TokenSpace
from weightmapper.engine.primitives import index_sim_one


def test_distinct_pairs_equal_numpy_unique_with_and_without_the_dense_table() -> None:
    rng = np.random.default_rng(0)
    for n_a, n_b, n in ((4, 5, 200), (3000, 2000, 50), (1, 1, 7), (6, 3, 0)):
        a, b = rng.integers(0, n_a, n), rng.integers(0, n_b, n)
        ka, kb, back = distinct_pairs(a, b, n_b)
        uniq, inverse = np.unique(a * n_b + b, return_inverse=True)
        assert (ka * n_b + kb).tolist() == uniq.tolist()
        assert back.tolist() == inverse.reshape(-1).tolist()


def test_index_columns_similarity_equals_index_sim_one() -> None:
    rng = np.random.default_rng(1)
    keys = [((), -1)]
    for depth in (1, 1, 2, 2, 3):
        for _ in range(6):
            ranks = tuple(int(v) for v in rng.integers(0, 3, depth))
            keys.append((ranks, int(rng.integers(-1, 3))))
    ga, gb = rng.integers(0, len(keys), 3000), rng.integers(0, len(keys), 3000)
    got = IndexColumns(keys).similarity(IndexColumns(keys), ga, gb)
    want = [index_sim_one(keys[a], keys[b]) for a, b in zip(ga.tolist(), gb.tolist(), strict=True)]
    assert got.tolist() == want
    assert {0.2, 0.5, 0.8, 1.0} <= set(want)  # every branch was taken


def test_weighted_mean_equals_the_python_sum_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    rows = [{"a": float(x), "b": float(y)} for x, y in rng.random((400, 2))]
    rows[3] = {"a": 0.25}  # an absent signal counts as 0.0
    w = {"b": 0.35, "a": 0.4}
    cols = {k: column(rows, k) for k in w}
    want = [sum(w[k] * float(r.get(k, 0.0)) for k in w) / 0.75 for r in rows]
    assert weighted_mean(cols, w, 0.75).tolist() == want


def test_ambiguous_mask_applies_each_rule_per_pair() -> None:
    rows = [
        {"margin": 0.5, "runner_up": 0.4, "name_margin": 0.5, "name": 0.9},  # clear
        {"margin": 0.5, "runner_up": 0.4, "block_shift": 1.0},  # its block shifted
        {"margin": 0.01, "runner_up": 0.4},  # runner-up nearly as good
        {"margin": 0.5, "runner_up": 0.4, "order_known": 0.0, "name_margin": 0.0},  # sorted
        {"margin": 0.5, "runner_up": 0.4, "name_margin": -0.1, "name": 0.3},  # names disagree
        {"margin": 1.0, "runner_up": 0.0, "order_known": 0.0, "name_margin": -1.0},  # alone
    ]
    assert ambiguous_mask(rows).tolist() == [False, True, True, True, True, False]
    assert [is_ambiguous(r) for r in rows] == ambiguous_mask(rows).tolist()


def test_ratio_pairs_equals_cpdist_over_every_pair() -> None:
    a = ["layers attn q proj weight", "layers attn k proj weight", "norm weight"]
    b = ["blocks attention wq weight", "norm weight"]
    space = TokenSpace(a * 3, b * 4)
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 9, 50), rng.integers(0, 8, 50)
    left, right = [(a * 3)[i] for i in rows], [(b * 4)[j] for j in cols]
    want = np.asarray(process.cpdist(left, right, scorer=fuzz.ratio), np.float64) / 100.0
    assert space.ratio_pairs(rows, cols).tolist() == want.tolist()


def test_breakdowns_read_once_give_what_each_column_read_gives() -> None:
    rng = np.random.default_rng(4)
    layouts = [("a", "b", "c"), ("b", "a"), ("c", "d", "a", "b"), ()]
    rows = [{k: float(v) for k, v in zip(keys, rng.random(len(keys)), strict=True)}
            for keys in (layouts[int(i)] for i in rng.integers(0, len(layouts), 300))]  # fmt: skip
    rows[7] = {"a": 1, "b": True}  # ints and bools read as floats, as float() reads them
    table = Breakdowns(rows)
    assert len(table) == len(rows)
    for key, default in (("a", 0.0), ("b", 1.0), ("d", float("nan")), ("absent", 0.5)):
        want = column(rows, key, default)
        got = table.column(key, default)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want)  # NaN where the default is NaN
    assert columns(rows, {"c": 2.0})["c"].tolist() == column(rows, "c", 2.0).tolist()
    assert Breakdowns([]).column("a").tolist() == []
    assert Breakdowns([{}, {}]).column("a", 3.0).tolist() == [3.0, 3.0]
    # one key sequence throughout (the usual case): one block, columns cut out of it
    same = [{"a": float(i), "b": -float(i)} for i in range(5)]
    single = Breakdowns(same)
    for key in ("a", "b", "absent"):
        np.testing.assert_array_equal(single.column(key, 9.0), column(same, key, 9.0))
    got = single.column("a")
    got[0] = 42.0  # a column is the caller's own array: changing it changes no other read
    assert single.column("a").tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_breakdowns_read_whatever_order_or_signals_each_holds() -> None:
    rng = np.random.default_rng(5)

    def made(keys: tuple[str, ...]) -> dict[str, float]:
        return {k: float(v) for k, v in zip(keys, rng.random(len(keys)), strict=True)}

    cases = [
        # the first breakdown's signals in another order: read by signal, not by position
        [("a", "b", "c"), ("c", "a", "b"), ("b", "c", "a"), ("a", "b", "c", "d"), ("a",)],
        # as many signals as the first one but not the same: every one read by key sequence
        [("a", "b", "c"), ("a", "b", "d"), ("c", "b", "a"), ("d",)],
        # the first breakdown holds more than most; a larger one without the common signals
        [("a", "b", "c", "d"), ("b", "a", "c"), ("c", "b", "a"), ("b",)],
        [("a", "b"), ("b", "a"), ("c", "d", "e"), ("a", "b", "c")],
        # a single signal first, and nothing but empty ones
        [("a",), ("a",), ("b", "a"), ()],
        [(), ()],
    ]
    for layouts in cases:
        rows = [made(layouts[int(i)]) for i in rng.integers(0, len(layouts), 200)]
        rows[0] = made(layouts[0])
        table = Breakdowns(rows)
        for key in ("a", "b", "c", "d", "absent"):
            np.testing.assert_array_equal(table.column(key, -1.0), column(rows, key, -1.0))
