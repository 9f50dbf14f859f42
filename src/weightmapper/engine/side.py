"""Side: an Inventory prepared for matching, as parallel arrays over its keys and groups.

Everything the cascade looks up per key (shape, role, canonical tokens, dense-ranked layer
indices, group, position) is computed once here, so the stages only index arrays.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import chain
from typing import SupportsIndex, overload

import numpy as np

from weightmapper.engine.columns import IndexColumns, distinct_pairs
from weightmapper.engine.families import guess_families, type_family
from weightmapper.engine.names import (
    ModuleSplits,
    common_prefix,
    distinct_codes,
    first_of_each,
    local_role,
    local_tokens,
    rank_index_columns,
    skeleton,
    split_modules,
)
from weightmapper.engine.shapes import shape_bucket
from weightmapper.inventory import LEARNED_NAMES, Inventory, tensor_is_buffer
from weightmapper.tensor_info import TensorInfo


class GroupKeys(Sequence[list[int]]):
    """Group number → the list of its key numbers, made when asked for: a group's keys are
    numbered consecutively, so only where each group starts and ends is kept."""

    def __init__(self, starts: list[int], ends: list[int]) -> None:
        self._starts = starts
        self._ends = ends

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, g: SupportsIndex) -> list[int]: ...
    @overload
    def __getitem__(self, g: slice) -> list[list[int]]: ...
    def __getitem__(self, g: SupportsIndex | slice) -> list[int] | list[list[int]]:
        if isinstance(g, slice):
            return [self[n] for n in range(*g.indices(len(self)))]
        return list(range(self._starts[g], self._ends[g]))


@dataclass
class Side:
    """One side of a mapping problem as arrays indexed by key number and group number."""

    inv: Inventory
    keys: list[str]
    index: dict[str, int]
    stripped: list[str]
    """Key without the prefix all keys share (``module.``, ``_orig_mod.``...)."""
    shape: list[tuple[int, ...]]
    shape_code: np.ndarray
    """Key number → code of its shape (equal codes: equal shapes)."""
    bucket: list[tuple[int, ...]]
    role: list[str]
    """Canonical local role (``weight``, ``bias``, ``running mean``...)."""
    role_codes: tuple[np.ndarray, list[str]]
    """Key number → code of its :attr:`role`, and the distinct roles in order of first
    appearance."""
    stat_buffer: list[bool]
    """Buffer that holds no learned values (statistics, indices); weight/bias buffers of a
    frozen BatchNorm are learned and count as parameters."""
    group: np.ndarray
    """Key number → group number."""
    tokens: list[str]
    """Canonical tokens of the whole key, space-separated (indices removed)."""
    group_paths: list[str]
    group_keys: GroupKeys
    """Group number → its key numbers (a list)."""
    group_type: list[str | None]
    group_type_code: np.ndarray
    """Group number → code of its module type (equal codes: equal types)."""
    group_family: list[str | None]
    group_tokens: list[str]
    """Canonical tokens of the group's module path (indices removed)."""
    group_template: list[str]
    group_ranked: list[tuple[int, ...]]
    group_index_key: list[tuple[tuple[int, ...], int]]
    """Group number → (dense-ranked indices, primary index): the primary index is the slot
    with the most distinct values in the group's template (the block number), -1 if none."""
    group_index_columns: IndexColumns
    """:attr:`group_index_key` as arrays (depth, primary index, ranks padded with 0)."""
    group_sibrank: list[int]
    """Group number → its rank among the groups that share its parent module path."""
    group_parent: np.ndarray
    """Group number → code of its parent module path (equal codes: siblings)."""
    group_pos: np.ndarray
    """Group number → relative position in [0, 1] (execution or registration order)."""
    group_pos_known: np.ndarray
    """Group number → True when its position means something: always, unless the keys came
    sorted (:attr:`Inventory.sorted_keys`); then only for numbered siblings (``conv1``,
    ``conv2``; ``layers.0``, ``layers.1``) and lettered ones (``f.a``, ``f.b``), which a
    natural sort keeps in their real order."""
    group_linked: np.ndarray
    """Group number → True when its position after the previous group is real: always,
    unless the keys came sorted; then when the two paths first differ in numbers only
    (``features.3.conv.0`` → ``features.3.conv.1``, ``bn1`` → ``bn2``), not in names
    (``bn2`` → ``conv1``, whose order is alphabetical)."""
    group_chain: np.ndarray
    """Group number → its chain of numbered siblings (paths equal but for their numbers),
    -1 if none: in a sorted checkpoint, positions compare only within one chain."""
    tied_to: dict[str, str]
    """Key → the first key of its tie group (for every other member of the group)."""

    def __len__(self) -> int:
        return len(self.keys)

    @functools.cached_property
    def ranked(self) -> list[tuple[int, ...]]:
        """Key number → its group's dense-ranked indices (:attr:`group_ranked`)."""
        return [self.group_ranked[g] for g in self.group.tolist()]

    @functools.cached_property
    def group_rank_code(self) -> np.ndarray:
        """Group number → code of its dense-ranked indices (equal codes: equal indices)."""
        return distinct_codes(self.group_ranked)[0]

    @functools.cached_property
    def family_codes(self) -> tuple[np.ndarray, list[str]]:
        """Group number → code of its :attr:`group_family` (``""`` for none), and the distinct
        families in order of first appearance, worked out on first use."""
        return distinct_codes([f or "" for f in self.group_family])

    @functools.cached_property
    def shape_firsts(self) -> list[int]:
        """For each distinct shape (in order of first appearance), its first key."""
        return first_of_each(self.shape_code)

    @functools.cached_property
    def token_codes(self) -> tuple[np.ndarray, list[str]]:
        """Key number → code of its :attr:`tokens`, and the distinct token strings in order of
        first appearance (:func:`distinct_codes`), worked out on first use."""
        return distinct_codes(self.tokens)

    @functools.cached_property
    def group_token_codes(self) -> tuple[np.ndarray, list[str]]:
        """Group number → code of its :attr:`group_tokens`, and the distinct strings in order
        of first appearance, worked out on first use."""
        return distinct_codes(self.group_tokens)


