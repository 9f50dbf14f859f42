"""Index tuples with learned offsets: which number of a source name becomes which number of
a target name, learned from pairs the names or shapes already settle.

Two libraries number the same thing differently: torchvision's ``block2-1`` (0-based, after a
hyphen) is timm's ``b2`` (1-based); torchvision's ``denseblock2.denselayer3.norm2`` is Keras'
``conv3_block3_1_bn`` (stage + 1, norm 2 → 1); a chain of letters ``f.a, f.b, f.c`` is
``conv1, conv2, conv3``. Every integer of a module path (a whole component, or inside a
name: ``block2-1``, ``conv3_block3_1_bn``) is an index *slot*, and so is a letter that
numbers a chain of siblings (``a, b, c``; ``0a, 0b``; ``5b, 5c``: consecutive letters at one
place). A slot is named by the text before it with earlier slots as ``#``
(``features.denseblock#.denselayer#.norm``), so a module's norm and conv, or its weight and
its neighbour's, share the slots of their common path. Numbers inside kernel sizes
(``3x3``) are names, and a slot with one value on its side (``Conv2d``) says nothing.

From anchors (each pair the name stages made, and for each shape held by a few groups, the
groups holding it on each side, explained as a whole), :func:`learn_index_map` learns, for
each target slot, the source slot and constant offset that explain it (``t = s + d``), or a
constant the target slot always has for one source name pattern (``Branch_2`` for every
``branch3x3dbl_N``). A relation seen varying in the anchors is preferred; otherwise one
whose source values, shifted, fall inside the target slot's values; otherwise a constant.
:func:`learned_index` then scores a pair by agreement with these relations: 1 when every
predicted slot agrees, ``0.5 × the share that agrees`` otherwise. A slot the anchors tie to
a slot the other pattern lacks counts against the pair: a member of a chain (``f.a``) onto
the odd one out beside the other side's chain (``downsample``), or the odd one onto a
member. Where nothing was learned for the pair's name patterns the value is NaN and the
caller keeps the plain index comparison (neutral evidence when a side has no indices); where
the relations leave a target slot unexplained (a block number shifted by an inserted block
contradicts every offset) the lower of the two counts.

Everything is computed per pair of name patterns with array operations: a deep stack has
one pattern per kind of module, not one per layer.
"""

from __future__ import annotations

import functools
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import numpy as np

from weightmapper.engine.names import common_prefix
from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState

MIN_ANCHORS = 2
"""Least anchors a relation needs to be used."""
_PIECE = re.compile(r"([_\-/:])")
_SIZE = re.compile(r"\d+x\d+")
_DIGITS = re.compile(r"\d+")
_LETTER_ORD = re.compile(r"^(\d*)([a-z])$")

Slot = tuple[str, int]
"""(slot name: the path text before it with earlier slots as ``#``, value)."""


@dataclass
class SideSlots:
    """One side's module paths read as index tuples, grouped by name pattern."""

    pattern: np.ndarray
    """Group number → its name pattern number (the path with every slot as ``#``)."""
    row: np.ndarray
    """Group number → its row in its pattern's value table."""
    names: list[tuple[str, ...]] = field(default_factory=list)
    """Pattern number → the names of its varying slots, in order."""
    values: list[np.ndarray] = field(default_factory=list)
    """Pattern number → (groups of the pattern × its varying slots) values."""
    domain: dict[str, frozenset[int]] = field(default_factory=dict)
    """Slot name → every value it takes on this side."""


