"""Context agreement: where a tensor's siblings went says where it goes.

Some pairs are settled by evidence of their own: identical or canonically equal names, a
name template with its own shape signature, a shape no other tensor has. These are the
*anchors* (:func:`anchor_groups`). From them, every source module prefix learns where its
tensors went in the target: ``encoder.layers.encoder_layer_2`` ↔ ``blocks.3`` when the MLP
of that layer (a shape of its own) landed in ``blocks.3``; ``features.3.conv`` ↔
``blocks.1.1`` when its convolutions did. A tensor whose name and sorted position say little
(an attention projection of the same shape in every block, a norm beside a mapped conv)
then has a *context*: the target prefix its siblings went to.

For a source key, its siblings at a level are the anchors under that source prefix but
outside the key's own branch (its own module's tensors at the deepest level, the child
holding it above). Each branch beside it has an image, the deepest target prefix a clear
majority (:data:`MAJORITY`) of its anchors went to; the deepest level with any such branch
decides, and the target prefixes a clear majority of those images share form a chain from the
root down. The root says nothing, nor does the point where the images part into numbered
blocks (``blocks`` for layers that went to ``blocks.0``, ``blocks.1``, …) when it holds every
target key of the key's shape.

A pair (s, t) is judged at the deepest prefix of that chain that holds t or a key of its
shape no anchor took: it *agrees* (:data:`AGREE`) when t lies under it, *contradicts*
(:data:`CONTRADICT`) when it does not (a slot of its shape is open where its siblings went),
and has no evidence (:data:`UNKNOWN`) when no prefix qualifies. Pairs with equal names are
not judged (names settle them).
Three uses:

- the ``context`` stage (:func:`stage_context`, last in the cascade) re-pairs the non-anchor
  pairs whose context contradicts, each with a key of its shape under its expected prefix,
  by an optimal assignment per (shape, prefix), so a same-shape tensor follows its block (a
  pair there without context evidence yields its target; a key left over where a moved
  block opened up joins in);
- ``context`` in each pair's breakdown (:func:`record_context`), a feature of the
  calibration (:mod:`weightmapper.engine.calibration`);
- a note on the pair: ``siblings map into blocks.3`` where the context placed or lifted it,
  and ``…; check it`` where it contradicts (such a pair is never ``high``).

Cost: the anchors are sorted once by source path, so the anchors under a prefix are a range
found by bisection; each prefix computes its branches' images once and each (prefix, branch
left out) its chain once; the work is about N log N plus N times the depth of the module
tree.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import replace
from itertools import repeat
from operator import attrgetter, itemgetter, setitem

import numpy as np
from scipy.optimize import linear_sum_assignment

from weightmapper.engine.candidates import Proposal
from weightmapper.engine.collect import PairColumns
from weightmapper.engine.evidence import EXACT_NAME
from weightmapper.engine.groups import STRUCTURE_DP
from weightmapper.engine.signals import score_matrix, signal_matrices
from weightmapper.engine.state import MatchState
from weightmapper.result import MultiPair

AGREE, UNKNOWN, CONTRADICT = 1.0, 0.5, 0.0
"""Values of the ``context`` evidence."""
ANCHOR_STAGES = frozenset({"exact", "normalized", "template"})
"""Cascade stages whose pairs rest on names (equal, canonical, or one template with its own
shape signature) rather than on position or context."""
MAJORITY = 0.7
"""Share of a key's siblings a target prefix must hold to count as where they went."""
CONTEXT_STAGE = "context"
"""Stage name of the pairs the context placed."""

Bucket = tuple[int, ...]
_STAGE, _FOLLOWS = itemgetter(1), itemgetter(4)
"""A Record's stage name and the source key it follows (-1 for none)."""
_BREAKDOWN = attrgetter("breakdown")


