"""Signals: the per-pair evidence every final pair is scored with, each defined once.

Every pair is scored with the same signals whatever cascade stage found it, so a score
means the same thing everywhere:

``shape``      1 for equal shapes; less for a transpose or reshape the types do not explain
               (:func:`weightmapper.engine.shapes.shape_relation`)
``name``       token similarity of the canonical names plus agreement of layer indices
               (with the offsets :mod:`weightmapper.engine.index_map` learned, where it did);
               at least 0.85 where a naming convention gives both keys one role in the
               same block (or one key, the other's role read from a forward pass)
``hierarchy``  similarity of the parent module paths, of the module types, and whether the
               siblings went the same way
``order``      agreement of the pair's positions in execution/registration order,
               measured against the anchors the cascade already trusts; in a sorted
               checkpoint (:attr:`weightmapper.inventory.Inventory.sorted_keys`) only
               within a chain of numbered siblings, against that chain's own anchors, and
               0.5 (no evidence) elsewhere
``structure``  how unambiguous the choice was (a unique shape, a whole group aligned, or
               the margin over the runner-up); set by the stage that made the pair

The combined score is the weighted mean of the signals (weights in
:class:`weightmapper.settings.ScoreSettings`).

Each signal has two forms side by side in one function: a *matrix* (source keys × target
keys, for the assignment stage and the notes) and *pairwise* (equal-length lists of pairs,
for the breakdown of the pairs made). Both share one formula; only how the inputs are
looked up differs: the pairwise form works out a part that depends on codes alone (the
spelling of two token strings, two parents and families) once per distinct pair of codes,
since many pairs repeat a few names block after block.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from weightmapper.engine.columns import distinct_pairs
from weightmapper.engine.index_map import index_agreement
from weightmapper.engine.names import similarity_matrix
from weightmapper.engine.primitives import codes, increasing, index_sim
from weightmapper.engine.shapes import shape_relation
from weightmapper.engine.state import MatchState

NAME_MIX = (0.6, 0.15, 0.25)
"""Weights of IDF token cosine, character similarity and layer-index agreement in ``name``."""
ROLE_NAME = 0.85
"""``name`` of two keys with the same role: at least this times their layer-index agreement
(a role in another block is another tensor)."""
HIER_MIX = (0.3, 0.4, 0.3)
"""Weights of parent-path similarity, module-type compatibility and sibling coherence."""
ORDER_SPREAD = 4.0
"""``order`` falls from 1 to 0 as the distance to the predicted position grows to 1/4."""
ORDER_UNKNOWN = 0.5
"""``order`` of a pair whose positions carry no order (an unnumbered name in a sorted file)."""
ANCHOR_MIN_NAME = 0.5
"""Least ``name`` signal a matched pair needs to serve as an anchor of the ``order`` signal."""


# --- the signals ----------------------------------------------------------------------------
def name_signal(
    st: MatchState,
    rows_s: np.ndarray,
    cols_t: np.ndarray,
    *,
    matrix: bool,
    groups: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Source keys, target keys (+ for one value per pair, their groups when the caller
    has them) → ``name``: a matrix (rows × cols) or one value per pair."""
    s, t = st.s, st.t
    if matrix:
        s_tokens = [s.tokens[i] for i in rows_s]
        t_tokens = [t.tokens[j] for j in cols_t]
        s_ik = [s.group_index_key[g] for g in s.group[rows_s]]
        t_ik = [t.group_index_key[g] for g in t.group[cols_t]]
        spelled = _spelling(
            st.key_space.matrix(rows_s, cols_t), similarity_matrix(s_tokens, t_tokens)
        )
        idx = index_agreement(
            st, s.group[rows_s], t.group[cols_t], index_sim(s_ik, t_ik), matrix=True
        )
    else:
        # the spelling depends on the two token strings alone: a deep stack repeats a few
        # names in every block, so it is worked out once per distinct pair of them
        space = st.key_space
        spelled = _per_distinct_pair(
            space.code_a,
            space.code_b,
            rows_s,
            cols_t,
            lambda a, b: _spelling(space.pairwise(a, b), space.ratio_pairs(a, b)),
        )
        gs, gt = groups if groups is not None else (s.group[rows_s], t.group[cols_t])
        plain = st.s_index.similarity(st.t_index, gs, gt)
        idx = index_agreement(st, gs, gt, plain, matrix=False)
    lexical = spelled + NAME_MIX[2] * idx
    if not matrix and not st.func_same.any():
        return lexical  # no two keys share a role: the rule below changes nothing
    s_func, t_func = st.s_func[rows_s], st.t_func[cols_t]
    s_named, t_named = st.s_named[rows_s], st.t_named[cols_t]
    if matrix:
        s_func, t_func = s_func[:, None], t_func[None, :]
        s_named, t_named = s_named[:, None], t_named[None, :]
    # A name a convention gives the same role as the other key's (named or read from a
    # forward pass) means the same tensor as much as a similar spelling does:
    # ``layer.1.layer_norm`` is ``mlp_norm``. Two roles read from forward passes alone are
    # function, not names, and too coarse for this (every classifier is ``head.cls``).
    same_role = st.func_same[s_func, t_func] & (s_named | t_named)
    return np.where(same_role, np.maximum(lexical, ROLE_NAME * idx), lexical)