def read_slots(paths: list[str]) -> SideSlots:
    """Module paths → their index slots (see the module docstring), by name pattern.

    Paths are grouped by their shape (the path with its numbers taken out, letters kept): a
    deep stack has few shapes, and each is read once.
    """
    prefix = common_prefix(paths) if len(paths) > 1 else ""
    shape_of: dict[tuple, int] = {}
    members: list[list[int]] = []
    values_of: list[list[tuple[int, ...]]] = []
    for g, path in enumerate(paths):
        key, vals = _path_shape(path[len(prefix) :] if path.startswith(prefix) else path)
        k = shape_of.get(key)
        if k is None:
            k = shape_of[key] = len(members)
            members.append([])
            values_of.append([])
        members[k].append(g)
        values_of[k].append(vals)
    shapes = [_first_names(key) for key in shape_of]
    # Letters number a chain only where consecutive letters share one place.
    letters: dict[str, set[int]] = defaultdict(set)
    for key, slots in zip(shape_of, shapes, strict=True):
        slot_items = [x for x in key if type(x) is not str]
        for (name, is_letter), item in zip(slots, slot_items, strict=True):
            if is_letter:
                letters[name].add(item[0])
    chain = {n for n, vs in letters.items() if len(vs) >= 2 and max(vs) - min(vs) + 1 == len(vs)}
    # Names again, a letter outside a chain now spelled out (``s2.b2``: ``s`` is a name).
    seen: dict[str, set[int]] = defaultdict(set)
    read: list[tuple[str, list[tuple[int, str]], np.ndarray]] = []
    for k, key in enumerate(shape_of):
        text = ""
        live: list[tuple[int, str]] = []  # (column in the values, slot name)
        col = 0
        for x in key:
            if type(x) is str:
                text += x
                continue
            name, is_letter = shapes[k][col]
            if is_letter and name not in chain:
                text += chr(ord("a") + x[0])
            else:
                live.append((col, text))
                text += "#"
            col += 1
        vals = np.array(values_of[k], np.int64).reshape(len(members[k]), col)
        for c, name in live:
            seen[name].update(np.unique(vals[:, c]).tolist())
        read.append((text, live, vals))
    varying = {n for n, vs in seen.items() if len(vs) > 1}
    pattern_of: dict[tuple[str, tuple[str, ...]], int] = {}
    parts: list[list[tuple[list[int], np.ndarray]]] = []
    names: list[tuple[str, ...]] = []
    for k, (text, live, vals) in enumerate(read):
        cols = [c for c, n in live if n in varying]
        pkey = (text, tuple(n for _, n in live if n in varying))
        p = pattern_of.get(pkey)
        if p is None:
            p = pattern_of[pkey] = len(names)
            names.append(pkey[1])
            parts.append([])
        parts[p].append((members[k], vals[:, cols]))
    pattern = np.empty(len(paths), np.int64)
    row = np.empty(len(paths), np.int64)
    values = []
    for p, chunks in enumerate(parts):
        groups = np.concatenate([np.asarray(m, np.int64) for m, _ in chunks])
        pattern[groups] = p
        row[groups] = np.arange(len(groups))
        values.append(np.concatenate([v for _, v in chunks]).reshape(len(groups), len(names[p])))
    domain = {n: frozenset(vs) for n, vs in seen.items() if n in varying}
    return SideSlots(pattern, row, names, values, domain)


def _path_shape(path: str) -> tuple[tuple, tuple[int, ...]]:
    """Module path → (its shape: literal text, None for a number, (value, True) for a letter;
    the values of its slots in order)."""
    key: tuple = ()
    vals: tuple[int, ...] = ()
    for n, comp in enumerate(path.split(".")):
        ckey, cvals = _component_shape(comp)
        key += (".", *ckey) if n else ckey
        vals += cvals
    return key, vals


@functools.lru_cache(maxsize=1 << 16)
def _component_shape(comp: str) -> tuple[tuple, tuple[int, ...]]:
    """One dotted component → :func:`_path_shape` of it; cached."""
    items = _component_items(comp)
    key = tuple(None if type(x) is tuple and not x[1] else x for x in items)
    return key, tuple(x[0] for x in items if type(x) is tuple)


@functools.lru_cache(maxsize=4096)
def _first_names(key: tuple) -> list[tuple[str, bool]]:
    """Path shape (literal text, None for a number, (value, True) for a letter) → each slot's
    (name: the text before it with every earlier slot as ``#``, is a letter)."""
    out: list[tuple[str, bool]] = []
    text = ""
    for x in key:
        if type(x) is str:
            text += x
        else:
            out.append((text, x is not None))
            text += "#"
    return out


