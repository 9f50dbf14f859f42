"""Stage ``normalized``: identical canonical names (synonyms folded, layer indices
dense-ranked), unique on both sides."""

from __future__ import annotations

import numpy as np

from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState

STRUCTURE_NORMALIZED = 1.0


def stage_normalized(st: MatchState) -> None:
    """MatchState → open keys whose canonical names are equal and unique on both sides paired.

    A key's canonical name is the set of its tokens with its dense-ranked layer indices;
    names are compared as codes (one per distinct token string and index tuple).
    """
    s_open = np.nonzero((st.s_match < 0) & st.s_scorable)[0]
    t_open = np.nonzero((st.t_match < 0) & st.t_scorable)[0]
    if not len(s_open) or not len(t_open):
        return
    s_tok, t_tok = st.s.token_codes, st.t.token_codes
    s_names, t_names = _name_codes(st.s, s_tok, st.t, t_tok)
    code = np.unique(np.concatenate([s_names[s_open], t_names[t_open]]), return_inverse=True)[1]
    s_code, t_code = code[: len(s_open)], code[len(s_open) :]
    s_count = np.bincount(s_code, minlength=len(code))
    t_count = np.bincount(t_code, minlength=len(code))
    t_of = np.full(len(code), -1, np.int64)
    t_of[t_code] = t_open
    unique = (s_count[s_code] == 1) & (t_count[s_code] == 1)
    rows, cols = s_open[unique], t_of[s_code[unique]]
    # Dense-ranked layer indices are comparable only when both sides hold as many
    # instances of the name: with a block inserted or removed, rank 2 is not block 2.
    depth = np.fromiter(map(len, st.s.group_ranked), np.int64, len(st.s.group_ranked))
    ranked = depth[st.s.group[rows]] > 0
    keep = ~ranked | (_instance_counts(st.s, s_tok)[rows] == _instance_counts(st.t, t_tok)[cols])
    rows, cols = rows[keep], cols[keep]
    rels, fits = st.relations(rows, cols)
    st.pair_arrays(rows[fits], cols[fits], rels[fits], "normalized", False, STRUCTURE_NORMALIZED)


Codes = tuple[np.ndarray, list[str]]
"""A side's token strings as (code per key, distinct strings): :func:`distinct_codes`."""


def _name_codes(s: Side, s_tok: Codes, t: Side, t_tok: Codes) -> tuple[np.ndarray, np.ndarray]:
    """Two Sides with their token codes → per key of each, a code of its canonical name (its
    tokens as a sorted set and its dense-ranked indices), equal across the sides exactly
    when the names are."""
    words: dict[str, int] = {}
    ranks: dict[tuple[int, ...], int] = {}
    out = []
    for side, (tok_code, tokens) in ((s, s_tok), (t, t_tok)):
        word = np.array(
            [words.setdefault(" ".join(sorted(x.split())), len(words)) for x in tokens], np.int64
        )
        first = np.unique(side.group_rank_code, return_index=True)[1]  # codes in first-seen order
        rank = np.array(
            [ranks.setdefault(side.group_ranked[g], len(ranks)) for g in first.tolist()], np.int64
        )
        out.append((word[tok_code], rank[side.group_rank_code[side.group]]))
    width = max(1, len(ranks))
    return out[0][0] * width + out[0][1], out[1][0] * width + out[1][1]


def _instance_counts(side: Side, tok: Codes) -> np.ndarray:
    """Side with its token codes → per key, the number of distinct instances of its canonical
    tokens (keys with those tokens and distinct ranked indices)."""
    tok_code, tokens = tok
    rank_code = side.group_rank_code[side.group]
    width = int(rank_code.max(initial=0)) + 1
    pairs = np.unique(tok_code * width + rank_code)
    return np.bincount(pairs // width, minlength=len(tokens))[tok_code]
