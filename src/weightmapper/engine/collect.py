"""Reading a finished MatchState out: proposals with their breakdowns, a note (best
alternative and reason) for every key left over, and the tied duplicates."""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, is_, methodcaller

import numpy as np

from weightmapper.engine.candidates import KeyNote, Proposal, proposals_of
from weightmapper.engine.primitives import by_bucket, nearest
from weightmapper.engine.side import Side
from weightmapper.engine.signals import (
    pair_signals,
    score_matrix,
    signal_matrices,
    update_anchors,
    update_coherence,
)
from weightmapper.engine.state import MatchState
from weightmapper.result import UnmatchedReason
from weightmapper.transforms import refine_by_param_names

NOTE_MAX_CANDIDATES = 4096
"""Most candidates scored for one leftover key's note (the nearest in position)."""
_NOTE_CHUNK = 256


@dataclass(frozen=True)
class PairColumns:
    """The proposals :func:`collect_pairs` makes, as arrays aligned with them (one entry per
    proposal, in their order), for the stages that compute on every pair at once."""

    source: np.ndarray
    """Source key number of each pair."""
    target: np.ndarray
    """Target key number of each pair."""
    lead: np.ndarray
    """True for a pair that follows no other (not a buffer following its module's pair)."""
    signals: dict[str, np.ndarray]
    """``name``, ``hierarchy``, ``order`` and ``shape`` of each pair (float64): the values
    its breakdown holds."""


def collect_pairs(
    st: MatchState,
) -> tuple[list[Proposal], dict[str, dict[str, str]], PairColumns]:
    """MatchState → (proposals with breakdowns, tied keys: side → unmatched duplicate → its
    stand-in, the proposals as :class:`PairColumns`); the anchors and coherence the signals
    read are brought up to date first."""
    update_anchors(st)
    update_coherence(st)
    src_idx = np.array(sorted(st.rec), dtype=np.int64)
    tgt_idx = st.s_match[src_idx] if len(src_idx) else np.zeros(0, np.int64)
    if len(src_idx):
        signals = pair_signals(st, src_idx, tgt_idx)
    else:
        signals = {k: np.zeros(0, np.float64) for k in ("name", "hierarchy", "order")}
    s, t = st.s, st.t
    src, tgt = src_idx.tolist(), tgt_idx.tolist()
    n = len(src)
    # each field of the proposals as one list, in one pass each rather than per pair
    records = list(map(st.rec.__getitem__, src))
    rels, stages, groups, structures, follows = (
        tuple(zip(*records, strict=True)) if records else ((),) * 5
    )
    shape = list(map(_SCORE, rels))
    breakdowns = [
        {"name": a, "hierarchy": b, "order": c, "structure": d, "shape": e}
        for a, b, c, d, e in zip(
            signals["name"].tolist(), signals["hierarchy"].tolist(),
            signals["order"].tolist(), structures, shape, strict=True,
        )
    ]  # fmt: skip
    sources = list(map(s.keys.__getitem__, src))
    targets = list(map(t.keys.__getitem__, tgt))
    s_shapes = list(map(s.shape.__getitem__, src))
    t_shapes = list(map(t.shape.__getitem__, tgt))
    transforms = list(map(_TRANSFORM, rels))
    confidences = list(map(_CONFIDENCE, rels))
    for k in _kernels(sources, targets):
        if len(s_shapes[k]) == 2:
            # Square matrices: parameter names (a Flax/Keras ``kernel`` is (in, out)) can
            # settle a layout that shapes cannot.
            i, j = src[k], tgt[k]
            transforms[k], confidences[k] = refine_by_param_names(
                transforms[k], confidences[k], sources[k], targets[k], s_shapes[k], t_shapes[k],
                source_type=s.group_type[s.group[i]], target_type=t.group_type[t.group[j]],
            )  # fmt: skip
    leads = [s.keys[f] if f >= 0 else None for f in follows]
    proposals = proposals_of(
        zip(
            sources, targets, breakdowns, transforms, stages, groups, confidences,
            s_shapes, t_shapes, leads, repeat("", n), strict=True,
        )
    )  # fmt: skip
    signals["shape"] = np.array(shape, np.float64)
    columns = PairColumns(
        src_idx, tgt_idx, np.fromiter(map(_IS_NONE, leads, repeat(None)), bool, n), signals
    )
    tied = {"source": _tied(st.s, st.s_match), "target": _tied(st.t, st.t_match)}
    return proposals, tied, columns