@functools.lru_cache(maxsize=1 << 16)
def _component_items(comp: str) -> tuple[str | tuple[int, bool], ...]:
    """One dotted component → its literal text and its slots ((value, is a letter)) in order;
    cached (a deep stack repeats few components)."""
    out: list[str | tuple[int, bool]] = []
    for piece in _PIECE.split(comp):
        if not piece:
            continue
        m = _LETTER_ORD.match(piece)
        if m:
            digits, letter = m.groups()
            if digits:
                out.append((int(digits), False))
            out.append((ord(letter) - ord("a"), True))
            continue
        pos = 0
        sizes = [x.span() for x in _SIZE.finditer(piece)]
        for d in _DIGITS.finditer(piece):
            lo, hi = d.span()
            if any(x <= lo and hi <= y for x, y in sizes):
                continue
            if lo > pos:
                out.append(piece[pos:lo])
            out.append((int(d.group()), False))
            pos = hi
        if pos < len(piece):
            out.append(piece[pos:])
    return tuple(out)


Predictor = tuple[int, int]
"""(source slot column, offset) or (-1, constant)."""


@dataclass
class IndexMap:
    """Learned relations between the two sides' index slots."""

    src: SideSlots
    tgt: SideSlots
    relations: dict[tuple[str, str], int]
    """(target slot, source slot) → the offset every anchor agrees on."""
    varied: set[tuple[str, str]]
    """Relations whose source values varied across their anchors (identified)."""
    constants: dict[tuple[str, int], int]
    """(target slot, source pattern) → the value every anchor of that pattern had."""
    _cache: dict[tuple[int, int], tuple[list[list[Predictor]], int, bool]] = field(
        default_factory=dict
    )
    _mapped_s: dict[str, set[str]] | None = None
    _mapped_t: set[str] = field(default_factory=set)

    def predictors(self, ps: int, pt: int) -> tuple[list[list[Predictor]], int, bool]:
        """Source pattern, target pattern → (per target slot column, its predictors; how many
        slots of either pattern the anchors tie to a slot the other pattern lacks; whether
        every target slot is either predicted or so counted)."""
        hit = self._cache.get((ps, pt))
        if hit is not None:
            return hit
        if self._mapped_s is None:
            self._mapped_s = defaultdict(set)
            for j, i in self.varied:
                self._mapped_s[i].add(j)
            self._mapped_t = {j for j, _ in self.varied}
        s_names, t_names = self.src.names[ps], self.tgt.names[pt]
        out: list[list[Predictor]] = []
        missing = 0
        complete = True
        for j in t_names:
            rel = [
                (i, self.relations[(j, n)], (j, n) in self.varied)
                for i, n in enumerate(s_names)
                if (j, n) in self.relations
            ]
            tiers = [
                [(i, d) for i, d, v in rel if v],
                [
                    (i, d)
                    for i, d, _ in rel
                    if {x + d for x in self.src.domain[s_names[i]]} <= self.tgt.domain[j]
                ],
            ]
            const = self.constants.get((j, ps))
            tiers.append([(-1, const)] if const is not None else [])
            chosen = next((t for t in tiers if t), [])
            # A slot the anchors tie to a slot of the other side, paired with a module that
            # has no such slot: a member of a chain onto the odd one out beside it.
            lacks = not chosen and j in self._mapped_t
            missing += lacks
            complete = complete and (bool(chosen) or lacks)
            out.append(chosen)
        here = set(t_names)
        missing += sum(1 for n in s_names if self._mapped_s.get(n) and not self._mapped_s[n] & here)
        self._cache[(ps, pt)] = (out, missing, complete)
        return out, missing, complete


Anchor = tuple[list[int], list[int]]
"""A set of source groups and a set of target groups that must correspond among themselves
(one matched pair; or every group holding a weight of one shape, on each side)."""


