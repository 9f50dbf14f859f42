"""Stage ``template``: parameter groups bucketed by (name template, shape signature); a
bucket that pairs unambiguously with one on the other side is matched instance by instance
along its layer indices (this settles 10k-expert MoE layers in one step)."""

from __future__ import annotations

from collections import Counter

import numpy as np

from weightmapper.engine.groups import pair_groups
from weightmapper.engine.primitives import mutual_best
from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState

STRUCTURE_TEMPLATE = 0.9
"""Structure of a template pair that names singled out among several (scaled by name similarity)."""
STRUCTURE_TEMPLATE_UNIQUE = 1.0
"""Structure of the only template of its signature on both sides (scaled by name similarity)."""
STRUCTURE_BY_ORDER = 0.75
"""Structure of a template pair chosen by instance count and sibling rank, not by names."""
STRUCTURE_UNIQUE_SHAPE = 0.9
"""Least structure of a one-instance pair holding the only tensor of its shape on both sides."""


def stage_template(st: MatchState) -> None:
    """Buckets of (template, signature) that pair unambiguously → instance by instance."""
    s_open = st.open_groups("source")
    t_open = st.open_groups("target")
    s_b = _template_buckets(st, "source", s_open)
    t_b = _template_buckets(st, "target", t_open)
    for sig, s_tpls in s_b.items():
        t_tpls = t_b.get(sig)
        if not t_tpls:
            continue
        s_names, t_names = list(s_tpls), list(t_tpls)
        unique = len(s_names) == 1 and len(t_names) == 1
        sim = st.group_space.matrix(
            np.array([s_tpls[n][0] for n in s_names]), np.array([t_tpls[n][0] for n in t_names])
        )
        chosen = [(0, 0)] if unique else mutual_best(sim, margin=0.15, floor=0.5)
        by_order = set()
        if not unique and st.order_real:
            # Names left some templates undecided: pair those whose instance count and
            # place among their siblings agree and single each other out.
            extra = _pair_by_sibling_rank(st, s_tpls, t_tpls, s_names, t_names, chosen)
            by_order = set(extra)
            chosen = chosen + extra
        for a, b in chosen:
            gs_list, gt_list = s_tpls[s_names[a]], t_tpls[t_names[b]]
            if len(gs_list) != len(gt_list):
                continue
            if not st.families_fit(gs_list[0], gt_list[0]):
                continue
            # A unique signature alone is shape evidence; names make it structure.
            structure = STRUCTURE_TEMPLATE_UNIQUE if unique else STRUCTURE_TEMPLATE
            structure *= 0.5 + 0.5 * float(sim[a, b])
            if unique and len(gs_list) == 1 and _unique_shape(st, gs_list[0], gt_list[0]):
                # The only tensor of its shape on either side: strong evidence by itself.
                structure = max(structure, STRUCTURE_UNIQUE_SHAPE)
            if (a, b) in by_order:
                structure = STRUCTURE_BY_ORDER
            s_sorted = sorted(gs_list, key=lambda g: (st.s.group_ranked[g], g))
            t_sorted = sorted(gt_list, key=lambda g: (st.t.group_ranked[g], g))
            if [st.s.group_ranked[g] for g in s_sorted] != [st.t.group_ranked[g] for g in t_sorted]:
                s_sorted, t_sorted = sorted(gs_list), sorted(gt_list)  # position order
            _pair_instances(st, s_sorted, t_sorted, structure)


def _unique_shape(st: MatchState, gs: int, gt: int) -> bool:
    """Two groups → True when one tensor shape of theirs occurs once on each side."""
    sc, tc = st.bucket_counts
    t_buckets = {st.t.bucket[j] for j in st.t.group_keys[gt]}
    return any(
        sc[st.s.bucket[i]] == 1 and tc.get(st.s.bucket[i], 0) == 1
        for i in st.s.group_keys[gs]
        if st.s.bucket[i] in t_buckets
    )


