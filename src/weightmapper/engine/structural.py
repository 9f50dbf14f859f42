"""Stage ``structural``: the remaining group sequences (execution or registration order)
aligned like sequences with gaps, under equal shape signatures, by dynamic programming: a
group with no partner is skipped, not shifting the rest."""

from __future__ import annotations

import logging

import numpy as np

from weightmapper.engine.groups import STRUCTURE_DP, pair_groups
from weightmapper.engine.index_map import index_agreement
from weightmapper.engine.primitives import align, index_eq
from weightmapper.engine.side import Side
from weightmapper.engine.signals import order_signal
from weightmapper.engine.state import MatchState

log = logging.getLogger(__name__)

DP_MAX_CELLS = 4_000_000
"""Largest group × group alignment of one signature solved by dynamic programming."""
UNTRACED_MIN_EVIDENCE = 0.3
"""Least name/index evidence a structural pair needs when execution order was not traced."""


def stage_structural(st: MatchState) -> None:
    """Align the open group sequences by dynamic programming under equal signatures."""
    s_open = st.open_groups("source")
    t_open = st.open_groups("target")
    if not s_open or not t_open:
        return
    sigs: dict[tuple, int] = {}
    s_sig = np.array([sigs.setdefault(st.signature("source", g), len(sigs)) for g in s_open])
    t_sig = np.array([sigs.get(st.signature("target", g), -1) for g in t_open])
    s_arr, t_arr = np.array(s_open), np.array(t_open)
    # Each signature's groups are aligned on their own: only equal signatures can pair,
    # and how two libraries interleave different layers (or a sorted checkpoint's key
    # order) must not stop a run of equal layers from lining up.
    for sig in np.unique(s_sig):
        rows = np.nonzero(s_sig == sig)[0]
        cols = np.nonzero(t_sig == sig)[0]
        # In a sorted checkpoint only numbered siblings have a place in the order; a name
        # that sorts alone is left to the names.
        rows = rows[st.s.group_pos_known[s_arr[rows]]]
        cols = cols[st.t.group_pos_known[t_arr[cols]]]
        if not len(cols) or not len(rows):
            continue
        if len(rows) * len(cols) > DP_MAX_CELLS:
            log.info(
                "structural stage skipped %d × %d groups of one signature", len(rows), len(cols)
            )
            continue
        gs_all, gt_all = s_arr[rows], t_arr[cols]
        if st.s.inv.sorted_keys:
            # Where two chains of a sorted checkpoint interleave (``bn1``, ``bn2`` beside
            # ``blocks.#.bn1``) is alphabetical: each chain is aligned on its own, the
            # longest first, against what the others left. A chain with one group of this
            # signature has no order to follow here: its names decide, later.
            chains = st.s.group_chain[gs_all]
            ids, counts = np.unique(chains, return_counts=True)
            if len(ids) > 1:
                ids, counts = ids[counts > 1], counts[counts > 1]
            for c in ids[np.argsort(-counts, kind="stable")]:
                gt_open = np.array([g for g in gt_all if _group_open(st, int(g))], np.int64)
                if len(gt_open):
                    _align(st, gs_all[chains == c], gt_open)
        else:
            _align(st, gs_all, gt_all)


def _group_open(st: MatchState, g: int) -> bool:
    """Target group → True while none of its keys is paired."""
    return bool((st.t_match[st.t.group_keys[g]] < 0).all())


def _align(st: MatchState, gs: np.ndarray, gt: np.ndarray) -> None:
    """Source groups, target groups of one signature, each in order → pairs along the best
    monotone alignment, where names do not clearly say otherwise."""
    name = st.group_space.matrix(gs, gt)
    plain = index_eq([st.s.group_index_key[g] for g in gs], [st.t.group_index_key[g] for g in gt])
    idx = index_agreement(st, gs, gt, plain, matrix=True)
    fam = st.fam_table[st.s_fam[gs][:, None], st.t_fam[gt][None, :]]
    near = order_signal(st, gs, gt, matrix=True)
    evidence = 0.5 * name + 0.5 * idx
    sub = 1.0 + evidence + 0.25 * (fam >= 1.0) + 0.3 * near
    sub[fam <= 0] = -np.inf
    # A pair whose names clearly lose to another candidate of the same row or column
    # may not be aligned: the order would then overrule what the names say.
    sub[evidence < evidence.max(axis=1, keepdims=True) - 0.2] = -np.inf
    sub[evidence < evidence.max(axis=0, keepdims=True) - 0.2] = -np.inf
    # Registration order is each library's own choice (a shortcut registered first
    # here, last there): untraced, order alone may not pick among look-alikes.
    traced = st.s.inv.traced and st.t.inv.traced
    # A sorted checkpoint's groups that are numbered siblings of one chain (conv1, conv2,
    # conv3) are in their real order: when they and the other side's look-alikes are as
    # many, the alignment may follow it.
    chained = (
        not st.order_real and len(gs) == len(gt) and _one_chain(st.s, gs) and _one_chain(st.t, gt)
    )
    rivals = np.isfinite(sub)
    n_row, n_col = rivals.sum(axis=1), rivals.sum(axis=0)
    for r, c in align(sub.astype(np.float64)):
        weak = evidence[r, c] < UNTRACED_MIN_EVIDENCE
        if not traced and not chained and weak and (n_row[r] > 1 or n_col[c] > 1):
            continue
        pair_groups(st, int(gs[r]), int(gt[c]), "structural", STRUCTURE_DP)


def _one_chain(side: Side, groups: np.ndarray) -> bool:
    """Groups of one side → True when their order is real: the side's order is, or they are
    numbered siblings of one chain in a sorted checkpoint."""
    if not side.inv.sorted_keys:
        return True
    chains = side.group_chain[groups]
    return bool(len(groups) > 1 and (chains >= 0).all() and (chains == chains[0]).all())