def learn_index_map(src_paths: list[str], tgt_paths: list[str], anchors: list[Anchor]) -> IndexMap:
    """Both sides' group paths + anchors → the learned :class:`IndexMap`.

    A relation ``t = s + d`` between a target slot and a source slot *holds* in an anchor
    when the source values shifted by ``d`` are, as a multiset, contained in the target
    values or contain them (an anchor of five same-shape convolutions is explained as a
    whole, without knowing which is which). An anchor where exactly one ``d`` holds speaks
    for it; one where several do is silent. A relation is learned when the anchors that speak
    agree on one ``d`` and cover at least :data:`MIN_ANCHORS` source groups. A constant
    (``Branch_2`` for every ``branch3x3dbl_N``) is learned the same way per source pattern.
    """
    s, t = read_slots(src_paths), read_slots(tgt_paths)
    # relation → shift → the source groups that spoke for it (a module's weight and bias
    # are two anchors but one witness)
    votes: dict[tuple[str, str], dict[int, set[int]]] = defaultdict(dict)
    seen_vals: dict[tuple[str, str], set[int]] = defaultdict(set)
    split: set[tuple[str, str]] = set()
    """Relations some anchor speaks against."""
    c_votes: dict[tuple[str, int], dict[int, set[int]]] = defaultdict(dict)
    # One pair each: counted below, all pairs of two name patterns at once.
    pairs = np.array([(a[0], b[0]) for a, b in anchors if len(a) == 1 and len(b) == 1], np.int64)
    for s_groups, t_groups in anchors:
        if len(s_groups) == 1 and len(t_groups) == 1:
            continue
        s_by = _slot_values(s, s_groups)
        t_by = _slot_values(t, t_groups)
        s_patterns = {int(s.pattern[g]) for g in s_groups}
        for j, tv in t_by.items():
            if len(tv) < len(t_groups):
                continue  # a target without the slot: which source goes where is open
            t_count = Counter(tv)
            for i, sv in s_by.items():
                if len(sv) < len(s_groups):
                    continue
                d = _one_shift(Counter(sv), t_count)
                if d is None:
                    continue
                if d is _CONTRADICTS:
                    split.add((j, i))
                    continue
                _witness(votes[(j, i)], d, s_groups)
                seen_vals[(j, i)].update(sv)
            if len(s_patterns) == 1:
                (ps,) = s_patterns
                held = [c for c, m in t_count.items() if m >= len(s_groups)]
                if len(held) == 1:
                    _witness(c_votes[(j, ps)], held[0], s_groups)
                elif not held:
                    split.add((j, f"@{ps}"))
    pairs = pairs.reshape(-1, 2)
    pkey = s.pattern[pairs[:, 0]] * (len(t.names) + 1) + t.pattern[pairs[:, 1]]
    for key in np.unique(pkey).tolist():
        ps, pt = divmod(key, len(t.names) + 1)
        gs, gt = pairs[pkey == key, 0], pairs[pkey == key, 1]
        sv = s.values[ps][s.row[gs]]
        tv = t.values[pt][t.row[gt]]
        for jc, j in enumerate(t.names[pt]):
            held = np.unique(tv[:, jc])
            if len(held) > 1:  # not one constant: no need to count the witnesses of each
                split.add((j, f"@{ps}"))
            else:
                _witness(c_votes[(j, ps)], int(held[0]), gs)
            for ic, i in enumerate(s.names[ps]):
                diff = np.unique(tv[:, jc] - sv[:, ic])
                if len(diff) > 1:
                    split.add((j, i))
                else:
                    _witness(votes[(j, i)], int(diff[0]), gs)
                    seen_vals[(j, i)].update(np.unique(sv[:, ic]).tolist())
    relations = {}
    for k, box in votes.items():
        if len(box) == 1 and k not in split:
            ((d, n),) = box.items()
            if len(n) >= MIN_ANCHORS:
                relations[k] = d
    for k in _jointly_contradicted(s, t, anchors, relations):
        del relations[k]
    varied = {k for k in relations if len(seen_vals[k]) > 1}
    constants = {}
    for (j, ps), box in c_votes.items():
        if len(box) == 1 and (j, f"@{ps}") not in split:
            ((c, n),) = box.items()
            if len(n) >= MIN_ANCHORS:
                constants[(j, ps)] = c
    return IndexMap(s, t, relations, varied, constants)


def _witness(box: dict[int, set[int]], value: int, groups: list[int] | np.ndarray) -> None:
    """Votes of one relation + a value + the source groups speaking for it → the value's
    witnesses, kept up to :data:`MIN_ANCHORS` (all a relation needs)."""
    seen = box.setdefault(value, set())
    if len(seen) < MIN_ANCHORS:
        seen.update(np.unique(np.asarray(groups, np.int64))[:MIN_ANCHORS].tolist())