def _kernels(sources: list[str], targets: list[str]) -> list[int]:
    """Pairs' source and target keys → the numbers of the pairs one of whose keys ends in
    ``kernel``. Most checkpoints have no such key: one search through all the keys at once
    says so, before any key is looked at alone."""
    if "kernel" not in "\n".join(sources) and "kernel" not in "\n".join(targets):
        return []
    n = len(sources)
    ends = np.fromiter(map(_KERNEL, sources), bool, n) | np.fromiter(map(_KERNEL, targets), bool, n)
    return np.flatnonzero(ends).tolist()


_SCORE = attrgetter("score")
_TRANSFORM = attrgetter("transform")
_CONFIDENCE = attrgetter("confidence")
_KERNEL = methodcaller("endswith", "kernel")
_IS_NONE = is_


def collect_notes(
    st: MatchState,
    tied: dict[str, dict[str, str]],
    *,
    skip: Set[tuple[str, str]] = frozenset(),
    score: bool = True,
) -> list[KeyNote]:
    """MatchState + tied keys (:func:`collect_pairs`) → a note for every unmatched key.

    ``skip``: (side, key) pairs that get no note (keys a split or merge proposal uses).
    ``score=False`` leaves the keys that need scoring unscored: their notes carry
    :data:`UNSCORED` as detail and no best candidate, which is all that split/merge
    proposals read; the scored notes of the keys still unused are made afterwards, so the
    candidates of a leftover are compared only when its note is kept.
    """
    return _notes(st, "source", tied["source"], skip, score) + _notes(
        st, "target", tied["target"], skip, score
    )


UNSCORED = "not scored yet"
"""Detail of a note :func:`collect_notes` left unscored (``score=False``)."""


def _tied(side: Side, match: np.ndarray) -> dict[str, str]:
    """Side + its matches → unmatched tied duplicate → the member of its tie that stands for it."""
    out: dict[str, str] = {}
    for tie in side.inv.tied:
        members = [k for k in tie if k in side.index]
        matched = [k for k in members if match[side.index[k]] >= 0]
        primary = matched[0] if matched else (members[0] if members else None)
        for k in members:
            if k != primary and match[side.index[k]] < 0:
                out[k] = primary
    return out