def _spelling(cos: np.ndarray, fz: np.ndarray) -> np.ndarray:
    """Token cosine + character similarity → their share of ``name`` (the layer-index
    agreement is added to it: the first two terms of :data:`NAME_MIX`, summed in that order)."""
    return NAME_MIX[0] * cos + NAME_MIX[1] * fz


def hierarchy_signal(st: MatchState, gs: np.ndarray, gt: np.ndarray, *, matrix: bool) -> np.ndarray:
    """Source groups, target groups → ``hierarchy``: a matrix or one value per pair."""
    if matrix:
        parent = st.parent_space.matrix(gs, gt)
        gs, gt = gs[:, None], gt[None, :]
        kinship = _kinship(st, gs, gt, parent)
    else:
        # parent tokens and family repeat in every block: their part once per distinct
        # pair of (parent tokens, family) codes
        n_fam = len(st.fam_table)
        kinship = _per_distinct_pair(
            st.parent_space.code_a * n_fam + st.s_fam,
            st.parent_space.code_b * n_fam + st.t_fam,
            gs,
            gt,
            lambda a, b: _kinship(st, a, b, st.parent_space.pairwise(a, b)),
        )
    return kinship + HIER_MIX[2] * coherence(st, gs, gt)


def _kinship(st: MatchState, gs: np.ndarray, gt: np.ndarray, parent: np.ndarray) -> np.ndarray:
    """Source groups, target groups (broadcastable) + the similarity of their parent tokens
    → the share of ``hierarchy`` their parents and module families give (the first two
    terms of :data:`HIER_MIX`, summed in that order; coherence is added to it)."""
    parent[st.s_parent_empty[gs] & st.t_parent_empty[gt]] = 1.0  # two roots
    fam = st.fam_table[st.s_fam[gs], st.t_fam[gt]]
    return HIER_MIX[0] * parent + HIER_MIX[1] * fam


def order_signal(st: MatchState, gs: np.ndarray, gt: np.ndarray, *, matrix: bool) -> np.ndarray:
    """Source groups, target groups → ``order``: a matrix or one value per pair."""
    if not matrix:
        return _order_pairs(st, gs, gt)
    gs, gt = gs[:, None], gt[None, :]
    pos = st.s.group_pos[gs]
    if st.order_real:
        pred = predict_position(st, pos)
        return 1.0 - np.minimum(1.0, ORDER_SPREAD * np.abs(pred - st.t.group_pos[gt]))
    # A sorted checkpoint's positions are alphabetical except within a chain of numbered
    # siblings: a chain with pairs of its own is placed by them; elsewhere the signal has
    # no evidence either way.
    out = np.full(np.broadcast_shapes(np.shape(gs), np.shape(gt)), ORDER_UNKNOWN)
    if st.chain_anchors:
        # each chain's formula on its own entries only (the same values as on all of them)
        pos_b, tpos_b = np.broadcast_arrays(pos, st.t.group_pos[gt])
        chain = np.broadcast_to(st.s.group_chain[gs], out.shape)
        for c, (x, y) in st.chain_anchors.items():
            mask = chain == c
            if not mask.any():
                continue
            pred = _interpolate(pos_b[mask], x, y)
            out[mask] = 1.0 - np.minimum(1.0, ORDER_SPREAD * np.abs(pred - tpos_b[mask]))
    return np.where(st.t.group_pos_known[gt], out, ORDER_UNKNOWN)