def _jointly_contradicted(
    s: SideSlots, t: SideSlots, anchors: list[Anchor], relations: dict[tuple[str, str], int]
) -> set[tuple[str, str]]:
    """Both sides' slots + anchors + relations each anchor allowed → the relations that two
    by two contradict an anchor of several groups: in a two-layer model ``fc_1, fc_2`` hold
    the values ``layer + 1`` as a multiset, but the groups of layer 0 (its ``gate_proj`` and
    ``up_proj``) predict ``fc_1`` twice beside ``h.0``, where ``h.0`` holds ``fc_1`` and
    ``fc_2``. Two relations that explain one target slot must agree group by group. Such a
    coincidence is dropped with the relation it contradicts."""
    bad: set[tuple[str, str]] = set()
    for s_groups, t_groups in anchors:
        if len(s_groups) < 2 or len(t_groups) < 2:
            continue
        s_by = _slot_values(s, s_groups)
        t_by = _slot_values(t, t_groups)
        here = [
            (j, i, d)
            for (j, i), d in relations.items()
            if len(t_by.get(j, ())) == len(t_groups) and len(s_by.get(i, ())) == len(s_groups)
        ]
        for n, (j1, i1, d1) in enumerate(here):
            for j2, i2, d2 in here[n + 1 :]:
                if j1 == j2:
                    # two explanations of one slot must agree group by group
                    a = [x + d1 for x in s_by[i1]]
                    if a != [x + d2 for x in s_by[i2]]:
                        bad |= {(j1, i1), (j2, i2)}
                    continue
                src = Counter(
                    zip([x + d1 for x in s_by[i1]], [x + d2 for x in s_by[i2]], strict=True)
                )
                tgt = Counter(zip(t_by[j1], t_by[j2], strict=True))
                if not (_contains(tgt, src) or _contains(src, tgt)):
                    bad |= {(j1, i1), (j2, i2)}
    return bad


def _contains(large: Counter, small: Counter) -> bool:
    """Two multisets → True when ``large`` holds every element of ``small`` as often."""
    return all(large.get(x, 0) >= n for x, n in small.items())


_CONTRADICTS = object()
"""Returned by :func:`_one_shift` when no shift explains an anchor (it speaks against every one)."""


def _one_shift(src: Counter, tgt: Counter):  # type: ignore[no-untyped-def]
    """Source values, target values (multisets) → the one shift under which one contains
    the other, None when several do (silent), :data:`_CONTRADICTS` when none does."""
    small, large, sign = (src, tgt, 1) if sum(src.values()) <= sum(tgt.values()) else (tgt, src, -1)
    lo = min(small)
    found = []
    for v in large:
        d = v - lo
        if all(large.get(x + d, 0) >= n for x, n in small.items()):
            found.append(sign * d)
            if len(found) > 1:
                return None
    return found[0] if found else _CONTRADICTS


def _slot_values(side: SideSlots, groups: list[int]) -> dict[str, list[int]]:
    """Side + groups → slot name → the values the groups that have it take."""
    out: dict[str, list[int]] = defaultdict(list)
    for g in groups:
        p = int(side.pattern[g])
        vals = side.values[p][side.row[g]].tolist()
        for n, v in zip(side.names[p], vals, strict=True):
            out[n].append(v)
    return out


