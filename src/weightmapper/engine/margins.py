"""Runner-up margins: how much better each pair is than its nearest alternative.

A pair is only as trustworthy as the gap to what it could have been instead: a same-shape
sibling's target (a swap of two equal-shape tensors in one block), or another target of
nearly the same score. For every proposal this records, in its breakdown, ``runner_up`` (the
best raw score of such an alternative) and ``margin`` (the pair's raw score minus it; 1.0 when
there is no alternative), and ``name_margin``: the same gap measured in the names alone
(:data:`NAME_SIGNALS`), which says whether the names, rather than positions, prefer this pair
over that alternative. Scores here are the weighted mean of :data:`MARGIN_SIGNALS` with
the run's weights: the raw score the assignment stage compares
(:func:`weightmapper.engine.signals.score_matrix`).

The alternatives of a pair are the targets of the :data:`NEIGHBOURS` nearest pairs (in source
position) of the same source and target shapes, and symmetrically their sources: a block's
equal-shape tensors lie next to each other, so the window holds every swap that matters while
the work stays linear in the number of pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from weightmapper.engine.calibration import AMBIGUOUS_MARGIN
from weightmapper.engine.candidates import Proposal
from weightmapper.engine.collect import PairColumns
from weightmapper.engine.columns import columns, weighted_mean
from weightmapper.engine.context import under
from weightmapper.engine.signals import hierarchy_signal, name_signal, order_signal
from weightmapper.engine.state import MatchState

NEIGHBOURS = 4
"""Pairs on each side of a pair (in source position, same shapes) whose targets are tried."""
MARGIN_SIGNALS = ("shape", "name", "hierarchy", "order")
"""Signals a margin is measured in: all but ``structure``, which a stage sets from the
margin it saw. (Leaving ``order`` out too labelled 28% of the zoo's right pairs ambiguous
and caught fewer wrong ones on the held-out split.)"""
NAME_SIGNALS = ("name", "hierarchy")
"""Signals of a pair's names alone: a position (``order``, ``structure``) can be misleading
(keys stored sorted, two libraries registering same-shape siblings in opposite orders)."""
NO_ALTERNATIVE = 1.0
"""Margin of a pair that has no alternative of its shapes."""
WEAK_NAME = 0.6
"""``name`` signal below which two names share little: when the names of such a pair prefer
a same-shape alternative, only its position chose it."""


def is_ambiguous(breakdown: dict[str, float]) -> bool:
    """A pair's breakdown → True when a same-shape alternative is nearly as good, so the pair
    is labelled ``ambiguous``, never ``high`` (:func:`ambiguous_mask` of one pair)."""
    return bool(ambiguous_mask([breakdown])[0])


AMBIGUITY_INPUTS: dict[str, float] = {
    "block_shift": 0.0, "margin": NO_ALTERNATIVE, "runner_up": 0.0,
    "name_margin": NO_ALTERNATIVE, "order_known": 1.0, "name": 0.0,
}  # fmt: skip
"""Breakdown entries :func:`ambiguous_mask` reads, each with its value when absent."""


def ambiguous_mask(breakdowns: Sequence[Mapping[str, float]]) -> np.ndarray:
    """Pairs' breakdowns → bool array, True where a pair is ambiguous.

    Four ways: its numbered block was shifted against the target's
    (``block_shift``, :mod:`weightmapper.engine.block_shift`); its raw score leads the runner-up by less than
    :data:`~weightmapper.engine.calibration.AMBIGUOUS_MARGIN`; a side's keys were stored
    sorted (``order_known`` 0, so position says nothing) and the names do not prefer the
    pair over its alternative by that much either; or the names, sharing little
    (:data:`WEAK_NAME`), prefer the alternative by that much and only the position chose
    this pair (two libraries register same-shape siblings in different orders). A pair
    without a same-shape alternative (``runner_up`` 0) is ambiguous only by the first two.
    """
    get = columns(breakdowns, AMBIGUITY_INPUTS)
    named = get["name_margin"]
    by_names = ((get["order_known"] <= 0.0) & (named < AMBIGUOUS_MARGIN)) | (
        (named <= -AMBIGUOUS_MARGIN) & (get["name"] < WEAK_NAME)
    )
    return (
        (get["block_shift"] > 0.0)
        | (get["margin"] < AMBIGUOUS_MARGIN)
        | ((get["runner_up"] > 0.0) & by_names)
    )


def record_margins(
    st: MatchState,
    proposals: list[Proposal],
    pairs: PairColumns,
    placed: Mapping[str, str] | None = None,
) -> None:
    """Finished MatchState + its proposals and their :class:`PairColumns` (both from
    :func:`~weightmapper.engine.collect.collect_pairs`) (+ source key → the target prefix its
    siblings went to, for pairs that agree with it,
    :func:`~weightmapper.engine.context.record_context`) → each proposal's breakdown gains
    runner_up, margin and name_margin.

    An alternative outside the prefix a pair's siblings went to is no rival of that pair (a
    same-shape tensor of the block before). Buffers that follow their module's pair get the
    margin of that pair.
    """
    w = {k: v for k, v in st.weights.items() if k in MARGIN_SIGNALS and v}
    total = sum(w.values())
    cols = pairs.signals
    own = cols["shape"] if total <= 0 else weighted_mean(cols, w, total)
    best = np.full(len(proposals), -np.inf)
    best_named = np.full(len(proposals), -np.inf)
    rows, cols_t, first, second = _alternatives(st, pairs)
    if len(rows):
        gs, gt = st.s.group[rows], st.t.group[cols_t]
        # the signals of pair_signals, kept as arrays: one raw score per alternative in numpy
        # (a 100k-tensor checkpoint has 800k distinct alternative key pairs, each an
        # alternative of two pairs); the same float64 arithmetic
        sigs = {
            "name": name_signal(st, rows, cols_t, matrix=False, groups=(gs, gt)),
            "hierarchy": hierarchy_signal(st, gs, gt, matrix=False),
            "order": order_signal(st, gs, gt, matrix=False),
        }
        # the names' score depends on the alternative alone
        alt_named = sum(sigs[k] for k in NAME_SIGNALS) / len(NAME_SIGNALS)
        n = len(first)
        named_halves = (alt_named[:n], alt_named[n:])
        own_first, own_second = cols["shape"][first], cols["shape"][second]
        raw_first = _raw_halves(sigs, own_first, w, total)
        # an alternative takes the shape signal of the pair it is scored for; the two pairs
        # an alternative belongs to nearly always have equal ones, and then equal scores
        same = np.array_equal(own_first, own_second)
        raw_second = raw_first if same else _raw_halves(sigs, own_second, w, total)
        inside = _inside_context(st, proposals, placed) if placed else None
        for owner, raw in ((first, raw_first), (second, raw_second)):
            # each pair's better of the two alternatives it shares with a neighbour
            keep = inside(rows, cols_t, np.concatenate([owner, owner])) if inside else None
            np.maximum.at(best, owner, _better(raw, keep))
            np.maximum.at(best_named, owner, _better(named_halves, keep))
    found = np.isfinite(best)
    runner_up = np.where(found, best, 0.0)
    margin = np.where(found, own - best, NO_ALTERNATIVE)
    named = sum(cols[k] for k in NAME_SIGNALS) / len(NAME_SIGNALS)
    name_margin = np.where(np.isfinite(best_named), named - best_named, NO_ALTERNATIVE)
    followers = np.flatnonzero(~pairs.lead)
    if len(followers):
        # a buffer that follows its module's pair takes that pair's values; one whose
        # module's pair is no proposal has no alternative known
        lead_of = {proposals[n].source: n for n in np.flatnonzero(pairs.lead).tolist()}
        of = np.array([lead_of.get(proposals[n].follows, -1) for n in followers.tolist()])
        known = of >= 0
        runner_up[followers] = np.where(known, runner_up[of], 0.0)
        margin[followers] = np.where(known, margin[of], NO_ALTERNATIVE)
        name_margin[followers] = np.where(known, name_margin[of], NO_ALTERNATIVE)
    for p, r, m, n in zip(
        proposals, runner_up.tolist(), margin.tolist(), name_margin.tolist(), strict=True
    ):
        breakdown = p.breakdown
        breakdown["runner_up"] = r
        breakdown["margin"] = m
        breakdown["name_margin"] = n


def _alternatives(
    st: MatchState, pairs: PairColumns
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MatchState + the proposals as columns → (source rows, target columns) of every
    distinct alternative key pair (2n of them), and the numbers of the two proposals (n
    each) that alternatives ``i`` and ``i + n`` both belong to.

    For each pair that follows no other: its source onto each of the :data:`NEIGHBOURS`
    nearest same-shape pairs' targets (nearest in source position, ties in proposal order)
    and their sources onto its target. Two neighbours try the same two swaps, so each swap
    is an alternative of both: the first half of the alternatives is each neighbour pair's
    first source onto the second's target, the second half the reverse.
    """
    empty = np.zeros(0, np.int64)
    ns = np.flatnonzero(pairs.lead)
    if len(ns) < 2:
        return empty, empty, empty, empty
    src, tgt = pairs.source[ns], pairs.target[ns]
    # the pairs of one source shape and one target shape are each other's neighbours
    n_shapes = int(st.t.shape_code.max(initial=-1)) + 1
    bucket = st.s.shape_code[src] * n_shapes + st.t.shape_code[tgt]
    pos = st.s.group_pos[st.s.group[src]]
    order = np.lexsort((ns, pos, bucket))  # by bucket, then position, then proposal order
    ns, src, tgt, bucket = ns[order], src[order], tgt[order], bucket[order]
    # a and b = a + d: neighbours d apart
    near = [np.flatnonzero(bucket[:-d] == bucket[d:]) for d in range(1, NEIGHBOURS + 1)]
    a = np.concatenate(near)
    b = np.concatenate([found + d for d, found in enumerate(near, start=1)])
    return src[np.concatenate([a, b])], tgt[np.concatenate([b, a])], ns[a], ns[b]