def _order_pairs(st: MatchState, gs: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Source groups, target groups (equal length) → ``order`` of each pair: the values of
    :func:`order_signal`'s matrix form, with each source group's predicted target position
    worked out once per group rather than once per pair (many pairs share a source group)."""
    if st.order_real:
        pred = predict_position(st, st.s.group_pos)[gs]
        return 1.0 - np.minimum(1.0, ORDER_SPREAD * np.abs(pred - st.t.group_pos[gt]))
    if not st.chain_anchors:
        return np.full(len(gs), ORDER_UNKNOWN)
    # each chain's formula on its own groups only (the same values as on all of them); NaN
    # marks a source group no chain places and a target group whose position is not known
    group_pred = np.full(len(st.s.group_pos), np.nan)
    for c, (x, y) in st.chain_anchors.items():
        mask = st.s.group_chain == c
        if mask.any():
            group_pred[mask] = _interpolate(st.s.group_pos[mask], x, y)
    tpos = np.where(st.t.group_pos_known, st.t.group_pos, np.nan)
    # the formula on every pair: a NaN position stays NaN through it, and such a pair has
    # no evidence either way
    out = 1.0 - np.minimum(1.0, ORDER_SPREAD * np.abs(group_pred[gs] - tpos[gt]))
    return np.nan_to_num(out, copy=False, nan=ORDER_UNKNOWN)


def shape_signal(st: MatchState, rows_s: np.ndarray, cols_t: np.ndarray) -> np.ndarray:
    """Source keys × target keys → ``shape`` matrix, -1 where the shapes cannot relate.

    The pairwise form is the score of each pair's recorded ShapeRelation
    (:meth:`MatchState.compat`), which the same :func:`shape_relation` computes.
    """
    s, t = st.s, st.t
    gs, gt = s.group[rows_s], t.group[cols_t]
    # Shape relations depend only on (shape, type) pairs: compute each distinct one once.
    s_codes, s_uni = codes([(s.shape[i], s.group_type[g]) for i, g in zip(rows_s, gs, strict=True)])
    t_codes, t_uni = codes([(t.shape[j], t.group_type[g]) for j, g in zip(cols_t, gt, strict=True)])
    rel_score = np.zeros((len(s_uni), len(t_uni)), dtype=np.float32)
    for a, (sh_a, ty_a) in enumerate(s_uni):
        for b, (sh_b, ty_b) in enumerate(t_uni):
            rel = shape_relation(sh_a, sh_b, ty_a, ty_b, st.tol)
            rel_score[a, b] = rel.score if rel is not None else -1.0
    return rel_score[s_codes[:, None], t_codes[None, :]]


def _per_distinct_pair(
    code_a: np.ndarray,
    code_b: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    compute: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> np.ndarray:
    """Codes of one side's items + codes of the other's + equal-length item numbers + a
    pairwise rule that depends on the two items' codes alone → the rule's value for each
    pair, computed once per distinct pair of codes on one item holding each code."""
    if not len(rows):
        return compute(rows, cols)
    n_a, n_b = int(code_a.max()) + 1, int(code_b.max()) + 1
    if n_a * n_b > max(4 * len(rows), 1 << 16):
        ka, kb, back = distinct_pairs(code_a[rows], code_b[cols], n_b)
        return compute(_holder(code_a)[ka], _holder(code_b)[kb])[back]
    # few codes: the values of the code pairs present go into a table of every code
    # pair, read back by each pair's place in it
    joint = (code_a * n_b)[rows] + code_b[cols]
    present = np.zeros(n_a * n_b, bool)
    present[joint] = True
    found = np.flatnonzero(present)
    ka, kb = np.divmod(found, n_b)
    values = compute(_holder(code_a)[ka], _holder(code_b)[kb])
    table = np.zeros(n_a * n_b, values.dtype)
    table[found] = values
    return table[joint]


def _holder(codes: np.ndarray) -> np.ndarray:
    """Items' codes → for each code an item holding it (which one does not matter: the
    rules given to :func:`_per_distinct_pair` read only the code)."""
    out = np.zeros(int(codes.max(initial=-1)) + 1, np.int64)
    out[codes] = np.arange(len(codes))
    return out


# --- all signals at once --------------------------------------------------------------------
def signal_matrices(
    st: MatchState, rows_s: np.ndarray, cols_t: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Source keys rows_s × target keys cols_t → (signal matrices, blocked mask)."""
    gs, gt = st.s.group[rows_s], st.t.group[cols_t]
    shape = shape_signal(st, rows_s, cols_t)
    blocked = st.fam_table[st.s_fam[gs][:, None], st.t_fam[gt][None, :]] <= 0
    blocked |= shape < 0
    blocked |= st.s_stat[rows_s][:, None] != st.t_stat[cols_t][None, :]
    both_strict = st.s_strict_role[rows_s][:, None] & st.t_strict_role[cols_t][None, :]
    blocked |= both_strict & (st.s_role[rows_s][:, None] != st.t_role[cols_t][None, :])
    blocked |= st.roles_block(rows_s[:, None], cols_t[None, :])
    if st.has_incompatible:
        blocked |= st.blocked_by_user(rows_s, cols_t)
    sig = {
        "shape": np.maximum(shape, 0.0),
        "name": name_signal(st, rows_s, cols_t, matrix=True),
        "hierarchy": hierarchy_signal(st, gs, gt, matrix=True),
        "order": order_signal(st, gs, gt, matrix=True),
    }
    return sig, blocked