def learned_index(
    im: IndexMap, gs: np.ndarray, gt: np.ndarray, *, matrix: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Source groups, target groups → (agreement with the learned relations, a matrix or one
    value per pair, NaN where nothing was learned for the pair's name patterns; True where
    the relations account for every slot of the target pattern)."""
    gs, gt = np.asarray(gs, np.int64), np.asarray(gt, np.int64)
    shape = (len(gs), len(gt)) if matrix else (len(gs),)
    out = np.full(shape, np.nan)
    whole = np.zeros(shape, bool)
    if not len(gs) or not len(gt):
        return out, whole
    ps_all, pt_all = im.src.pattern[gs], im.tgt.pattern[gt]
    if matrix:
        for ps in np.unique(ps_all).tolist():
            rows = np.nonzero(ps_all == ps)[0]
            for pt in np.unique(pt_all).tolist():
                cols = np.nonzero(pt_all == pt)[0]
                preds, missing, complete = im.predictors(ps, pt)
                if not any(preds):
                    continue
                sv = im.src.values[ps][im.src.row[gs[rows]]]
                tv = im.tgt.values[pt][im.tgt.row[gt[cols]]]
                block = _agreement(preds, missing, sv[:, None, :], tv[None, :, :])
                out[np.ix_(rows, cols)] = block
                whole[np.ix_(rows, cols)] = complete
        return out, whole
    key = ps_all * (int(pt_all.max()) + 1) + pt_all
    for k in np.unique(key).tolist():
        sel = np.nonzero(key == k)[0]
        ps, pt = int(ps_all[sel[0]]), int(pt_all[sel[0]])
        preds, missing, complete = im.predictors(ps, pt)
        if not any(preds):
            continue
        sv = im.src.values[ps][im.src.row[gs[sel]]]
        tv = im.tgt.values[pt][im.tgt.row[gt[sel]]]
        out[sel] = _agreement(preds, missing, sv, tv)
        whole[sel] = complete
    return out, whole


def _agreement(
    preds: list[list[Predictor]], missing: int, sv: np.ndarray, tv: np.ndarray
) -> np.ndarray:
    """Predictors per target column + slots without a partner + source values (…, k_s) and
    target values (…, k_t) (broadcastable) → 1 where every predicted column agrees and no
    slot lacks its partner, else 0.5 × the share of slots that agree."""
    total: np.ndarray | float = 0.0
    every: np.ndarray | bool = missing == 0
    n = missing
    for j, plist in enumerate(preds):
        if not plist:
            continue
        frac: np.ndarray | float = 0.0
        for i, d in plist:
            guess = d if i < 0 else sv[..., i] + d
            frac = frac + (guess == tv[..., j]).astype(np.float64)
        frac = np.asarray(frac) / len(plist)
        total = total + frac
        every = every & (frac >= 1.0)
        n += 1
    return np.where(every, 1.0, 0.5 * np.asarray(total) / max(1, n))


ANCHOR_CLASS_MAX = 16
"""Most groups per side a shape may hold to serve as an anchor (larger ones say little and
cost more)."""


def anchor_groups(st: MatchState) -> list[Anchor]:
    """MatchState → anchors: each pair of groups matched so far (by names, in the stages that
    ran), and for each weight shape held by at most :data:`ANCHOR_CLASS_MAX` groups on both
    sides, the groups holding it on each side."""
    partner = st.group_partners()
    rows = np.nonzero(partner >= 0)[0]
    out: list[Anchor] = [
        ([g], [h]) for g, h in zip(rows.tolist(), partner[rows].tolist(), strict=True)
    ]
    s_by = _groups_by_shape(st.s, st.s_stat)
    t_by = _groups_by_shape(st.t, st.t_stat)
    for shape, gs in s_by.items():
        gt = t_by.get(shape)
        if gt and len(gs) <= ANCHOR_CLASS_MAX and len(gt) <= ANCHOR_CLASS_MAX:
            out.append((gs, gt))
    return out


def _groups_by_shape(side: Side, stat: np.ndarray) -> dict[tuple[int, ...], list[int]]:
    """Side + statistics mask → learned-tensor shape → the distinct groups holding one, in order."""
    out: dict[tuple[int, ...], dict[int, None]] = defaultdict(dict)
    for k, (sh, is_stat) in enumerate(zip(side.shape, stat, strict=True)):
        if not is_stat:
            out[sh][int(side.group[k])] = None
    return {sh: list(gs) for sh, gs in out.items()}


def stage_index_map(st: MatchState) -> None:
    """MatchState → the same state with :attr:`MatchState.index_map` learned from its anchors
    (:func:`anchor_groups`); it pairs nothing itself. When the name stages left no group open
    on a side, nothing is left for it to decide and it is not learned (the pairs keep the
    plain index comparison)."""
    if not st.open_groups("source") or not st.open_groups("target"):
        return
    st.index_map = learn_index_map(st.s.group_paths, st.t.group_paths, anchor_groups(st))


def index_agreement(
    st: MatchState, gs: np.ndarray, gt: np.ndarray, plain: np.ndarray, *, matrix: bool
) -> np.ndarray:
    """Source groups, target groups + the plain index similarity of each pair → the learned
    agreement (:func:`learned_index`) where relations account for every slot of the target,
    the lower of the two where they account for some (an unexplained slot, such as a block
    number shifted by an inserted block, is left to the plain comparison), else the plain
    value."""
    if st.index_map is None:
        return plain
    learned, whole = learned_index(st.index_map, gs, gt, matrix=matrix)
    partial = np.where(np.isnan(learned), plain, np.minimum(learned, plain))
    return np.where(whole, learned, partial)