def anchor_groups(st: MatchState, multi: Sequence[MultiPair] = ()) -> dict[int, int]:
    """MatchState (+ splits and merges) → source group → target group, for every group pair
    holding an anchor: a pair made by a stage of :data:`ANCHOR_STAGES`, or whose shape occurs
    once on each side, or a split or merge (each source onto the first target)."""
    out: dict[int, int] = {}
    for m in multi:
        gt = int(st.t.group[st.t.index[m.targets[0]]])
        for k in m.sources:
            out.setdefault(int(st.s.group[st.s.index[k]]), gt)
    n = len(st.rec)
    if not n:
        return out
    rows = np.fromiter(st.rec, np.int64, n)
    cols = st.s_match[rows]
    records = st.rec.values()
    lead = (np.fromiter(map(_FOLLOWS, records), np.int64, n) < 0) & (cols >= 0)
    named = np.fromiter(map(ANCHOR_STAGES.__contains__, map(_STAGE, records)), bool, n)
    n_src, n_tgt = st.bucket_counts
    for k in np.flatnonzero(lead & ~named).tolist():  # the few made by position or score
        i, j = int(rows[k]), int(cols[k])
        unique = n_src.get(st.s.bucket[i], 0) == 1 and n_tgt.get(st.t.bucket[j], 0) == 1
        named[k] = unique and st.rec[i][1] != CONTEXT_STAGE
    keep = lead & named
    # the first pair of a group wins
    gs, first = np.unique(st.s.group[rows[keep]], return_index=True)
    out.update(zip(gs.tolist(), st.t.group[cols[keep][first]].tolist(), strict=True))
    return out


class ContextIndex:
    """A MatchState's anchors, indexed to answer "where did this key's siblings go"."""

    def __init__(
        self, st: MatchState, anchors: dict[int, int] | None = None, taken: Sequence[str] = ()
    ) -> None:
        self.st = st
        self.anchors = anchor_groups(st) if anchors is None else anchors
        items = sorted((st.s.group_paths[g], st.t.group_paths[h]) for g, h in self.anchors.items())
        self._paths = [a for a, _ in items]
        self._targets = [tuple(b.split(".")) if b else () for _, b in items]
        self._held = set(self.anchors.values())
        """Target groups an anchor holds: never an open slot."""
        self._taken = {st.t.index[k] for k in taken}
        """Target keys a split or merge takes: never an open slot."""
        # shape bucket → sorted module paths of its target keys (all; the open ones)
        self._all: dict[Bucket, list[str]] = {}
        scorable = np.flatnonzero(st.t_scorable).tolist()
        for j in scorable:
            self._all.setdefault(st.t.bucket[j], []).append(st.t.group_paths[int(st.t.group[j])])
        for paths in self._all.values():
            paths.sort()
        self._open: dict[Bucket, list[str]] = {}
        self.reopen(scorable)
        self._chains: dict[tuple[str, str], tuple[tuple[str, ...], bool]] = {}
        self._group_chain: dict[int, tuple[tuple[str, ...], bool]] = {}
        self._images: dict[str, dict[str, tuple[str, ...]]] = {}

    def reopen(self, keys: list[int]) -> None:
        """Target keys → those no anchor, split or merge holds are the open slots from now on."""
        st = self.st
        self._open = {}
        for j in keys:
            if j in self._taken or int(st.t.group[j]) in self._held:
                continue
            self._open.setdefault(st.t.bucket[j], []).append(st.t.group_paths[int(st.t.group[j])])
        for paths in self._open.values():
            paths.sort()

    # --- the chain of prefixes a group's siblings went to -------------------------------------
    def chain(self, gs: int) -> tuple[tuple[str, ...], bool]:
        """Source group → (the target prefixes, root first, a clear majority of its siblings
        at the deepest level that has any went to, ``()`` when no level has siblings; whether
        those siblings parted into different numbered blocks below the last prefix)."""
        got = self._group_chain.get(gs)
        if got is not None:
            return got
        path = self.st.s.group_paths[gs]
        parts = path.split(".") if path else []
        out: tuple[tuple[str, ...], bool] = ((), False)
        for depth in range(len(parts), -1, -1):
            level = ".".join(parts[:depth])
            # at its own module, the key's own tensors (its group) are left out; above, the
            # branch holding it
            skip = "\0" if depth == len(parts) else parts[depth]
            key = (level, skip)
            if key not in self._chains:
                images = [im for child, im in self._level_images(level).items() if child != skip]
                chain = _majority_chain(images) if images else ()
                last = tuple(chain[-1].split(".")) if chain and chain[-1] else ()
                nexts = {
                    im[len(last)]
                    for im in images
                    if len(im) > len(last) and im[: len(last)] == last
                }
                # the siblings parted into numbered blocks (``blocks.0``, ``blocks.1``, …)
                spread = len(nexts) > 1 and all(n[-1:].isdigit() for n in nexts)
                self._chains[key] = (chain, spread)
            out = self._chains[key]
            if out[0]:
                break
        self._group_chain[gs] = out
        return out

    def _level_images(self, level: str) -> dict[str, tuple[str, ...]]:
        """Source prefix → the image of every branch under it that holds anchors (child name,
        or ``"\0"`` for the prefix's own tensors): the deepest target prefix a clear majority
        of that branch's anchors went to (computed once per prefix)."""
        got = self._images.get(level)
        if got is not None:
            return got
        first = len(level) + 1 if level else 0
        branches: dict[str, list[tuple[str, ...]]] = {}
        for k in _range(self._paths, level, below=True):
            child = self._paths[k][first:].partition(".")[0]
            branches.setdefault(child, []).append(self._targets[k])
        at = _range(self._paths, level, below=False)
        if len(at):
            branches["\0"] = [self._targets[k] for k in at]
        got = {}
        for child, targets in branches.items():
            deepest = _majority_chain(targets)[-1]
            got[child] = tuple(deepest.split(".")) if deepest else ()
        self._images[level] = got
        return got

    # --- judging a pair ---------------------------------------------------------------------
    def expected(self, gs: int, bucket: Bucket) -> str:
        """Source group + shape bucket → the deepest prefix its siblings went to that holds a
        key of that shape no anchor took; "" when none does (no evidence)."""
        for prefix in self._prefixes(gs, bucket):
            if _count(self._open.get(bucket, []), prefix):
                return prefix
        return ""

    def judge(self, gs: int, bucket: Bucket, target_path: str) -> tuple[float, str]:
        """Source group + shape bucket + the target's module path → (:data:`AGREE`,
        :data:`UNKNOWN` or :data:`CONTRADICT`, the prefix the siblings went to)."""
        for prefix in self._prefixes(gs, bucket):
            if under(target_path, prefix):
                return AGREE, prefix
            if _count(self._open.get(bucket, []), prefix):
                return CONTRADICT, prefix
        return UNKNOWN, ""

    def _prefixes(self, gs: int, bucket: Bucket) -> list[str]:
        """Source group + shape bucket → the prefixes its siblings went to that say something,
        deepest first. The root says nothing; nor does the point where the siblings part into
        numbered blocks (``blocks`` for layers that went to ``blocks.0``, ``blocks.1``, …) when
        it holds every target key of the shape (a norm found in every block)."""
        chain, spread = self.chain(gs)
        out = [p for p in reversed(chain) if p]
        if spread and out:
            paths = self._all.get(bucket, [])
            if _count(paths, out[0]) >= len(paths):
                return []
        return out


