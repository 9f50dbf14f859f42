"""Stage ``structural``: the remaining group sequences (execution or registration order)
aligned like sequences with gaps, under equal shape signatures, by dynamic programming: a
group with no partner is skipped, not shifting the rest."""

from __future__ import annotations

import logging

import numpy as np

from weightmapper.engine.groups import STRUCTURE_DP, pair_groups
from weightmapper.engine.primitives import align, index_eq
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
        if not len(cols):
            continue
        if len(rows) * len(cols) > DP_MAX_CELLS:
            log.info(
                "structural stage skipped %d × %d groups of one signature", len(rows), len(cols)
            )
            continue
        gs, gt = s_arr[rows], t_arr[cols]
        name = st.group_space.matrix(gs, gt)
        idx = index_eq([st.s.group_index_key[g] for g in gs], [st.t.group_index_key[g] for g in gt])
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
        rivals = np.isfinite(sub)
        n_row, n_col = rivals.sum(axis=1), rivals.sum(axis=0)
        for r, c in align(sub.astype(np.float64)):
            weak = evidence[r, c] < UNTRACED_MIN_EVIDENCE
            if not traced and weak and (n_row[r] > 1 or n_col[c] > 1):
                continue
            pair_groups(st, int(gs[r]), int(gt[c]), "structural", STRUCTURE_DP)