def pair_signals(st: MatchState, rows_s: np.ndarray, cols_t: np.ndarray) -> dict[str, np.ndarray]:
    """Equal-length source and target key numbers → each pair's name, hierarchy and order,
    one float64 array per signal."""
    gs, gt = st.s.group[rows_s], st.t.group[cols_t]
    return {
        "name": np.asarray(name_signal(st, rows_s, cols_t, matrix=False), np.float64),
        "hierarchy": np.asarray(hierarchy_signal(st, gs, gt, matrix=False), np.float64),
        "order": np.asarray(order_signal(st, gs, gt, matrix=False), np.float64),
    }


def score_matrix(st: MatchState, sig: Mapping[str, np.ndarray]) -> np.ndarray:
    """Signal matrices → combined score matrix without ``structure`` (no stage has set it yet)."""
    w = {k: v for k, v in st.weights.items() if k != "structure"}
    if sum(w.values()) <= 0:
        w = {"shape": 1.0}
    return combine_matrix(sig, w)


def combine(breakdown: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Per-signal scores + weights → weighted mean in [0, 1]."""
    total = sum(weights.values())
    s = sum(weights[k] * float(breakdown.get(k, 0.0)) for k in weights)
    return float(min(1.0, max(0.0, s / total))) if total > 0 else 0.0


def combine_matrix(signals: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Per-signal score matrices + weights → weighted-mean matrix."""
    total = sum(weights.values())
    out: np.ndarray | None = None
    for k, w in weights.items():
        if w == 0 or k not in signals:
            continue
        term = w * signals[k]
        out = term if out is None else out + term
    if out is None:
        shape = next(iter(signals.values())).shape
        return np.zeros(shape, dtype=np.float32)
    return (out / total).astype(np.float32)


# --- evidence the order and hierarchy signals read ------------------------------------------
def update_anchors(st: MatchState) -> None:
    """Matched groups → a monotone map from source position to expected target position.

    Only pairs whose names agree serve as anchors (when there are enough of them), so a
    pair matched on shape alone never vouches for its own position.
    """
    if st.anchors_for is not None and np.array_equal(st.anchors_for, st.s_match):
        return  # no pair changed since the anchors were last read: they are the same
    st.anchors_for = st.s_match.copy()
    rows = np.nonzero(st.s_match >= 0)[0]
    if not len(rows):
        return
    cols = st.s_match[rows]
    if not st.order_real:
        # Sorted, only a chain's own pairs place it (``classifier`` sorts before
        # ``features``, ``bn1`` before ``conv1``): each chain gets the longest run of its
        # pairs whose two orders agree, when there are two or more.
        x = st.s.group_pos[st.s.group[rows]]
        y = st.t.group_pos[st.t.group[cols]]
        chain = st.s.group_chain[st.s.group[rows]]
        st.chain_anchors = {}
        for c in np.unique(chain[chain >= 0]):
            cx, cy = x[chain == c], y[chain == c]
            keep = _agreeing(cx, cy)
            ax, ay = _monotone(cx[keep], cy[keep])
            if len(ax) >= 2:
                st.chain_anchors[int(c)] = (ax, ay)
        return
    trusted = name_signal(st, rows, cols, matrix=False) >= ANCHOR_MIN_NAME
    if trusted.sum() >= 2:
        rows, cols = rows[trusted], cols[trusted]
    x = st.s.group_pos[st.s.group[rows]]
    y = st.t.group_pos[st.t.group[cols]]
    st.anchor_x, st.anchor_y = _monotone(x, y)


def _monotone(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anchor positions → (distinct source positions, mean target position of each, made
    non-decreasing: execution order is monotone, so the map is kept so)."""
    ux, inv = np.unique(x, return_inverse=True)
    uy = np.bincount(inv, weights=y) / np.bincount(inv)
    return ux, np.maximum.accumulate(uy)


def _agreeing(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Anchor positions → indices of the longest subsequence increasing in both."""
    rank_y = np.unique(y, return_inverse=True)[1]
    order = np.lexsort((rank_y, x))
    ranks = rank_y[order]
    if len(ranks) and (ranks[1:] >= ranks[:-1]).all():
        # Both orders already agree (the usual case): the longest run strictly increasing
        # in both keeps one pair per target position, the last of each (what
        # :func:`increasing` picks among equal ones).
        last = np.append(ranks[1:] != ranks[:-1], True)
        return order[last].astype(np.int64)
    run = increasing(list(zip(order.tolist(), ranks.tolist(), strict=True)))
    return np.array([i for i, _ in run], dtype=np.int64)


def predict_position(st: MatchState, pos: np.ndarray) -> np.ndarray:
    """Source positions → expected target positions, interpolated between anchors.

    Beyond the first and last anchor the map continues with slope 1 (what lies past the
    last shared module keeps its distance to it) rather than collapsing onto it.
    """
    return _interpolate(pos, st.anchor_x, st.anchor_y)


def _interpolate(pos: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Positions + anchors (x increasing) → interpolated positions, slope 1 past the ends."""
    pred = np.interp(pos, x, y)
    pred = np.where(pos < x[0], y[0] + (pos - x[0]), pred)
    pred = np.where(pos > x[-1], y[-1] + (pos - x[-1]), pred)
    return np.clip(pred, 0.0, 1.0)


def update_coherence(st: MatchState) -> None:
    """Matched groups → how many go from each source parent module to each target parent."""
    partner = st.group_partners()
    st.partner = partner
    matched = np.nonzero(partner >= 0)[0]
    if not len(matched):
        st.coh_keys = np.zeros(0, dtype=np.int64)
        st.coh_vals = np.zeros(0, dtype=np.int64)
        return
    m = int(st.t_parent_id.max()) + 1
    keys = st.s_parent_id[matched] * m + st.t_parent_id[partner[matched]]
    st.coh_keys, st.coh_vals = np.unique(keys, return_counts=True)


def coherence(st: MatchState, gs: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Source × target groups (broadcastable) → 1 where other children of the source's
    parent went to children of the target's parent (siblings stay siblings), else 0."""
    gs_b, gt_b = np.broadcast_arrays(gs, gt)
    if not len(st.coh_keys):
        return np.zeros(gs_b.shape, dtype=np.float32)
    m = int(st.t_parent_id.max()) + 1
    by_parent = _single_target_parents(st.coh_keys, st.coh_vals, m, int(st.s_parent_id.max()) + 1)
    if by_parent is not None:
        # each source parent's children went to one target parent: compare with it
        target, several = (x[st.s_parent_id] for x in by_parent)  # per source group
        # the pair itself does not vouch for itself: a group that is the only one counted
        # for its parent (several False) needs a target other than its own partner
        lone_partner = np.where(several, -1, st.partner)
        vouched = lone_partner[gs_b] != gt_b
        return ((target[gs_b] == st.t_parent_id[gt_b]) & vouched).astype(np.float32)
    q = st.s_parent_id[gs_b] * m + st.t_parent_id[gt_b]
    pos = np.clip(np.searchsorted(st.coh_keys, q), 0, len(st.coh_keys) - 1)
    n = np.where(st.coh_keys[pos] == q, st.coh_vals[pos], 0)
    n = n - (st.partner[gs_b] == gt_b)  # the pair itself does not vouch for itself
    return (n > 0).astype(np.float32)


def _single_target_parents(
    keys: np.ndarray, counts: np.ndarray, m: int, n_parents: int
) -> tuple[np.ndarray, np.ndarray] | None:
    """Sorted (source parent × m + target parent) codes of matched groups + how many went
    each way + m (above every target parent) + the number of source parents → per source
    parent the target parent its
    matched children went to (m: none) and whether two or more went there; None when some
    source parent's children went to two target parents (the usual sibling layout has
    one, which makes :func:`coherence` a lookup per source parent)."""
    s_parent, t_parent = np.divmod(keys, m)
    if (s_parent[1:] == s_parent[:-1]).any():
        return None
    target = np.full(n_parents, m, np.int64)
    target[s_parent] = t_parent
    several = np.zeros(len(target), bool)
    several[s_parent] = counts >= 2
    return target, several