def _raw_halves(
    sigs: dict[str, np.ndarray], own: np.ndarray, w: dict[str, float], total: float
) -> tuple[np.ndarray, np.ndarray]:
    """Alternatives' name, hierarchy and order (2n) + the shape signal of the pair each of
    alternatives ``i`` and ``i + n`` is scored for (n; equal shapes on both sides, so it is
    that pair's own) → their raw scores, first half and second half."""
    n = len(own)
    return tuple(  # type: ignore[return-value]
        _raw_many({**{k: v[half] for k, v in sigs.items()}, "shape": own}, w, total)
        for half in (slice(0, n), slice(n, 2 * n))
    )


def _better(halves: tuple[np.ndarray, np.ndarray], keep: np.ndarray | None) -> np.ndarray:
    """Values of alternatives ``i`` and ``i + n`` (two halves of n) + which of the 2n count
    (None: all) → the larger counted value of each two (-inf when neither counts)."""
    low, high = halves
    if keep is not None:
        low = np.where(keep[: len(low)], low, -np.inf)
        high = np.where(keep[len(low) :], high, -np.inf)
    return np.maximum(low, high)


def _inside_context(
    st: MatchState, proposals: list[Proposal], placed: Mapping[str, str]
) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """MatchState + proposals + source key → the prefix its siblings went to → a rule:
    alternatives (source keys, target keys, owning proposals) → False for those that put a
    source outside the prefix its siblings went to: the owner's source onto another target,
    or another source onto the owner's target. Only sources in ``placed`` are looked at."""
    owner_prefix = {n: placed[p.source] for n, p in enumerate(proposals) if p.source in placed}
    row_prefix = {st.s.index[k]: v for k, v in placed.items()}
    owners, moved_rows = list(owner_prefix), list(row_prefix)

    def keep(rows: np.ndarray, cols: np.ndarray, owner: np.ndarray) -> np.ndarray:
        out = np.ones(len(cols), bool)
        looked_at = np.isin(owner, owners) | np.isin(rows, moved_rows)
        for k in np.flatnonzero(looked_at).tolist():
            path = st.t.group_paths[int(st.t.group[cols[k]])]
            r = int(rows[k])
            prefix = row_prefix.get(r) if r in row_prefix else owner_prefix.get(int(owner[k]))
            out[k] = prefix is None or under(path, prefix)
        return out

    return keep


def _raw_many(sigs: dict[str, np.ndarray], w: dict[str, float], total: float) -> np.ndarray:
    """Signal arrays → the weighted mean of :data:`MARGIN_SIGNALS` at each position (the raw
    score the assignment stage compares; the shape signal alone when no weight is set)."""
    if total <= 0:
        return np.asarray(sigs["shape"], np.float64)
    return weighted_mean(sigs, w, total)
