"""Group carry inside the cascade: once one tensor of a parameter group is matched, the rest
of the group follows its partner group (bias after weight), and buffers follow their module.

Run after every stage (``group``); the group-level stages use :func:`pair_groups` to pair
two whole groups. Within a group, tensors pair by role; a statistic buffer (running mean)
pairs only with the same role and shape, and in buffer mode ``exclude`` only as a follower
of a learned tensor of its module (stage ``buffer``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from weightmapper.engine.state import MatchState

STRUCTURE_DP = 0.85
"""Structure score of a group pair made by alignment (and of a group with no lead yet)."""
STRUCTURE_LONE = 0.9
"""Structure of the one pair left of its shape when all others pair among themselves."""


def fill_groups(st: MatchState) -> None:
    """MatchState → for every matched group pair, the rest of the group (and buffers) paired."""
    matched = st.s_match >= 0
    n_g = len(st.s.group_paths)
    has_match = np.bincount(st.s.group[matched], minlength=n_g) > 0
    has_open = np.bincount(st.s.group[~matched], minlength=n_g) > 0
    t_open = np.bincount(st.t.group[st.t_match < 0], minlength=len(st.t.group_paths))
    for gs in np.nonzero(has_match & has_open)[0]:
        gt = group_partner(st, int(gs))
        if gt >= 0 and t_open[gt]:
            pair_groups(st, int(gs), gt, "group", None)


def group_partner(st: MatchState, gs: int) -> int:
    """Source group → the target group most of its matched keys went to, or -1."""
    hits = [int(st.t.group[st.s_match[i]]) for i in st.s.group_keys[gs] if st.s_match[i] >= 0]
    if not hits:
        return -1
    return Counter(hits).most_common(1)[0][0]


def pair_groups(st: MatchState, gs: int, gt: int, stage: str, structure: float | None) -> None:
    """Source group gs + target group gt → their open keys paired by role.

    ``structure`` None: the pairs take the structure score of the group's first matched key.
    """
    s_keys = [i for i in st.s.group_keys[gs] if st.s_match[i] < 0]
    t_keys = [j for j in st.t.group_keys[gt] if st.t_match[j] < 0]
    if not s_keys or not t_keys:
        return
    lead = next((i for i in st.s.group_keys[gs] if st.s_match[i] >= 0), -1)
    if structure is None:
        structure = st.rec[lead][3] if lead >= 0 else STRUCTURE_DP
    # Learned tensors first (they can become the lead), then statistic buffers.
    for want_stat in (False, True):
        for i in s_keys:
            if st.s_stat[i] != want_stat or st.s_match[i] >= 0:
                continue
            free = [j for j in t_keys if st.t_match[j] < 0 and st.t_stat[j] == want_stat]
            same_role = [j for j in free if st.t_role[j] == st.s_role[i]]
            choice = -1
            rel = None
            for pool in (same_role, [] if want_stat else free):
                fits = [
                    (j, r)
                    for j in pool
                    if (r := st.compat(i, j, exact_shape=want_stat)) is not None
                ]
                if len(fits) == 1:
                    choice, rel = fits[0]
                    break
                if len(fits) > 1:
                    break
            if choice < 0 or rel is None:
                continue
            if want_stat and not st.s_scorable[i]:
                if lead < 0:
                    continue
                st.pair(i, choice, rel, "buffer", True, structure, follows=lead)
            else:
                st.pair(i, choice, rel, stage, True, structure)
                if lead < 0:
                    lead = i


def promote_lone_pairs(st: MatchState) -> None:
    """MatchState → pairs that are the last of their shape on both sides get the structure
    of a unique shape.

    When every other scorable key of a shape bucket, on both sides, is paired within the
    bucket, the one pair left is forced by elimination (``wpe`` → ``pos_emb`` once ``wte`` →
    ``tok_emb``, ``embed_out`` → ``lm_head`` once ``embed_in`` is paired): its structure is
    that of a shape found once on each side, however little its names share.
    """
    s_bucket, t_bucket = _bucket_codes(st)
    n_b = int(max(s_bucket.max(initial=-1), t_bucket.max(initial=-1))) + 1
    s_rows = np.nonzero(st.s_scorable)[0]
    t_rows = np.nonzero(st.t_scorable)[0]
    s_count = np.bincount(s_bucket[s_rows], minlength=n_b)
    t_count = np.bincount(t_bucket[t_rows], minlength=n_b)
    # a shape found once on each side already scores as unique
    even = (s_count == t_count) & (s_count >= 2)
    rows = s_rows[even[s_bucket[s_rows]]]
    partner = st.s_match[rows]
    inside = (partner >= 0) & st.t_scorable[np.maximum(partner, 0)]
    inside &= t_bucket[np.maximum(partner, 0)] == s_bucket[rows]
    strays = np.bincount(s_bucket[rows[~inside]], minlength=n_b)
    rows = rows[(strays == 0)[s_bucket[rows]]]  # buckets paired among themselves
    if not len(rows):
        return
    structure = [st.rec[i][3] for i in rows.tolist()]
    weak = np.fromiter((x is not None and x < STRUCTURE_LONE for x in structure), bool, len(rows))
    n_weak = np.bincount(s_bucket[rows[weak]], minlength=n_b)
    for i in rows[weak & (n_weak == 1)[s_bucket[rows]]].tolist():
        rel, stage, group, _structure, follows = st.rec[i]
        st.rec[i] = (rel, stage, group, STRUCTURE_LONE, follows)


def _bucket_codes(st: MatchState) -> tuple[np.ndarray, np.ndarray]:
    """MatchState → per key of each side, a code of its shape bucket, equal across the sides
    exactly when the buckets are (worked out once per distinct shape)."""
    code: dict[tuple[int, ...], int] = {}
    out = []
    for side in (st.s, st.t):
        first = np.unique(side.shape_code, return_index=True)[1].tolist()
        per_shape = np.array([code.setdefault(side.bucket[k], len(code)) for k in first], np.int64)
        out.append(per_shape[side.shape_code])
    return out[0], out[1]
