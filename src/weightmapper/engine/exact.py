"""Stage ``exact``: identical keys (raw, or without the wrapper prefix all keys share)."""

from __future__ import annotations

import numpy as np

from weightmapper.engine.state import MatchState

STRUCTURE_EXACT = 1.0


def stage_exact(st: MatchState) -> None:
    """MatchState → identical keys with compatible shapes paired."""
    t_raw = st.t.index
    t_strip = {k: j for j, k in enumerate(st.t.stripped)}
    rows, cols = [], []
    for i, key in enumerate(st.s.keys):
        j = t_raw.get(key)
        if j is None:
            j = t_strip.get(st.s.stripped[i])
        if j is not None:
            rows.append(i)
            cols.append(j)
    rels = st.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
    taken = st.t_match >= 0
    chosen = []
    for i, j, rel in zip(rows, cols, rels, strict=True):
        if rel is not None and not taken[j]:
            taken[j] = True  # a target named twice (raw and stripped) goes to the first
            chosen.append((i, j, rel))
    st.pair_many(chosen, "exact", False, STRUCTURE_EXACT)
