"""Stage ``exact``: identical keys (raw, or without the wrapper prefix all keys share)."""

from __future__ import annotations

from itertools import repeat

import numpy as np

from weightmapper.engine.state import MatchState

STRUCTURE_EXACT = 1.0


def stage_exact(st: MatchState) -> None:
    """MatchState → identical keys with compatible shapes paired."""
    s, t = st.s, st.t
    cols = np.fromiter(map(t.index.get, s.keys, repeat(-1)), np.int64, len(s))
    missing = np.nonzero(cols < 0)[0]
    if len(missing):
        # Keys not found as they are are looked up without the wrapper prefix.
        t_strip = {k: j for j, k in enumerate(t.stripped)}
        cols[missing] = [t_strip.get(s.stripped[i], -1) for i in missing.tolist()]
    rows = np.nonzero(cols >= 0)[0]
    cols = cols[rows]
    rels, fits = st.relations(rows, cols)
    fits &= st.t_match[cols] < 0
    # A target named twice (raw and stripped) goes to the first source key naming it.
    first = np.unique(cols[fits], return_index=True)[1]
    chosen = np.sort(np.nonzero(fits)[0][first])
    st.pair_arrays(rows[chosen], cols[chosen], rels[chosen], "exact", False, STRUCTURE_EXACT)
