"""Signals of many pairs at once (per distinct code pair, per source group, by table) equal
the per-pair rules they replace, bit for bit."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tiny_nets import timm_vit_stack, torchvision_vit_stack
from weightmapper.engine.columns import IndexColumns
from weightmapper.engine.index_map import index_agreement
from weightmapper.engine.side import prepare_side
from weightmapper.engine.signals import (
    HIER_MIX,
    NAME_MIX,
    _per_distinct_pair,
    _single_target_parents,
    coherence,
    hierarchy_signal,
    name_signal,
    order_signal,
    update_coherence,
)
from weightmapper.engine.state import MatchState
from weightmapper.inventory import Inventory
from weightmapper.settings import ScoreSettings


def test_per_distinct_pair_equals_the_rule_on_every_pair() -> None:
    rng = np.random.default_rng(0)
    # few codes (a table of every code pair) and many (distinct pairs sorted out)
    for n_codes_a, n_codes_b in ((5, 7), (4000, 3000)):
        code_a = rng.integers(0, n_codes_a, 300)
        code_b = rng.integers(0, n_codes_b, 200)
        rows, cols = rng.integers(0, 300, 1000), rng.integers(0, 200, 1000)

        def rule(
            a: np.ndarray, b: np.ndarray, code_a: np.ndarray = code_a, code_b: np.ndarray = code_b
        ) -> np.ndarray:
            # reads only the two items' codes, as the rules given to it must
            return np.sin(code_a[a] * 0.37) + np.cos(code_b[b] * 1.3)

        got = _per_distinct_pair(code_a, code_b, rows, cols, rule)
        assert got.tolist() == rule(rows, cols).tolist()
    empty = np.zeros(0, np.int64)
    assert _per_distinct_pair(code_a, code_b, empty, empty, rule).tolist() == []


def _state() -> MatchState:
    """Two tiny stacks of one architecture under two libraries' names, some groups matched
    (so siblings' coherence has something to count)."""
    src = prepare_side(Inventory.from_module(torchvision_vit_stack((2, 4, 2))))
    tgt = prepare_side(Inventory.from_module(timm_vit_stack((2, 4, 2))))
    st = MatchState(src, tgt, ScoreSettings())
    st.s_match[: len(tgt) // 2] = np.arange(len(tgt) // 2)
    update_coherence(st)
    return st


def test_name_and_hierarchy_of_many_pairs_equal_their_per_pair_formulas() -> None:
    st = _state()
    rows = np.repeat(np.arange(len(st.s)), len(st.t))
    cols = np.tile(np.arange(len(st.t)), len(st.s))
    gs, gt = st.s.group[rows], st.t.group[cols]
    # the per-pair formulas, every input looked up for every pair
    plain = st.s_index.similarity(st.t_index, gs, gt)
    idx = index_agreement(st, gs, gt, plain, matrix=False)
    cos = st.key_space.pairwise(rows, cols)
    fz = st.key_space.ratio_pairs(rows, cols)
    lexical = NAME_MIX[0] * cos + NAME_MIX[1] * fz + NAME_MIX[2] * idx
    same_role = st.func_same[st.s_func[rows], st.t_func[cols]]
    same_role &= st.s_named[rows] | st.t_named[cols]
    name = np.where(same_role, np.maximum(lexical, 0.85 * idx), lexical)
    parent = st.parent_space.pairwise(gs, gt)
    parent[st.s_parent_empty[gs] & st.t_parent_empty[gt]] = 1.0
    fam = st.fam_table[st.s_fam[gs], st.t_fam[gt]]
    hierarchy = HIER_MIX[0] * parent + HIER_MIX[1] * fam + HIER_MIX[2] * coherence(st, gs, gt)
    assert name_signal(st, rows, cols, matrix=False).tolist() == name.tolist()
    given = name_signal(st, rows, cols, matrix=False, groups=(gs, gt))
    assert given.tolist() == name.tolist()
    assert hierarchy_signal(st, gs, gt, matrix=False).tolist() == hierarchy.tolist()
    assert coherence(st, gs, gt).any()  # the coherence term was exercised


def _coherence_state(rng: np.random.Generator, one_target: bool) -> SimpleNamespace:
    """Random groups under random parents, some matched; with ``one_target`` every source
    parent's matched children go under one target parent."""
    n_s, n_t, p_s, p_t = 60, 50, 8, 7
    s_parent, t_parent = rng.integers(0, p_s, n_s), rng.integers(0, p_t, n_t)
    partner = np.where(rng.random(n_s) < 0.6, rng.integers(0, n_t, n_s), -1)
    if one_target:
        # a partner under the target parent its source parent is given
        by_parent = rng.integers(0, p_t, p_s)
        children = [np.flatnonzero(t_parent == p) for p in range(p_t)]
        for g in np.flatnonzero(partner >= 0).tolist():
            kids = children[by_parent[s_parent[g]]]
            partner[g] = rng.choice(kids) if len(kids) else -1
    m = int(t_parent.max()) + 1
    matched = np.flatnonzero(partner >= 0)
    keys, vals = np.unique(s_parent[matched] * m + t_parent[partner[matched]], return_counts=True)
    return SimpleNamespace(
        s_parent_id=s_parent, t_parent_id=t_parent, partner=partner, coh_keys=keys, coh_vals=vals
    )


def _coherence_one(st: SimpleNamespace, gs: int, gt: int) -> float:
    """One pair's coherence, counted: other matched children of the source's parent that
    went under the target's parent."""
    others = [
        g
        for g in np.flatnonzero(st.partner >= 0).tolist()
        if st.s_parent_id[g] == st.s_parent_id[gs]
        and st.t_parent_id[st.partner[g]] == st.t_parent_id[gt]
        and (g, int(st.partner[g])) != (gs, gt)
    ]
    return 1.0 if others else 0.0


def test_coherence_equals_counting_siblings_pair_by_pair() -> None:
    rng = np.random.default_rng(1)
    for one_target in (True, False):
        st = _coherence_state(rng, one_target)
        m = int(st.t_parent_id.max()) + 1
        n_parents = int(st.s_parent_id.max()) + 1
        by_parent = _single_target_parents(st.coh_keys, st.coh_vals, m, n_parents)
        assert (by_parent is not None) == one_target  # both ways of looking it up are taken
        gs, gt = rng.integers(0, 60, 3000), rng.integers(0, 50, 3000)
        # matched pairs themselves, which must not vouch for themselves
        matched = np.flatnonzero(st.partner >= 0)
        gs[: len(matched)], gt[: len(matched)] = matched, st.partner[matched]
        got = coherence(st, gs, gt)
        want = [_coherence_one(st, a, b) for a, b in zip(gs.tolist(), gt.tolist(), strict=True)]
        assert got.dtype == np.float32 and got.tolist() == want
        assert {0.0, 1.0} <= set(want)
        grid = coherence(st, gs[:50, None], gt[None, :40])  # the broadcast (matrix) form
        assert grid.tolist() == [[_coherence_one(st, a, b) for b in gt[:40]] for a in gs[:50]]


def test_order_of_many_pairs_equals_the_matrix_form() -> None:
    rng = np.random.default_rng(2)
    n_s, n_t = 40, 30
    side_s = SimpleNamespace(
        group_pos=np.sort(rng.random(n_s)), group_chain=rng.integers(-1, 3, n_s)
    )
    side_t = SimpleNamespace(
        group_pos=np.sort(rng.random(n_t)), group_pos_known=rng.random(n_t) < 0.8
    )
    anchors = {c: (np.sort(rng.random(4)), np.sort(rng.random(4))) for c in (0, 2)}
    sorted_file = SimpleNamespace(order_real=False, chain_anchors=anchors, s=side_s, t=side_t)
    plain = SimpleNamespace(order_real=False, chain_anchors={}, s=side_s, t=side_t)
    real = SimpleNamespace(
        order_real=True, anchor_x=np.array([0.1, 0.5, 0.9]), anchor_y=np.array([0.2, 0.4, 0.95]),
        s=side_s, t=side_t,
    )  # fmt: skip
    gs, gt = rng.integers(0, n_s, 2000), rng.integers(0, n_t, 2000)
    for st in (sorted_file, plain, real):
        grid = order_signal(st, np.arange(n_s), np.arange(n_t), matrix=True)
        assert order_signal(st, gs, gt, matrix=False).tolist() == grid[gs, gt].tolist()


def test_index_columns_of_two_sides_equal_index_sim_one() -> None:
    from weightmapper.engine.primitives import index_sim_one

    rng = np.random.default_rng(3)

    def keys(depths: tuple[int, ...]) -> list[tuple[tuple[int, ...], int]]:
        out = [((), -1)]
        for depth in depths:
            for _ in range(5):
                ranks = tuple(int(v) for v in rng.integers(0, 3, depth))
                out.append((ranks, int(rng.integers(-1, 3))))
        return out

    # one side deeper than the other, rank 0 past the shallower side's depth
    a, b = keys((1, 2, 3, 3)), keys((1, 1, 2))
    ga, gb = rng.integers(0, len(a), 4000), rng.integers(0, len(b), 4000)
    got = IndexColumns(a).similarity(IndexColumns(b), ga, gb)
    want = [index_sim_one(a[i], b[j]) for i, j in zip(ga.tolist(), gb.tolist(), strict=True)]
    assert got.tolist() == want
    back = IndexColumns(b).similarity(IndexColumns(a), gb, ga)
    assert back.tolist() == [index_sim_one(b[j], a[i]) for i, j in zip(ga, gb, strict=True)]
    assert IndexColumns([]).similarity(IndexColumns(b), ga[:0], gb[:0]).tolist() == []
