"""Matching primitives: monotone alignment with gaps, mutual-best pairing, the longest
increasing run, layer-index similarity and the splitting of huge shape buckets. Plain
functions over numpy arrays and lists, used by the stages of :mod:`weightmapper.engine`.
"""

from __future__ import annotations

import bisect
from collections import Counter

import numpy as np

from weightmapper.engine.side import Side

LSA_MAX_CELLS = 1_000_000
"""Largest shape bucket solved in one optimal assignment; larger ones are split by index."""


def codes(items: list) -> tuple[np.ndarray, list]:
    """Items → (code per item, distinct items in first-seen order)."""
    uni: dict = {}
    codes = np.array([uni.setdefault(x, len(uni)) for x in items], dtype=np.int64)
    return codes, list(uni)


def by_bucket(buckets: list[tuple[int, ...]], keys) -> dict[tuple[int, ...], list[int]]:  # type: ignore[no-untyped-def]
    """Bucket per key + key numbers → bucket → its keys, in the given order."""
    out: dict[tuple[int, ...], list[int]] = {}
    for k in keys:
        out.setdefault(buckets[k], []).append(k)
    return out


def split_large(
    s: Side, t: Side, rows_s: list[int], cols_t: list[int]
) -> list[tuple[list[int], list[int]]]:
    """A shape bucket → sub-buckets small enough for one optimal assignment.

    Huge buckets (thousands of per-expert tensors) are split by dense-ranked layer index,
    then by name template; what is still too large is cut into aligned chunks by position.
    """
    if len(rows_s) * len(cols_t) <= LSA_MAX_CELLS:
        return [(rows_s, cols_t)]
    out: list[tuple[list[int], list[int]]] = []
    s_by: dict[tuple, list[int]] = {}
    t_by: dict[tuple, list[int]] = {}
    for i in rows_s:
        s_by.setdefault(s.ranked[i], []).append(i)
    for j in cols_t:
        t_by.setdefault(t.ranked[j], []).append(j)
    rest_s: list[int] = []
    rest_t: list[int] = []
    for key, si in s_by.items():
        tj = t_by.pop(key, None)
        if tj is None:
            rest_s.extend(si)
        elif len(si) * len(tj) <= LSA_MAX_CELLS:
            out.append((si, tj))
        else:
            rest_s.extend(si)
            rest_t.extend(tj)
    for tj in t_by.values():
        rest_t.extend(tj)
    if rest_s and rest_t:
        chunk = max(1, LSA_MAX_CELLS // max(len(rest_s), len(rest_t), 1))
        chunk = max(chunk, 256)
        rs = sorted(rest_s, key=lambda i: (s.group_pos[s.group[i]], i))
        rt = sorted(rest_t, key=lambda j: (t.group_pos[t.group[j]], j))
        n = max(len(rs), len(rt))
        for start in range(0, n, chunk):
            a = rs[int(start * len(rs) / n) : int((start + chunk) * len(rs) / n)]
            b = rt[int(start * len(rt) / n) : int((start + chunk) * len(rt) / n)]
            if a and b:
                out.append((a, b))
    return out


def nearest(me: Side, other: Side, rows: np.ndarray, cands: np.ndarray, cap: int) -> np.ndarray:
    """Keys of one side + candidates on the other → at most ``cap`` candidates, those
    closest in position to the keys' mean position (kept in their order)."""
    if len(cands) <= cap:
        return cands
    center = float(np.mean(me.group_pos[me.group[rows]]))
    dist = np.abs(other.group_pos[other.group[cands]] - center)
    keep = np.sort(np.argsort(dist, kind="stable")[:cap])
    return cands[keep]


IndexKey = tuple[tuple[int, ...], int]
"""(dense-ranked layer indices, primary index or -1) of a group."""


def index_sim_one(a: IndexKey, b: IndexKey) -> float:
    """Two groups' index keys → 1 equal, partial credit for some equal slots or an equal
    primary index under different nesting (``blocks.7`` against ``features.1.7``)."""
    (ra, pa), (rb, pb) = a, b
    if ra == rb:
        return 1.0
    if not ra or not rb:
        return 0.5
    if len(ra) == len(rb):
        return 0.5 * sum(x == y for x, y in zip(ra, rb, strict=True)) / len(ra)
    return 0.8 if pa == pb else 0.2


def index_sim(a: list[IndexKey], b: list[IndexKey]) -> np.ndarray:
    """Index keys × index keys → similarity matrix (see :func:`index_sim_one`)."""
    return _index_table(a, b, partial=True)


def index_eq(a: list[IndexKey], b: list[IndexKey]) -> np.ndarray:
    """Index keys × index keys → 1 equal, 0.8 equal primary index under other nesting, else 0."""
    return _index_table(a, b, partial=False)


def _index_table(a: list[IndexKey], b: list[IndexKey], *, partial: bool) -> np.ndarray:
    """Index keys × index keys → :func:`index_sim` (``partial``) or :func:`index_eq` matrix.

    Computed on the distinct keys with array operations, one block per pair of nesting
    depths: a deep stack has one distinct key per layer, so a Python loop over all pairs
    of them would be quadratic in the layer count.
    """
    ca, ua = codes(a)
    cb, ub = codes(b)
    table = np.zeros((len(ua), len(ub)), dtype=np.float32)
    rows_by_len = _by_depth(ua)
    cols_by_len = _by_depth(ub)
    prim_a = np.array([k[1] for k in ua], dtype=np.int64)
    prim_b = np.array([k[1] for k in ub], dtype=np.int64)
    for la, (ia, ra) in rows_by_len.items():
        for lb, (ib, rb) in cols_by_len.items():
            if la == lb:
                eq = np.zeros((len(ia), len(ib)), dtype=np.int64)
                for slot in range(la):
                    eq += ra[:, slot][:, None] == rb[:, slot][None, :]
                same = eq == la
                block = np.where(same, 1.0, 0.5 * eq / la if partial and la else 0.0)
            elif la == 0 or lb == 0:
                block = np.full((len(ia), len(ib)), 0.5 if partial else 0.0)
            else:
                prim_eq = prim_a[ia][:, None] == prim_b[ib][None, :]
                block = np.where(prim_eq, 0.8, 0.2 if partial else 0.0)
            table[np.ix_(ia, ib)] = block
    return table[ca[:, None], cb[None, :]]


def _by_depth(keys: list[IndexKey]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Distinct index keys → nesting depth → (their positions, their ranks as a 2-d array)."""
    pos: dict[int, list[int]] = {}
    for i, (ranks, _) in enumerate(keys):
        pos.setdefault(len(ranks), []).append(i)
    out = {}
    for depth, idx in pos.items():
        ranks = np.array([keys[i][0] for i in idx], dtype=np.int64).reshape(len(idx), depth)
        out[depth] = (np.array(idx, dtype=np.int64), ranks)
    return out


def mutual_best(sim: np.ndarray, *, margin: float, floor: float) -> list[tuple[int, int]]:
    """Similarity matrix → (row, col) pairs that are each other's clear best."""
    out = []
    for r in range(sim.shape[0]):
        c = int(np.argmax(sim[r]))
        if sim[r, c] < floor or int(np.argmax(sim[:, c])) != r:
            continue
        row_rest = np.delete(sim[r], c)
        col_rest = np.delete(sim[:, c], r)
        second = max(row_rest.max(initial=0.0), col_rest.max(initial=0.0))
        if sim[r, c] - second >= margin:
            out.append((r, c))
    return out


def align(score: np.ndarray) -> list[tuple[int, int]]:
    """Match-score matrix (-inf = may not match) → monotone alignment with free gaps.

    Needleman–Wunsch with zero gap cost, one numpy row at a time: H[i, j] is the best total
    over prefixes, and a running maximum along the row handles gaps in the target.
    """
    n, m = score.shape
    H = np.zeros((n + 1, m + 1), dtype=np.float64)
    for i in range(1, n + 1):
        diag = H[i - 1, :-1] + score[i - 1]
        row = np.maximum(H[i - 1, 1:], diag)
        H[i, 1:] = np.maximum.accumulate(row)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if H[i, j] == H[i - 1, j]:
            i -= 1
        elif H[i, j] == H[i, j - 1]:
            j -= 1
        else:
            pairs.append((i - 1, j - 1))
            i -= 1
            j -= 1
    pairs.reverse()
    return pairs


def signatures_fit(a: tuple, b: tuple) -> bool:
    """Two group signatures → True when their shapes agree and their roles do where both
    sides name a strict role (``*`` stands for a role the naming does not reveal)."""
    if len(a) != len(b) or sorted(x[1] for x in a) != sorted(x[1] for x in b):
        return False
    if a == b:
        return True
    a_strict = sorted(x for x in a if x[0] != "*")
    b_strict = sorted(x for x in b if x[0] != "*")
    if len(a_strict) == len(a) and len(b_strict) == len(b):
        return False  # both fully named, and the names differ
    # Each strictly named (role, shape) of one side must find room on the other.
    for mine, other in ((a_strict, b), (b_strict, a)):
        pool = Counter(other)
        for role, shape in mine:
            if pool[(role, shape)] > 0:
                pool[(role, shape)] -= 1
            elif pool[("*", shape)] > 0:
                pool[("*", shape)] -= 1
            else:
                return False
    return True


def increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(row, col) pairs sorted by row → the longest subsequence increasing in both."""
    tails: list[int] = []
    tail_idx: list[int] = []
    prev = [-1] * len(pairs)
    for n, (_r, c) in enumerate(pairs):
        k = bisect.bisect_left(tails, c)
        if k == len(tails):
            tails.append(c)
            tail_idx.append(n)
        else:
            tails[k] = c
            tail_idx[k] = n
        prev[n] = tail_idx[k - 1] if k > 0 else -1
    out = []
    n = tail_idx[-1] if tail_idx else -1
    while n >= 0:
        out.append(pairs[n])
        n = prev[n]
    return out[::-1]
