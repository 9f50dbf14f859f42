"""Stage ``assignment``: the keys still open, per shape bucket, paired by an optimal
one-to-one assignment (``scipy.optimize.linear_sum_assignment``) on the combined score
matrices. Pairs scored below ``min_proposal`` are not proposed at all.

(This stage *solves* an assignment; accepting pairs by the threshold happens later, in
:mod:`weightmapper.engine.assign`.)
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from weightmapper.engine.primitives import by_bucket, split_large
from weightmapper.engine.signals import score_matrix, signal_matrices
from weightmapper.engine.state import MatchState

_BLOCK = -1.0
"""Cost of a forbidden cell: below any real score, so the solver avoids it when it can."""


def stage_assignment(st: MatchState, *, weights_first: bool) -> None:
    """MatchState → leftover keys paired per shape bucket by optimal assignment.

    ``weights_first``: only non-bias keys take part (weights decide the module pairing;
    biases then follow their group, or come in the second run).
    """
    s_open = np.flatnonzero((st.s_match < 0) & st.s_scorable).tolist()
    t_open = np.flatnonzero((st.t_match < 0) & st.t_scorable).tolist()
    if not s_open or not t_open:
        return  # one side has nothing left to pair
    if weights_first:
        s_open = [i for i in s_open if st.s.role[i] != "bias"]
        t_open = [j for j in t_open if st.t.role[j] != "bias"]
    s_by = by_bucket(st.s.bucket, s_open)
    t_by = by_bucket(st.t.bucket, t_open)
    for key, rows_s in s_by.items():
        cols_t = t_by.get(key)
        if cols_t is None:
            continue
        for rows_sub, cols_sub in split_large(st.s, st.t, rows_s, cols_t):
            _assign_block(st, np.array(rows_sub), np.array(cols_sub))


def _assign_block(st: MatchState, rows_s: np.ndarray, cols_t: np.ndarray) -> None:
    sig, blocked = signal_matrices(st, rows_s, cols_t)
    M = score_matrix(st, sig)
    cost = np.where(blocked, _BLOCK, M)
    rows, cols = linear_sum_assignment(cost, maximize=True)
    ok = ~blocked[rows, cols] & (M[rows, cols] >= st.settings.min_proposal)
    masked = np.where(blocked, -np.inf, M)
    for r, c in zip(rows[ok], cols[ok], strict=True):
        i, j = int(rows_s[r]), int(cols_t[c])
        rel = st.compat(i, j)
        if rel is None:
            continue
        row = np.delete(masked[r], c)
        col = np.delete(masked[:, c], r)
        others = np.concatenate([row, col])
        runner_up = float(others.max()) if others.size and np.isfinite(others).any() else -np.inf
        margin = float(M[r, c]) - runner_up if np.isfinite(runner_up) else 1.0
        # The margin over the runner-up is how unambiguous the choice was.
        structure = float(np.clip(0.45 + 2.0 * margin, 0.0, 1.0))
        st.pair(i, j, rel, "assignment", False, structure)