def side_specific_tokens(a: Side, b: Side, share: float = 0.5) -> tuple[set[str], set[str]]:
    """Two Sides → tokens that fill at least ``share`` of one side's keys and none of the other's.

    Such tokens are wrapper context (``decoder.``, ``backbone.``, ``encoder.`` on one side
    only): they say nothing about which tensor is which.
    """

    def doc_freq(side: Side) -> dict[str, int]:
        code, distinct = side.token_codes
        out: dict[str, int] = {}
        for toks, n in zip(distinct, np.bincount(code).tolist(), strict=True):
            for t in set(toks.split()):
                out[t] = out.get(t, 0) + n
        return out

    def leading(side: Side) -> set[str]:
        # Tokens that, wherever they occur, come first: wrapper context, not a component.
        first: set[str] = set()
        later: set[str] = set()
        for toks in side.token_codes[1]:
            words = toks.split()
            if words:
                first.add(words[0])
                later.update(words[1:])
        return first - later

    fa, fb = doc_freq(a), doc_freq(b)

    def drop(side: Side, mine: dict[str, int], other: dict[str, int]) -> set[str]:
        if len(side.group_paths) < 3:
            return set()  # too few modules to tell a wrapper from a component
        lead = leading(side)
        return {
            t
            for t, n in mine.items()
            if n >= share * len(side) and t not in other and not t.isdigit() and t in lead
        }

    return drop(a, fa, fb), drop(b, fb, fa)


def drop_tokens(side: Side, drop: set[str]) -> Side:
    """Side + tokens → a copy of the Side with those tokens removed from every name string
    (indices are kept); the Side itself is unchanged."""
    if not drop:
        return side

    def clean(text: str) -> str:
        return " ".join(t for t in text.split() if t not in drop)

    cache: dict[str, str] = {}
    tokens = [cache[t] if t in cache else cache.setdefault(t, clean(t)) for t in side.tokens]
    return replace(
        side,
        tokens=tokens,
        group_tokens=[clean(t) for t in side.group_tokens],
        group_template=[clean(t) for t in side.group_template],
    )


