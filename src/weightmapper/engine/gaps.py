"""Stage ``gap``: open groups between two matched neighbours (in execution or registration
order) pair position by position when both gaps hold the same sequence of group
signatures; unequal gaps (an inserted or removed block) are split by which neighbour each
group shares the longer module path with, so the inserted block is skipped."""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from weightmapper.engine.groups import STRUCTURE_DP, pair_groups
from weightmapper.engine.primitives import increasing, signatures_fit
from weightmapper.engine.state import MatchState


def stage_gaps(st: MatchState) -> None:
    """Open groups between two matched neighbours → paired when both gaps agree exactly.

    Matched groups (kept only where source and target order agree) are anchors; a run of
    open source groups between two consecutive anchors and the run of open target groups
    between their partners pair position by position when the runs have the same length
    and every position has the same signature (multiset of role and shape). Execution
    or registration order then decides what names cannot (``features.3.conv.0.1`` vs
    ``blocks.1.1.bn1``), and anything less than an exact fit is left to later stages.
    """
    s_open_groups, t_open_groups = st.open_groups("source"), st.open_groups("target")
    if not s_open_groups or not t_open_groups:
        return  # a gap pairs open groups of both sides: nothing to do (every name matched)
    n_s, n_t = len(st.s.group_paths), len(st.t.group_paths)
    s_order = np.argsort(st.s.group_pos, kind="stable")
    t_order = np.argsort(st.t.group_pos, kind="stable")
    t_rank = np.empty(n_t, np.int64)
    t_rank[t_order] = np.arange(n_t)
    partner = st.group_partners()
    anchors = [(r, int(t_rank[partner[g]])) for r, g in enumerate(s_order) if partner[g] >= 0]
    anchors = increasing(anchors)
    if len(anchors) < 2:
        return
    s_open = np.zeros(n_s, bool)
    s_open[s_open_groups] = True
    t_open = np.zeros(n_t, bool)
    t_open[t_open_groups] = True
    s_has = np.bincount(st.s.group[st.s_scorable], minlength=n_s) > 0
    t_has = np.bincount(st.t.group[st.t_scorable], minlength=n_t) > 0
    for (r0, c0), (r1, c1) in pairwise(anchors):
        gs = [int(g) for g in s_order[r0 + 1 : r1] if s_has[g]]
        gt = [int(g) for g in t_order[c0 + 1 : c1] if t_has[g]]
        if not gs or not gt:
            continue
        if not all(s_open[g] for g in gs) or not all(t_open[g] for g in gt):
            continue
        # A sorted checkpoint's run is in real order only where each group follows the last
        # by a number (``conv.0`` → ``conv.1``); a step between names is alphabetical.
        s_run = [int(g) for g in s_order[r0 + 1 : r1 + 1]]
        t_run = [int(g) for g in t_order[c0 + 1 : c1 + 1]]
        if not (st.s.group_linked[s_run].all() and st.t.group_linked[t_run].all()):
            continue
        if len(gs) == len(gt):
            runs = [(gs, gt)]
        else:
            # Unequal gaps (a block inserted or removed): split each gap by which anchor
            # its groups belong with (the longer shared module path), so that a block
            # whose other layers were matched on one side keeps its layers together.
            a0, a1 = int(s_order[r0]), int(s_order[r1])
            b0, b1 = int(partner[a0]), int(partner[a1])
            s_lab = _kinship(st.s.group_paths, gs, a0, a1)
            t_lab = _kinship(st.t.group_paths, gt, b0, b1)
            if s_lab is None or t_lab is None:
                continue
            runs = [(s_lab[k], t_lab[k]) for k in (0, 2)]
        for run_s, run_t in runs:
            if run_s and len(run_s) == len(run_t) and _same_signatures(st, run_s, run_t):
                for a, b in zip(run_s, run_t, strict=True):
                    pair_groups(st, a, b, "gap", STRUCTURE_DP)


def _same_signatures(st: MatchState, gs: list[int], gt: list[int]) -> bool:
    """Equal-length group lists → True when each position has equal signature and kind."""
    return all(
        signatures_fit(st.signature("source", a), st.signature("target", b))
        and st.families_fit(a, b)
        for a, b in zip(gs, gt, strict=True)
    )


def _shared_depth(a: str, b: str) -> int:
    """Two module paths → how many leading path components they share."""
    n = 0
    for x, y in zip(a.split("."), b.split("."), strict=False):
        if x != y:
            break
        n += 1
    return n


def _kinship(
    paths: list[str], gap: list[int], before: int, after: int
) -> tuple[list[int], list[int], list[int]] | None:
    """Groups of a gap between anchor groups before/after → (closer to before, as close to
    both, closer to after), or None when the three runs are not in that order."""
    runs: tuple[list[int], list[int], list[int]] = ([], [], [])
    last = 0
    for g in gap:
        d0 = _shared_depth(paths[g], paths[before])
        d1 = _shared_depth(paths[g], paths[after])
        k = 0 if d0 > d1 else (2 if d1 > d0 else 1)
        if k < last:
            return None
        last = k
        runs[k].append(g)
    return runs