def verdicts(index: ContextIndex, pairs: list[tuple[int, int]]) -> list[tuple[float, str]]:
    """Context index + (source key, target key) pairs to judge → each one's verdict and the
    prefix its siblings went to.

    Two passes: a slot taken by a pair that is no anchor counts as open at first; then only
    slots left unmatched, or taken by a pair that did not agree with its own context, stay
    open (a same-shape key whose pair agrees with its block is not a place to go)."""
    st = index.st

    def judge(i: int, j: int) -> tuple[float, str]:
        gs, gt = int(st.s.group[i]), int(st.t.group[j])
        return index.judge(gs, st.s.bucket[i], st.t.group_paths[gt])

    first = [judge(i, j) for i, j in pairs]
    if all(v != CONTRADICT for v, _p in first):
        return first
    against = {j for (_i, j), (v, _p) in zip(pairs, first, strict=True) if v != AGREE}
    index.reopen(
        [j for j in np.flatnonzero(st.t_scorable).tolist() if st.t_match[j] < 0 or j in against]
    )
    return [judge(i, j) for i, j in pairs]


def stage_context(st: MatchState) -> None:
    """MatchState → its non-anchor pairs whose context contradicts re-paired with keys of their
    shape under the prefix their siblings went to (stage ``context``).

    The contradicting pairs are undone (with the buffers following them), then per (shape,
    expected prefix), deepest prefix first, the freed sources and the open target keys under
    that prefix are paired by an optimal assignment on the usual scores. A source that finds
    no such key keeps its first pair.
    """
    anchors = anchor_groups(st)
    paired = st.s.group[np.fromiter(st.rec, np.int64, len(st.rec))]
    if not anchors or np.isin(paired, np.fromiter(anchors, np.int64, len(anchors))).all():
        return  # nothing to judge it by, or nothing to judge
    index = ContextIndex(st, anchors)
    moved: dict[int, tuple[int, str]] = {}  # source key → (its old target, expected prefix)
    loose: set[int] = set()  # target keys of non-anchor pairs the context says nothing about
    judged = [
        (i, int(st.s_match[i]))
        for i, r in st.rec.items()
        if r[4] < 0 and int(st.s.group[i]) not in index.anchors
    ]
    for (i, j), (verdict, _prefix) in zip(judged, verdicts(index, judged), strict=True):
        if verdict == CONTRADICT:
            moved[i] = (j, index.expected(int(st.s.group[i]), st.s.bucket[i]))
        elif verdict == UNKNOWN:
            loose.add(j)
    if not moved:
        return
    old = {i: st.rec[i] for i in moved}
    followers: dict[int, list[int]] = {}
    for k, r in st.rec.items():
        if r[4] >= 0:
            followers.setdefault(r[4], []).append(k)
    for i in moved:
        for k in (i, *followers.get(i, ())):
            _unpair(st, k)
    # a slot is open, or held by a pair without context evidence (which yields to one with)
    slots: dict[tuple[str, Bucket], list[int]] = {}
    for j in range(len(st.t)):
        if st.t_scorable[j] and (st.t_match[j] < 0 or j in loose):
            for prefix in prefixes(st.t.group_paths[int(st.t.group[j])]):
                slots.setdefault((prefix, st.t.bucket[j]), []).append(j)
    wanted: dict[tuple[str, Bucket], list[int]] = {}
    for i, (_j, prefix) in moved.items():
        wanted.setdefault((prefix, st.s.bucket[i]), []).append(i)
    for i in np.flatnonzero((st.s_match < 0) & st.s_scorable).tolist():
        if i not in moved:  # left over where a moved neighbour's block opened up
            prefix = index.expected(int(st.s.group[i]), st.s.bucket[i])
            if prefix:
                wanted.setdefault((prefix, st.s.bucket[i]), []).append(i)
    for key in sorted(wanted, key=lambda k: -k[0].count(".")):  # deepest prefix first
        rows = wanted[key]
        cols = [j for j in slots.get(key, []) if st.t_match[j] < 0 or j in loose]
        if cols:
            _assign(st, np.array(rows, np.int64), np.array(cols, np.int64), followers, loose)
    for i, (j, _prefix) in moved.items():
        if st.s_match[i] < 0 and st.t_match[j] < 0:
            st.pair(i, j, *_restore(old[i]))  # nothing open where it belongs: keep the first