def _pair_by_sibling_rank(
    st: MatchState,
    s_tpls: dict[str, list[int]],
    t_tpls: dict[str, list[int]],
    s_names: list[str],
    t_names: list[str],
    chosen: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Undecided templates → pairs whose (instance count, sibling rank) is unique on both sides."""
    taken_a = {a for a, _ in chosen}
    taken_b = {b for _, b in chosen}

    def key(side: Side, groups: list[int]) -> tuple[int, int]:
        ranks = Counter(side.group_sibrank[g] for g in groups)
        return len(groups), ranks.most_common(1)[0][0]

    s_keys: dict[tuple[int, int], list[int]] = {}
    t_keys: dict[tuple[int, int], list[int]] = {}
    for a, n in enumerate(s_names):
        if a not in taken_a:
            s_keys.setdefault(key(st.s, s_tpls[n]), []).append(a)
    for b, n in enumerate(t_names):
        if b not in taken_b:
            t_keys.setdefault(key(st.t, t_tpls[n]), []).append(b)
    out = []
    for k, a_list in s_keys.items():
        b_list = t_keys.get(k)
        # One-instance templates are left to the structural stage: a lone coincidence of
        # sibling rank is weak evidence; a whole repeated template agreeing is not.
        if k[0] >= 2 and len(a_list) == 1 and b_list is not None and len(b_list) == 1:
            out.append((a_list[0], b_list[0]))
    return out


def _pair_instances(
    st: MatchState, s_groups: list[int], t_groups: list[int], structure: float
) -> None:
    """Aligned instance lists of two templates → every instance pair matched.

    The first pair is matched by role (:func:`pair_groups`); its local-name pattern is
    then applied to all other instances at once, falling back to :func:`pair_groups`
    for any instance that does not fit the pattern.
    """
    if not s_groups:
        return
    g0s, g0t = s_groups[0], t_groups[0]
    pair_groups(st, g0s, g0t, "template", structure)
    s_path, t_path = st.s.group_paths, st.t.group_paths
    pattern: list[tuple[str, str, str, bool, str | None]] = []
    for i in st.s.group_keys[g0s]:
        j = int(st.s_match[i])
        if j < 0 or st.t.group[j] != g0t:
            continue
        _rel, stage, group, _st, follows = st.rec[i]
        lead = st.s.keys[follows].rpartition(".")[2] if follows >= 0 else None
        pattern.append(
            (
                st.s.keys[i].rpartition(".")[2],
                st.t.keys[j].rpartition(".")[2],
                stage,
                group,
                lead,
            )
        )
    if len(s_groups) == 1:
        return
    if not pattern:
        for gs, gt in zip(s_groups[1:], t_groups[1:], strict=True):
            pair_groups(st, gs, gt, "template", structure)
        return
    rows, cols, meta = [], [], []
    misfits = []
    s_index, t_index = st.s.index, st.t.index
    for gs, gt in zip(s_groups[1:], t_groups[1:], strict=True):
        ps, pt = s_path[gs], t_path[gt]
        found = []
        for ls, lt, stage, group, lead in pattern:
            i = s_index.get(f"{ps}.{ls}" if ps else ls)
            j = t_index.get(f"{pt}.{lt}" if pt else lt)
            if i is None or j is None:
                break
            fi = -1
            if lead is not None:
                fi = s_index.get(f"{ps}.{lead}" if ps else lead, -1)
            found.append((i, j, stage, group, fi))
        if len(found) != len(pattern):
            misfits.append((gs, gt))
            continue
        for i, j, stage, group, fi in found:
            rows.append(i)
            cols.append(j)
            meta.append((stage, group, fi, gs, gt))
    rels = st.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
    for i, j, rel, (stage, group, fi, gs, gt) in zip(rows, cols, rels, meta, strict=True):
        if rel is None or st.s_match[i] >= 0 or st.t_match[j] >= 0:
            misfits.append((gs, gt))
            continue
        st.pair(i, j, rel, stage, group, structure, follows=fi)
    for gs, gt in dict.fromkeys(misfits):
        pair_groups(st, gs, gt, "template", structure)


def _template_buckets(
    st: MatchState, which: str, groups: list[int]
) -> dict[tuple, dict[str, list[int]]]:
    """``source``/``target`` + open groups → signature → name template → its groups."""
    side = st.s if which == "source" else st.t
    out: dict[tuple, dict[str, list[int]]] = {}
    for g in groups:
        sig = st.signature(which, g)
        tpl = side.group_template[g] or side.group_tokens[g] or "<root>"
        out.setdefault(sig, {}).setdefault(tpl, []).append(g)
    return out
