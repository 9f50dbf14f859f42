"""Evidence beyond the signals: role agreement and shape uniqueness of each proposal.

The calibration (:mod:`weightmapper.engine.calibration`) turns a pair's evidence into the
probability that it is right. The signals (:mod:`weightmapper.engine.signals`) say how alike
two names, places and shapes are; two more facts separate right pairs from wrong ones and
are recorded here, in each proposal's breakdown:

``roles``   1 when both sides know the tensor's role (dataflow or a naming convention) and
            the roles agree, 0.5 when a side does not know it, 0 for a *cross-role* pair:
            tensors of different kinds (a head onto a pooler, an MLP tensor onto an attention
            one, an encoder tensor onto a decoder one) that the cascade still allowed because
            no rule excludes them outright. Where a side has no role for a key, its kind and
            stack are read from its module path (:data:`KIND_WORDS`, :data:`STACK_WORDS`);
``unique``  1 / (most keys of the pair's shape on either side): 1 when the shape is unique
            on both sides, so nothing else could have taken its place;
``index``   agreement of the two keys' layer indices (1 equal, 0.5 when a side has none,
            less for different ones): a pair shifted by an inserted block has equal names
            but other indices. Where the numbers of the two sides' names correspond by
            learned offsets (``block2-1`` ↔ ``b2``, ``denselayer3.norm2`` ↔ ``block3_1_bn``,
            ``f.a`` ↔ ``conv1``; :mod:`weightmapper.engine.index_map`), agreement with them;
``role_unique``  1 when both tensors play a role a network has once (its head, final norm,
            an embedding, the relative-position bias) and each is the only one of that role
            whose shape fits the other (:mod:`weightmapper.engine.unique_roles`), 0 when both
            play such roles but not so; absent when a side plays none;
``order_known``  1 when both sides' module order is real (registration or execution order),
            0 when a side's keys carried no order of their own (a ``.safetensors`` file
            stores them sorted) and its order is the names' natural sort: the ``order``
            signal then says little.

A cross-role pair also says so in its note, and it is never labelled ``high`` unless the
names agree exactly: a role mismatch needs strong evidence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import replace
from operator import attrgetter

import numpy as np

from weightmapper.engine.candidates import Proposal
from weightmapper.engine.collect import PairColumns
from weightmapper.engine.columns import distinct_pairs
from weightmapper.engine.index_map import index_agreement
from weightmapper.engine.path_fold import fold_paths, group_words
from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState
from weightmapper.engine.unique_roles import record_unique_roles
from weightmapper.inventory import Inventory
from weightmapper.roles import EQUIVALENT, SideRoles, family

ROLE_AGREE, ROLE_UNKNOWN, ROLE_CROSS = 1.0, 0.5, 0.0
"""Values of the ``roles`` evidence."""
EXACT_NAME = 0.999
"""``name`` signal at or above which two names count as the same."""
KIND_WORDS: dict[str, str] = {
    **dict.fromkeys(("attn", "attention", "self_attn", "self_attention", "selfattention"), "attn"),
    **dict.fromkeys(("mlp", "ffn", "feed_forward", "feedforward", "intermediate"), "mlp"),
    **dict.fromkeys(("pooler",), "pooler"),
    **dict.fromkeys(("lm_head", "classifier", "head"), "head"),
}
"""Module path component → the kind of tensor under it, for keys without a role."""
STACK_WORDS: dict[str, str] = {"encoder": "encoder", "decoder": "decoder"}
"""Module path component (not the module's own name) → its stack, for keys without one."""
_CONV_ROLES = ("stem.", "block.", "downsample.", "head.conv", "head.norm", "embed.patch")
"""Roles of convolutional stages: libraries differ in where a block begins (a downsample
at the end of one stage or the start of the next) and where the head starts, so these never
count as cross-role (as in :func:`weightmapper.roles.roles_conflict`)."""
_CROSS_STACKS = frozenset({"encoder", "decoder"})
"""Stacks a tensor never moves between; a ViT's ``encoder`` is its ``vision`` stack."""


def record_evidence(
    st: MatchState, proposals: list[Proposal], columns: PairColumns
) -> list[Proposal]:
    """Finished MatchState + its proposals + their :class:`PairColumns` (the proposals keep
    the order :func:`~.collect.collect_pairs` gave them: its key numbers are theirs) → the
    proposals with ``roles`` and ``unique`` in their breakdowns; cross-role pairs noted (and
    not ``high`` unless their names agree)."""
    n_src, n_tgt = st.bucket_counts
    order_known = float(not (name_sorted(st.s.inv) or name_sorted(st.t.inv)))
    rows, cols = columns.source, columns.target
    # one value per distinct pair of index keys, not one call per pair
    gs, gt = st.s.group[rows], st.t.group[cols]
    plain = st.s_index.similarity(st.t_index, gs, gt)
    index = index_agreement(st, gs, gt, plain, matrix=False).tolist()
    # what role_agreement reads of each key, then one verdict per distinct pair of those
    s_code, s_labels = side_role_labels(st.s, st.roles[0])
    t_code, t_labels = side_role_labels(st.t, st.roles[1])
    ka, kb, back = distinct_pairs(s_code[rows], t_code[cols], len(t_labels))
    verdicts = [
        _agreement(*s_labels[a], *t_labels[b])
        for a, b in zip(ka.tolist(), kb.tolist(), strict=True)
    ]
    agree = np.array([v[0] for v in verdicts], np.float64)[back]
    # how many keys share each pair's shape, on either side
    crowd = np.maximum(_crowd(n_src, st.s, rows), _crowd(n_tgt, st.t, cols))
    unique = 1.0 / np.maximum(crowd, 1)
    for bd, r, u, i in zip(
        map(_BREAKDOWN, proposals), agree.tolist(), unique.tolist(), index, strict=True
    ):
        bd["roles"] = r
        bd["unique"] = u
        bd["order_known"] = order_known
        bd["index"] = i
    out = list(proposals)
    for n in np.flatnonzero(agree == ROLE_CROSS).tolist():
        p = proposals[n]
        note = f"cross-role pair: {verdicts[back[n]][1]}; check it"
        confidence = p.confidence
        if confidence == "high" and p.breakdown.get("name", 0.0) < EXACT_NAME:
            confidence = "low"
        out[n] = replace(p, note=f"{p.note}; {note}" if p.note else note, confidence=confidence)
    record_unique_roles(st, out, gs, gt)
    return out


_BREAKDOWN = attrgetter("breakdown")


def _crowd(counts: Counter[tuple[int, ...]], side: Side, rows: np.ndarray) -> np.ndarray:
    """Keys per shape bucket of one side + the side + key numbers → how many keys share each
    one's bucket, looked up once per distinct shape (a key's bucket follows from its shape)."""
    code = side.shape_code
    some_key = np.zeros(int(code.max(initial=-1)) + 1, np.int64)
    some_key[code] = np.arange(len(code))  # any key of a shape: they share its bucket
    per_shape = [counts[side.bucket[k]] for k in some_key.tolist()]
    return np.array(per_shape, np.int64)[code[rows]]


def key_numbers(side: Side, keys: Iterable[str], n: int) -> np.ndarray:
    """Side + n of its keys → their key numbers (int64)."""
    return np.fromiter(map(side.index.__getitem__, keys), np.int64, n)


RoleLabels = tuple[str, str | None, str]
"""What :func:`role_agreement` reads of one key: (its stack, from its roles or else its
module path; its role or None; the kind its module path names, or "")."""

_PathWords = tuple[str, str, RoleLabels]
"""What a module path says of the keys under it: (the innermost stack word of the path, its
innermost kind word, the :data:`RoleLabels` of a key under it that has no roles)."""


def _words_step(parent: _PathWords, _path: str, own: str) -> _PathWords:
    """The parent path's words + the path's own component → the path's words: a word of its
    own wins over the parent's (the innermost counts); the stack excludes the module's own
    name (BERT's MLM head calls a layer ``decoder``)."""
    word = own.lower()
    stack = STACK_WORDS.get(word) or parent[0]
    kind = KIND_WORDS.get(word) or parent[1]
    return stack, kind, (parent[0], None, kind)


_ROOT_WORDS: _PathWords = ("", "", ("", None, ""))


def side_role_labels(side: Side, roles: SideRoles) -> tuple[np.ndarray, list[RoleLabels]]:
    """Side + its roles → (code per key, distinct :data:`RoleLabels`). Module words are read
    once per distinct module path (and prefix); only keys with a role or a stack of their
    own are looked at one by one."""
    seen: dict[RoleLabels, int] = {}
    group, words = group_words(side, _words_step, _ROOT_WORDS, (*KIND_WORDS, *STACK_WORDS))
    word_code = np.fromiter((seen.setdefault(w[2], len(seen)) for w in words), np.int64)
    codes = word_code[group[side.group]]
    stacks, named = roles.stacks, roles.roles
    own = [key for key in {**stacks, **named} if key in side.index]
    at = key_numbers(side, own, len(own))
    own_words = map(words.__getitem__, group[side.group[at]].tolist())
    codes[at] = [
        seen.setdefault((stacks.get(key) or w[2][0], named.get(key), w[1]), len(seen))
        for key, w in zip(own, own_words, strict=True)
    ]
    return codes, list(seen)


def name_sorted(inv: Inventory) -> bool:
    """Inventory → True when its keys carried no order of their own (stored sorted or
    shuffled, :attr:`Inventory.sorted_keys`) and nothing traced replaced it."""
    return inv.sorted_keys and not inv.traced


def role_agreement(src_key: str, tgt_key: str, src: SideRoles, tgt: SideRoles) -> tuple[float, str]:
    """Two keys + both sides' roles → (:data:`ROLE_AGREE`, :data:`ROLE_UNKNOWN` or
    :data:`ROLE_CROSS`, what differs for a cross-role pair)."""
    return _agreement(*_labels_of(src_key, src), *_labels_of(tgt_key, tgt))


def _labels_of(key: str, roles: SideRoles) -> RoleLabels:
    """One key + its side's roles → its :data:`RoleLabels`."""
    module = key.rpartition(".")[0]
    words = fold_paths([module], _words_step, _ROOT_WORDS)[module]
    return (roles.stacks.get(key) or words[2][0], roles.roles.get(key), words[1])


def _agreement(
    sa: str, a: str | None, path_ka: str, sb: str, b: str | None, path_kb: str
) -> tuple[float, str]:
    """Both keys' :data:`RoleLabels` → :func:`role_agreement`."""
    if {sa, sb} == _CROSS_STACKS:
        return ROLE_CROSS, f"{sa} tensor onto a {sb} one"
    fa, fb = family(a or ""), family(b or "")
    if a and b and (fa == fb or any(fa in e and fb in e for e in EQUIVALENT)):
        return ROLE_AGREE, ""
    if fa.startswith(_CONV_ROLES) or fb.startswith(_CONV_ROLES) or "norm" in fa + fb:
        # where a block or the head begins, and which norm is whose, libraries differ
        return ROLE_UNKNOWN, ""
    ka = _kind(fa) if a else path_ka
    kb = _kind(fb) if b else path_kb
    if not ka or not kb or ka == kb:
        # unknown, or one kind with two roles (a fused q/k/v against one of its parts)
        return ROLE_UNKNOWN, ""
    return ROLE_CROSS, f"{a or ka} onto {b or kb}"


def _kind(role: str) -> str:
    """``attn.q`` → ``attn``; ``xattn`` and ``attn`` are one kind, ``moe`` and ``mlp`` too, and
    a pooler is not a head."""
    if role == "head.pooler":
        return "pooler"
    kind = role.partition(".")[0]
    return {"xattn": "attn", "moe": "mlp"}.get(kind, kind)