def _assign(
    st: MatchState,
    rows: np.ndarray,
    cols: np.ndarray,
    followers: dict[int, list[int]],
    loose: set[int],
) -> None:
    """Source keys × target slots of one (prefix, shape) → optimal pairs, stage ``context``;
    a slot's holder without context evidence (``loose``) is unpaired first."""
    sig, blocked = signal_matrices(st, rows, cols)
    m = score_matrix(st, sig)
    r, c = linear_sum_assignment(np.where(blocked, -1.0, m), maximize=True)
    for a, b in zip(r.tolist(), c.tolist(), strict=True):
        if blocked[a, b] or m[a, b] < st.settings.min_proposal:
            continue
        i, j = int(rows[a]), int(cols[b])
        rel = st.compat(i, j)
        if rel is None:
            continue
        holder = int(st.t_match[j])
        if holder >= 0:
            loose.discard(j)
            for k in (holder, *followers.get(holder, ())):
                _unpair(st, k)
        st.pair(i, j, rel, CONTEXT_STAGE, False, STRUCTURE_DP)


def _unpair(st: MatchState, i: int) -> None:
    """Undo source key i's pair."""
    j = int(st.s_match[i])
    st.s_match[i] = -1
    if j >= 0:
        st.t_match[j] = -1
    st.rec.pop(i, None)


def _restore(rec: tuple) -> tuple:  # type: ignore[type-arg]
    rel, stage, group, structure, _follows = rec
    return rel, stage, group, structure