def _notes(
    st: MatchState, which: str, tied: dict[str, str], skip: Set[tuple[str, str]], score: bool
) -> list[KeyNote]:
    """``source``/``target`` → a KeyNote for each of its unmatched keys (tied and skipped
    ones aside); see :func:`collect_notes`."""
    me, my_match, my_scorable = st.side(which)
    other, other_match, _ = st.side(_flip(which))
    open_keys = [
        k for k in np.flatnonzero(np.asarray(my_match) < 0).tolist() if me.keys[k] not in tied
    ]
    notes: list[KeyNote] = []
    if not open_keys:
        return notes  # every key matched or tied: nothing to note, no candidates to gather
    other_by = by_bucket(other.bucket, range(len(other)))
    pending: dict[tuple, list[int]] = {}
    for k in open_keys:
        name, shape = me.keys[k], me.shape[k]
        if my_scorable[k] and len(other) and me.bucket[k] in other_by:
            # Skipped keys stay here: the chunks (and so the candidates nearest to each
            # chunk) are the same whichever notes are kept.
            pending.setdefault(me.bucket[k], []).append(k)
        elif (which, name) in skip:
            continue
        elif not my_scorable[k]:
            notes.append(
                KeyNote(name, which, shape, UnmatchedReason.BUFFER_EXCLUDED,
                        "buffer without a same-named, same-shaped buffer in a matched "
                        "module (buffer_matching_mode='exclude')")
            )  # fmt: skip
        elif not len(other):
            notes.append(
                KeyNote(name, which, shape, UnmatchedReason.NO_CANDIDATES,
                        f"the {_flip(which)} has no tensors")
            )  # fmt: skip
        else:
            notes.append(
                KeyNote(name, which, shape, UnmatchedReason.NO_SHAPE_PARTNER,
                        f"no {_flip(which)} tensor has shape {list(shape)} or a transposed "
                        "or reshaped form of it")
            )  # fmt: skip
    if not score:
        notes += [
            KeyNote(me.keys[k], which, me.shape[k], UnmatchedReason.BELOW_THRESHOLD, UNSCORED)
            for keys in pending.values()
            for k in keys
            if (which, me.keys[k]) not in skip
        ]
        return notes
    for bucket, keys in pending.items():
        cands = np.array(other_by[bucket])
        for start in range(0, len(keys), _NOTE_CHUNK):
            chunk = np.array(keys[start : start + _NOTE_CHUNK])
            cols = nearest(me, other, chunk, cands, NOTE_MAX_CANDIDATES)
            rows = np.array([k for k in chunk.tolist() if (which, me.keys[k]) not in skip])
            if not len(rows):
                continue
            # Signals are always source × target: a target key's note reads them transposed.
            if which == "source":
                sig, blocked = signal_matrices(st, rows, cols)
            else:
                sig_t, blocked_t = signal_matrices(st, cols, rows)
                sig = {k: v.T for k, v in sig_t.items()}
                blocked = blocked_t.T
            M = score_matrix(st, sig)
            for r, k in enumerate(rows):
                notes.append(_note_for(st, which, int(k), cols, sig, blocked, M, r, other_match))
    return notes


def _note_for(
    st: MatchState, which: str, k: int, cols: np.ndarray, sig: dict[str, np.ndarray],
    blocked: np.ndarray, M: np.ndarray, r: int, other_match: np.ndarray,
) -> KeyNote:  # fmt: skip
    """One leftover key + its candidates' signals → its KeyNote (best candidate and reason)."""
    me, other = (st.s, st.t) if which == "source" else (st.t, st.s)
    name, shape = me.keys[k], me.shape[k]
    allowed = ~blocked[r]
    if not allowed.any():
        best = int(np.argmax(sig["name"][r]))
        return KeyNote(
            name, which, shape, UnmatchedReason.INCOMPATIBLE,
            f"every same-shaped {_flip(which)} tensor is of an incompatible kind (module "
            f"type, role or incompatible_pairs), e.g. {other.keys[cols[best]]}",
            other.keys[cols[best]],
        )  # fmt: skip
    scores = np.where(allowed, M[r], -np.inf)
    c = int(np.argmax(scores))
    partner = int(cols[c])
    bd = {key: round(float(v[r, c]), 6) for key, v in sig.items()}
    bd["structure"] = 0.0
    taken = int(other_match[partner])
    if taken >= 0:
        taker = me.keys[taken]
        return KeyNote(
            name, which, shape, UnmatchedReason.LOST_TO_BETTER,
            f"its best candidate {other.keys[partner]} went to {taker}",
            other.keys[partner], bd, taker,
        )  # fmt: skip
    return KeyNote(
        name, which, shape, UnmatchedReason.BELOW_THRESHOLD,
        f"best candidate {other.keys[partner]} scored too low to propose",
        other.keys[partner], bd,
    )  # fmt: skip


def _flip(which: str) -> str:
    return "target" if which == "source" else "source"
