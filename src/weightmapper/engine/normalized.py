"""Stage ``normalized``: identical canonical names (synonyms folded, layer indices
dense-ranked), unique on both sides."""

from __future__ import annotations

from collections import Counter

import numpy as np

from weightmapper.engine.state import MatchState

STRUCTURE_NORMALIZED = 1.0


def stage_normalized(st: MatchState) -> None:
    """MatchState → open keys whose canonical names are equal and unique on both sides paired."""
    s_open = np.nonzero((st.s_match < 0) & st.s_scorable)[0].tolist()
    t_open = np.nonzero((st.t_match < 0) & st.t_scorable)[0].tolist()
    s_key, t_key = st.s.norm_key, st.t.norm_key
    s_count = Counter(s_key[i] for i in s_open)
    t_by: dict[str, list[int]] = {}
    for j in t_open:
        t_by.setdefault(t_key[j], []).append(j)
    # Dense-ranked layer indices are comparable only when both sides hold as many
    # instances of the name: with a block inserted or removed, rank 2 is not block 2.
    s_inst = _instance_counts(st.s.tokens, s_key)
    t_inst = _instance_counts(st.t.tokens, t_key)
    rows, cols = [], []
    for i in s_open:
        k = s_key[i]
        js = t_by.get(k)
        if st.s.ranked[i] and s_inst[st.s.tokens[i]] != t_inst.get(
            st.t.tokens[js[0]] if js else "", -1
        ):
            continue
        if js is not None and len(js) == 1 and s_count[k] == 1:
            rows.append(i)
            cols.append(js[0])
    rels = st.compat_many(np.array(rows, np.int64), np.array(cols, np.int64))
    for i, j, rel in zip(rows, cols, rels, strict=True):
        if rel is not None:
            st.pair(i, j, rel, "normalized", False, STRUCTURE_NORMALIZED)


def _instance_counts(tokens: list[str], norm: list[str]) -> Counter:
    """Keys' canonical tokens and normalized keys → tokens → number of distinct instances."""
    return Counter(t for t, _ in dict.fromkeys(zip(tokens, norm, strict=True)))