def record_context(
    st: MatchState,
    proposals: list[Proposal],
    columns: PairColumns,
    multi: Sequence[MultiPair] = (),
) -> dict[str, str]:
    """Finished MatchState + its proposals + their :class:`PairColumns` + splits and merges →
    ``context`` in each breakdown (buffers take their module pair's), ``siblings map into P``
    noted where the context placed the pair, is the only evidence beside its shape, or
    contradicts it (then never ``high``); returns source key → the prefix its siblings went
    to, for the pairs that agree with it and are no anchors (their same-shape rivals
    elsewhere are none, :mod:`.margins`)."""
    # Every pair starts with no evidence; only lead pairs whose names differ are judged (equal
    # names need no context), and only when anchors exist, so the anchors are found only then.
    deque(map(setitem, map(_BREAKDOWN, proposals), repeat("context"), repeat(UNKNOWN)), 0)
    open_ = np.flatnonzero(columns.lead & ~(columns.signals["name"] >= EXACT_NAME))
    anchors = anchor_groups(st, multi) if len(open_) else {}
    if not anchors:
        return {}
    judged = open_.tolist()
    lead: dict[str, float] = {}  # the judged pairs' verdicts; every other pair's is UNKNOWN
    placed: dict[str, str] = {}
    index = ContextIndex(st, anchors, [k for m in multi for k in m.targets])
    rows = columns.source[open_].tolist()
    pairs = list(zip(rows, columns.target[open_].tolist(), strict=True))
    for n, i, (verdict, prefix) in zip(judged, rows, verdicts(index, pairs), strict=True):
        p = proposals[n]
        p.breakdown["context"] = lead[p.source] = verdict
        if verdict == AGREE and int(st.s.group[i]) not in anchors:
            placed[p.source] = prefix
        proposals[n] = _noted(p, verdict, prefix)
    for n in np.flatnonzero(~columns.lead).tolist():  # buffers take their module pair's
        p = proposals[n]
        p.breakdown["context"] = lead.get(p.follows, UNKNOWN)
    return placed


def _noted(p: Proposal, verdict: float, prefix: str) -> Proposal:
    """Proposal + its context → the same with the context noted where it matters."""
    if verdict == CONTRADICT:
        note = f"siblings map into {prefix}, not here; check it"
        confidence = "low" if p.confidence == "high" else p.confidence
    elif verdict == AGREE and (p.stage == CONTEXT_STAGE or _names_say_little(p.breakdown)):
        note, confidence = f"siblings map into {prefix}", p.confidence
    else:
        return p
    return replace(p, note=f"{p.note}; {note}" if p.note else note, confidence=confidence)


def _names_say_little(bd: dict[str, float]) -> bool:
    return max(bd.get("name", 0.0), bd.get("hierarchy", 0.0)) < 0.5


# --- prefixes -------------------------------------------------------------------------------
def prefixes(path: str) -> list[str]:
    """Module path → its prefixes, root ("") first, the path itself last."""
    parts = path.split(".") if path else []
    return [".".join(parts[:k]) for k in range(len(parts) + 1)]


def under(path: str, prefix: str) -> bool:
    """Module path + prefix → True when the path is the prefix or lies below it."""
    return not prefix or path == prefix or path.startswith(prefix + ".")


def _range(paths: list[str], prefix: str, *, below: bool) -> range:
    """Sorted paths + prefix → index range of the paths strictly below it (``below``) or equal
    to it."""
    if not below:
        return range(bisect_left(paths, prefix), bisect_right(paths, prefix))
    if not prefix:
        lo = bisect_right(paths, "")
        return range(lo, len(paths))
    return range(bisect_left(paths, prefix + "."), bisect_left(paths, prefix + "/"))


def _count(paths: list[str], prefix: str) -> int:
    """Sorted paths + prefix → how many lie at or below it."""
    return len(_range(paths, prefix, below=False)) + len(_range(paths, prefix, below=True))


def _majority_chain(targets: list[tuple[str, ...]]) -> tuple[str, ...]:
    """Target module paths (as parts) of a key's siblings → the prefixes, root first, that hold
    at least :data:`MAJORITY` of them (one chain: more than half can only go one way)."""
    first = targets[0] if targets else ()
    if targets.count(first) == len(targets):  # one place (often one sibling): all of its path
        return ("", *(".".join(first[:depth]) for depth in range(1, len(first) + 1)))
    need = MAJORITY * len(targets)
    chain = [""]
    cur = targets
    depth = 0
    while True:
        parts = [t[depth] for t in cur if len(t) > depth]
        if not parts:
            break
        part, count = parts[0], parts.count(parts[0])
        if count < len(parts):  # siblings part ways here: the most common part (first of ties)
            part, count = Counter(parts).most_common(1)[0]
        if count < need:
            break
        if count < len(cur):
            cur = [t for t in cur if len(t) > depth and t[depth] == part]
        depth += 1
        chain.append(".".join(cur[0][:depth]))
    return tuple(chain)