def prepare_side(inv: Inventory) -> Side:
    """Inventory → Side (keys ordered by group order, then by local order).

    A large checkpoint repeats a few module names in thousands of blocks, so the string work
    (roles, tokens, templates, families) runs once per distinct local name, module template
    or shape and is spread over the keys and groups by index arrays.
    """
    group_paths = list(inv.groups)
    groups = list(inv.groups.values())
    n_g = len(groups)
    tensors = [g.tensors for g in groups]
    sizes = np.fromiter(map(len, tensors), np.int64, n_g)
    group_of = np.repeat(np.arange(n_g, dtype=np.int64), sizes)
    ends = np.cumsum(sizes).tolist()
    group_keys = GroupKeys([0, *ends[:-1]], ends)
    keys = [
        f"{p}.{local}" if p else local  # ParameterGroup.key
        for p, t in zip(group_paths, tensors, strict=True)
        for local in t
    ]
    infos = list(chain.from_iterable(t.values() for t in tensors))
    locals_ = list(chain.from_iterable(tensors))
    if any("." in local for local in dict.fromkeys(locals_)):
        locals_ = [k.rpartition(".")[2] for k in keys]  # a key's last component
    local_code, local_names = distinct_codes(locals_)
    shapes = [tuple(i.shape) for i in infos]
    shape_code, distinct_shapes = distinct_codes(shapes)
    buckets = [_bucket(s) for s in distinct_shapes]
    role_of = [local_role(loc) for loc in local_names]
    role_code, role_names = distinct_codes(role_of)  # locals are in order of first appearance
    prefix = common_prefix(group_paths) if len(keys) > 1 else ""
    stripped = [k[len(prefix) :] for k in keys] if prefix else keys
    gstripped = (
        [p[len(prefix) :] if (p + ".").startswith(prefix) else p for p in group_paths]
        if prefix
        else group_paths
    )
    splits = split_modules(gstripped)
    tpl_code = splits.template_code
    gtemplates = [splits.templates[c] for c in tpl_code.tolist()]
    granked, gprimary, granks = rank_index_columns(tpl_code, splits.width, splits.flat)
    # A template is its module's tokens with ``#`` where each index stood, so every group of
    # a template has the same tokens.
    tpl_tokens = [" ".join(t) for t in splits.tokens]
    gtokens = [tpl_tokens[c] for c in tpl_code.tolist()]
    # A key's name is its module's name plus its local name; its layer indices are the
    # module's (dense-ranked per module template, so all tensors of a module agree).
    tokens = _key_tokens(tpl_code[group_of], local_code, tpl_tokens, local_names)
    gtypes = [g.module_type for g in groups]
    gpos = np.arange(n_g, dtype=np.float64) / max(1, n_g - 1)
    ordinal_code, ordinals = _ordinal_shape_codes(group_paths, prefix, splits)
    chains = _numbered_chains(ordinal_code, ordinals)
    parent_code = _parent_codes(group_paths, splits)
    tied_to: dict[str, str] = {}
    for tie in inv.tied:
        for k in tie[1:]:
            tied_to[k] = tie[0]
    return Side(
        inv=inv,
        keys=keys,
        index=dict(zip(keys, range(len(keys)), strict=True)),
        stripped=stripped,
        shape=shapes,
        shape_code=shape_code,
        bucket=[buckets[c] for c in shape_code.tolist()],
        role=[role_of[c] for c in local_code.tolist()],
        role_codes=(role_code[local_code], role_names),
        stat_buffer=_stat_buffers(infos, locals_, local_code, local_names),
        group=group_of,
        tokens=tokens,
        group_paths=group_paths,
        group_keys=group_keys,
        group_type=gtypes,
        group_type_code=distinct_codes(gtypes)[0],
        group_family=_families(
            gtypes, group_of, local_code, local_names, shape_code, distinct_shapes
        ),
        group_tokens=gtokens,
        group_template=gtemplates,
        group_ranked=granked,
        group_index_key=list(zip(granked, gprimary.tolist(), strict=True)),
        group_index_columns=IndexColumns.from_arrays(splits.width, gprimary, granks),
        group_sibrank=_sibling_ranks(parent_code).tolist(),
        group_parent=parent_code,
        group_pos=gpos,
        group_pos_known=(chains >= 0) if inv.sorted_keys else np.ones(n_g, dtype=bool),
        group_chain=chains,
        group_linked=(
            _linked_codes(group_paths, ordinal_code, ordinals)
            if inv.sorted_keys
            else np.ones(n_g, dtype=bool)
        ),
        tied_to=tied_to,
    )


def _key_tokens(
    key_tpl: np.ndarray, local_code: np.ndarray, tpl_tokens: list[str], local_names: list[str]
) -> list[str]:
    """Per key: its module template's code and its local name's code (+ the templates'
    tokens, the local names) → each key's canonical tokens, built once per distinct
    (template, local name)."""
    n_local = max(1, len(local_names))
    combos, combo_of = np.unique(key_tpl * n_local + local_code, return_inverse=True)
    combo_tokens = []
    for c in combos.tolist():
        tpl, loc = divmod(c, n_local)
        combo_tokens.append((tpl_tokens[tpl] + " " + _local_words(local_names[loc])).strip())
    return [combo_tokens[c] for c in combo_of.reshape(-1).tolist()]


@functools.lru_cache(maxsize=4096)
def _local_words(local: str) -> str:
    """Local tensor name → its canonical tokens, space-separated."""
    return " ".join(local_tokens(local))


def _families(
    types: list[str | None],
    group_of: np.ndarray,
    local_code: np.ndarray,
    local_names: list[str],
    shape_code: np.ndarray,
    distinct_shapes: list[tuple[int, ...]],
) -> list[str | None]:
    """Group module types + per key: group, local name code, shape code (+ the distinct local
    names and shapes) → each group's module family: from its type, else guessed from its
    local names and shapes (:func:`guess_families`)."""
    known = {t: type_family(t) for t in dict.fromkeys(types)}
    out = [known[t] for t in types]
    if all(out):
        return out
    ndim = np.fromiter(map(len, distinct_shapes), np.int64, len(distinct_shapes))[shape_code]
    guessed = guess_families(group_of, local_code, local_names, ndim, len(types))
    return [fam or guess for fam, guess in zip(out, guessed, strict=True)]


def _ordinal_shape_codes(
    paths: list[str], prefix: str, splits: ModuleSplits
) -> tuple[np.ndarray, list[str]]:
    """Module paths + the prefix they share + the :class:`ModuleSplits` of the paths without
    it → each path's code of its ordinal shape (:func:`_ordinal_shapes`), and the distinct
    shapes in order of first appearance.

    Number components become ``#`` in a path's ordinal shape as in its skeleton, so a
    skeleton's shape is the shape of each of its paths: worked out once per skeleton, unless
    a one-letter component asks which letters its siblings have (then path by path).
    """
    if splits.skeleton_code is None or splits.skeletons is None:
        return distinct_codes(_ordinal_shapes(paths))
    head = skeleton(prefix)  # the prefix ends with a dot: it holds whole components
    skeletons = [head + s for s in splits.skeletons]
    if any(_SINGLE_LETTER.search(s) for s in skeletons):
        return distinct_codes(_ordinal_shapes(paths))
    code, distinct = distinct_codes(_ordinal_shapes(skeletons))
    return code[splits.skeleton_code], distinct


def _parent_codes(paths: list[str], splits: ModuleSplits) -> np.ndarray:
    """Module paths + their :class:`ModuleSplits` (of the paths without the prefix they all
    share) → each path's code of its parent path (all but its last component), codes in
    order of first appearance.

    A parent is its skeleton's parent and the numbers in it, so the parents are told apart
    by those numbers, skeleton by skeleton; path by path when the splits have no skeletons
    or a number is written with leading zeros (``07`` and ``7`` are one value).
    """
    if splits.skeleton_code is None or splits.skeletons is None or not splits.plain_numbers:
        return distinct_codes([p.rpartition(".")[0] for p in paths])[0]
    parent_skeleton, _, own = zip(*(s.rpartition(".") for s in splits.skeletons), strict=True)
    skeleton_parent, _ = distinct_codes(parent_skeleton)
    # The indices in a parent are the path's, but the last one when its own name is a number.
    own_number = np.array([c == "#" for c in own], bool)
    group = skeleton_parent[splits.skeleton_code]
    depth = splits.width - own_number[splits.skeleton_code]
    start = np.cumsum(splits.width) - splits.width
    code = np.empty(len(paths), np.int64)
    order = np.argsort(group, kind="stable")
    cuts = np.nonzero(np.diff(group[order]))[0] + 1
    n_codes = 0
    for rows in np.split(order, cuts):
        d = int(depth[rows[0]])
        if not d:
            code[rows] = n_codes
            n_codes += 1
            continue
        # Equal numbers, equal code: the numbers' codes combined one slot after another.
        local = np.zeros(len(rows), np.int64)
        for slot in start[rows] + np.arange(d)[:, None]:
            values, value_code = np.unique(splits.flat[slot], return_inverse=True)
            local = distinct_pairs(local, value_code.reshape(-1), len(values))[2]
        code[rows] = n_codes + local
        n_codes += int(local.max()) + 1
    # Renumbered in order of first appearance.
    first = np.full(n_codes, len(paths), np.int64)
    np.minimum.at(first, code, np.arange(len(paths)))
    rank = np.empty(n_codes, np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(n_codes)
    return rank[code]


def _numbered_siblings(shapes: list[str]) -> np.ndarray:
    """Module paths' ordinal shapes (:func:`_ordinal_shapes`) → for each path that shares its
    name, numbers aside, with another (``conv1``/``conv2``, ``layers.0.attn``/
    ``layers.1.attn``, ``f.a``/``f.b``) the number of that chain (in order of first
    appearance), else -1: the order a natural sort gives one chain is its real order; the
    order between other names is alphabetical."""
    return _numbered_chains(*distinct_codes(shapes))


def _numbered_chains(code: np.ndarray, distinct: list[str]) -> np.ndarray:
    """Paths' ordinal shapes as codes + the distinct shapes in order of first appearance →
    :func:`_numbered_siblings`."""
    chained = (np.bincount(code, minlength=len(distinct)) > 1) & np.fromiter(
        ("#" in s for s in distinct), bool, len(distinct)
    )
    chain_id = np.cumsum(chained) - 1
    return np.where(chained[code], chain_id[code], -1).astype(np.int64)


def _linked(paths: list[str], shapes: list[str]) -> np.ndarray:
    """Module paths in natural order + their ordinal shapes → for each, True when the first
    component where it differs from the previous path differs in numbers (or chain letters)
    only (so their order is real)."""
    out = np.zeros(len(paths), dtype=bool)
    if len(paths) < 2:
        return out
    k = first_differing_component(paths)
    # Equal components give equal ordinal shapes, so the shapes first differ at k or later.
    k_shape = first_differing_component(shapes)
    out[1:] = (k >= 0) & ((k_shape < 0) | (k_shape > k))
    return out


def _linked_codes(paths: list[str], code: np.ndarray, shapes: list[str]) -> np.ndarray:
    """Module paths in natural order + their ordinal shapes as codes (+ the distinct shapes)
    → :func:`_linked`, the shapes compared once per distinct pair of neighbours' shapes."""
    out = np.zeros(len(paths), dtype=bool)
    if len(paths) < 2:
        return out
    k = first_differing_component(paths)
    a, b, back = distinct_pairs(code[:-1], code[1:], len(shapes))
    neighbours = [shapes[x] for pair in zip(a.tolist(), b.tolist(), strict=True) for x in pair]
    k_shape = first_differing_component(neighbours)[0::2][back]
    out[1:] = (k >= 0) & ((k_shape < 0) | (k_shape > k))
    return out


def _ordinal_shapes(paths: list[str]) -> list[str]:
    """Module paths → each one with its components' ordinals as ``#``: a trailing number
    (``conv2``, ``3``), and a single letter among siblings whose letters are consecutive
    (``f.a, f.b, f.c``; not ``attn.q, attn.k, attn.v``), which sorts in its real order too."""
    joined = "\n".join(paths)
    if paths and joined.count("\n") == len(paths) - 1:  # no path holds a newline
        shapes = _TRAILING_ANY.sub("#", joined + "\n")[:-1].split("\n")
        # Letters are kept in a shape: a path has a one-letter component iff its shape has.
        if not any(_SINGLE_LETTER.search(s) for s in dict.fromkeys(shapes)):
            return shapes
    split = [p.split(".") for p in paths]
    letters: dict[tuple[str, ...], set[str]] = {}
    for parts in split:
        for n, c in enumerate(parts):
            if len(c) == 1 and "a" <= c <= "z":
                letters.setdefault(tuple(parts[:n]), set()).add(c)
    chains = {
        k for k, v in letters.items() if len(v) >= 2 and ord(max(v)) - ord(min(v)) + 1 == len(v)
    }
    return [
        ".".join(
            "#"
            if len(c) == 1 and "a" <= c <= "z" and tuple(parts[:n]) in chains
            else _TRAILING.sub("#", c)
            for n, c in enumerate(parts)
        )
        for parts in split
    ]


_TRAILING = re.compile(r"\d+$")
"""A component's trailing number (``conv2``, ``3``): an index; numbers inside a name
(``branch5x5``, ``conv2d``) are part of it."""
_TRAILING_ANY = re.compile(r"\d+(?=[.\n])")
"""Every component's trailing number in newline-ended dotted paths (:data:`_TRAILING` per
component)."""
_SINGLE_LETTER = re.compile(r"(?:^|\.)[a-z](?:\.|$)")
"""A component that is one lower-case letter, in a dotted path."""


def first_differing_component(texts: list[str]) -> np.ndarray:
    """Dotted strings → for each one after the first, the number of the first component where
    it differs from the one before, -1 where no component differs (equal strings, or one
    continues the other: ``a.b`` → ``a.b.c``).

    The strings are compared as one character array (the first differing character tells
    the component: the dots before it), not one pair at a time.
    """
    if len(texts) < 2:
        return np.zeros(0, np.int64)
    try:
        chars = np.array(texts, dtype=np.bytes_)
    except UnicodeEncodeError:
        chars = np.array([t.encode() for t in texts], dtype=np.bytes_)
    width = max(1, chars.dtype.itemsize)
    codes = np.frombuffer(chars.tobytes(), np.uint8).reshape(len(texts), width)
    a, b = codes[:-1], codes[1:]
    differ = a != b
    at = differ.argmax(axis=1)
    rows = np.arange(len(texts) - 1)
    before = ((a == ord(".")) & (np.arange(width) < at[:, None])).sum(axis=1)  # dots before
    ca, cb = a[rows, at], b[rows, at]
    # One string ends where the other goes on with a dot: no component differs.
    ended = ((ca == 0) & (cb == ord("."))) | ((ca == ord(".")) & (cb == 0))
    return np.where(differ.any(axis=1) & ~ended, before, -1).astype(np.int64)


def _stat_buffers(
    infos: list[TensorInfo], locals_: list[str], local_code: np.ndarray, local_names: list[str]
) -> list[bool]:
    """TensorInfos + their local names (and the names' codes, the distinct names) → for each,
    True for a buffer that holds no learned values: a buffer (known, or guessed from its
    local name) not named like a learned tensor and not a float table (:func:`_table_buffer`).
    Keys named like learned tensors are never looked at; the rest are decided once per
    distinct (buffer flag, local names, dtype, 2-D table shape or not)."""
    out = [False] * len(infos)
    maybe = np.fromiter((n not in LEARNED_NAMES for n in local_names), bool, len(local_names))
    seen: dict[tuple, bool] = {}
    for k in np.nonzero(maybe[local_code])[0].tolist():
        info, local = infos[k], locals_[k]
        shape = info.shape
        own = info.name.rpartition(".")[2]  # what tensor_is_buffer guesses from
        key = (info.is_buffer, own, local, info.dtype, len(shape) == 2 and min(shape) > 1)
        found = seen.get(key)
        if found is None:
            found = seen[key] = tensor_is_buffer(info) and not _table_buffer(info)
        out[k] = found
    return out


def _table_buffer(info) -> bool:  # type: ignore[no-untyped-def]
    """TensorInfo → True for a floating-point buffer that is a 2-D table (rows × features).

    Such a buffer (a fixed positional-embedding table) holds values another library keeps
    in a parameter (an ``Embedding`` weight), so it pairs like a learned tensor; running
    statistics are 1-D and index or mask buffers are integer or boolean.
    """
    shape = tuple(info.shape)
    return (
        len(shape) == 2
        and min(shape) > 1
        and "float" in str(info.dtype)
        and "int" not in str(info.dtype)
    )


@functools.lru_cache(maxsize=65536)
def _bucket(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape_bucket(shape)


def _sibling_ranks(parent: np.ndarray) -> np.ndarray:
    """Groups' parent codes → each group's rank among the groups that share its parent, in
    group order."""
    if not len(parent):
        return np.zeros(0, np.int64)
    order = np.argsort(parent, kind="stable")
    ordered = parent[order]
    starts = np.r_[0, np.nonzero(ordered[1:] != ordered[:-1])[0] + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(parent)]))
    ranks = np.empty(len(parent), np.int64)
    ranks[order] = np.arange(len(parent)) - first
    return ranks
