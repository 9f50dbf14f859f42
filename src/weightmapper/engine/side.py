"""Side: an Inventory prepared for matching, as parallel arrays over its keys and groups.

Everything the cascade looks up per key (shape, role, canonical tokens, dense-ranked layer
indices, group, position) is computed once here, so the stages only index arrays.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from weightmapper.engine.families import guess_family, type_family
from weightmapper.engine.names import (
    common_prefix,
    dense_rank_indices,
    local_role,
    local_tokens,
    split_module,
)
from weightmapper.engine.shapes import shape_bucket
from weightmapper.inventory import LEARNED_NAMES, Inventory, tensor_is_buffer
from weightmapper.tensor_info import TensorInfo


@dataclass
class Side:
    """One side of a mapping problem as arrays indexed by key number and group number."""

    inv: Inventory
    keys: list[str]
    index: dict[str, int]
    stripped: list[str]
    """Key without the prefix all keys share (``module.``, ``_orig_mod.``...)."""
    shape: list[tuple[int, ...]]
    bucket: list[tuple[int, ...]]
    role: list[str]
    """Canonical local role (``weight``, ``bias``, ``running mean``...)."""
    stat_buffer: list[bool]
    """Buffer that holds no learned values (statistics, indices); weight/bias buffers of a
    frozen BatchNorm are learned and count as parameters."""
    group: np.ndarray
    """Key number → group number."""
    tokens: list[str]
    """Canonical tokens of the whole key, space-separated (indices removed)."""
    norm_key: list[str]
    """Canonical tokens + dense-ranked indices: equal keys mean the same tensor."""
    ranked: list[tuple[int, ...]]
    group_paths: list[str]
    group_keys: list[list[int]]
    group_type: list[str | None]
    group_family: list[str | None]
    group_tokens: list[str]
    """Canonical tokens of the group's module path (indices removed)."""
    group_template: list[str]
    group_ranked: list[tuple[int, ...]]
    group_index_key: list[tuple[tuple[int, ...], int]]
    """Group number → (dense-ranked indices, primary index): the primary index is the slot
    with the most distinct values in the group's template (the block number), -1 if none."""
    group_sibrank: list[int]
    """Group number → its rank among the groups that share its parent module path."""
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


def side_specific_tokens(a: Side, b: Side, share: float = 0.5) -> tuple[set[str], set[str]]:
    """Two Sides → tokens that fill at least ``share`` of one side's keys and none of the other's.

    Such tokens are wrapper context (``decoder.``, ``backbone.``, ``encoder.`` on one side
    only): they say nothing about which tensor is which.
    """

    def doc_freq(side: Side) -> dict[str, int]:
        out: dict[str, int] = {}
        for toks, n in Counter(side.tokens).items():
            for t in set(toks.split()):
                out[t] = out.get(t, 0) + n
        return out

    def leading(side: Side) -> set[str]:
        # Tokens that, wherever they occur, come first: wrapper context, not a component.
        first: set[str] = set()
        later: set[str] = set()
        for toks in set(side.tokens):
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
        norm_key=norm_keys(tokens, side.ranked),
    )


def norm_key(tokens: str, ranked: tuple[int, ...]) -> str:
    """Canonical tokens + dense-ranked indices → the key the ``normalized`` stage compares."""
    return " ".join(sorted(tokens.split())) + "|" + ",".join(map(str, ranked))


def norm_keys(tokens: list[str], ranked: list[tuple[int, ...]]) -> list[str]:
    """:func:`norm_key` for many keys, each distinct token string and index tuple done once."""
    tok_cache: dict[str, str] = {}
    idx_cache: dict[tuple[int, ...], str] = {}
    out = []
    for t, r in zip(tokens, ranked, strict=True):
        a = tok_cache.get(t)
        if a is None:
            a = tok_cache[t] = " ".join(sorted(t.split()))
        b = idx_cache.get(r)
        if b is None:
            b = idx_cache[r] = ",".join(map(str, r))
        out.append(a + "|" + b)
    return out


def prepare_side(inv: Inventory) -> Side:
    """Inventory → Side (keys ordered by group order, then by local order)."""
    keys: list[str] = []
    group_paths = list(inv.groups)
    group_keys: list[list[int]] = []
    group_of: list[int] = []
    for gi, path in enumerate(group_paths):
        g = inv.groups[path]
        ks = []
        for local in g.tensors:
            ks.append(len(keys))
            keys.append(g.key(local))
            group_of.append(gi)
        group_keys.append(ks)
    prefix = common_prefix(group_paths) if len(keys) > 1 else ""
    stripped = [k[len(prefix) :] for k in keys]
    infos = [inv.tensors[k] for k in keys]
    shapes = [tuple(i.shape) for i in infos]
    locals_ = [k.rpartition(".")[2] for k in keys]
    stat = _stat_buffers(infos, locals_)
    local_roles = {loc: local_role(loc) for loc in dict.fromkeys(locals_)}
    gstripped = [p[len(prefix) :] if (p + ".").startswith(prefix) else p for p in group_paths]
    gparts = [split_module(p) for p in gstripped]
    gtemplates = [gp.template for gp in gparts]
    granked = dense_rank_indices(gtemplates, [gp.indices for gp in gparts])
    gtokens = [" ".join(gp.tokens) for gp in gparts]
    # A key's name is its module's name plus its local name; its layer indices are the
    # module's (dense-ranked per module template, so all tensors of a module agree).
    local_words = {loc: " ".join(local_tokens(loc)) for loc in dict.fromkeys(locals_)}
    tokens = [
        (gtokens[g] + " " + local_words[loc]).strip()
        for g, loc in zip(group_of, locals_, strict=True)
    ]
    ranked = [granked[g] for g in group_of]
    gtypes = [inv.groups[p].module_type for p in group_paths]
    gfam = _families(inv, group_paths, gtypes)
    n_g = len(group_paths)
    gpos = np.arange(n_g, dtype=np.float64) / max(1, n_g - 1)
    chains = _numbered_siblings(group_paths)
    tied_to: dict[str, str] = {}
    for tie in inv.tied:
        for k in tie[1:]:
            tied_to[k] = tie[0]
    return Side(
        inv=inv,
        keys=keys,
        index={k: i for i, k in enumerate(keys)},
        stripped=stripped,
        shape=shapes,
        bucket=[_bucket(s) for s in shapes],
        role=[local_roles[loc] for loc in locals_],
        stat_buffer=stat,
        group=np.asarray(group_of, dtype=np.int64),
        tokens=tokens,
        norm_key=norm_keys(tokens, ranked),
        ranked=ranked,
        group_paths=group_paths,
        group_keys=group_keys,
        group_type=gtypes,
        group_family=gfam,
        group_tokens=gtokens,
        group_template=gtemplates,
        group_ranked=granked,
        group_index_key=_index_keys(gtemplates, granked),
        group_sibrank=_sibling_ranks(group_paths),
        group_pos=gpos,
        group_pos_known=(chains >= 0) if inv.sorted_keys else np.ones(n_g, dtype=bool),
        group_chain=chains,
        group_linked=_linked(group_paths) if inv.sorted_keys else np.ones(n_g, dtype=bool),
        tied_to=tied_to,
    )


def _families(inv: Inventory, paths: list[str], types: list[str | None]) -> list[str | None]:
    """Inventory + its group paths + their module types → each group's module family: from
    its type, else guessed from its local names and shapes (once per distinct set of them)."""
    guessed: dict[tuple, str | None] = {}
    out: list[str | None] = []
    for t, p in zip(types, paths, strict=True):
        fam = type_family(t)
        if not fam:
            shapes = tuple((k, v.shape) for k, v in inv.groups[p].tensors.items())
            if shapes not in guessed:
                guessed[shapes] = guess_family(dict(shapes))
            fam = guessed[shapes]
        out.append(fam)
    return out


def _numbered_siblings(paths: list[str]) -> np.ndarray:
    """Module paths → for each one that shares its name, numbers aside, with another
    (``conv1``/``conv2``, ``layers.0.attn``/``layers.1.attn``, ``f.a``/``f.b``) the number of
    that chain, else -1: the order a natural sort gives one chain is its real order; the
    order between other names is alphabetical."""
    shapes = [".".join(parts) for parts in _ordinal_shapes(paths)]
    counts = Counter(shapes)
    ids: dict[str, int] = {}
    return np.array(
        [ids.setdefault(s, len(ids)) if counts[s] > 1 and "#" in s else -1 for s in shapes],
        dtype=np.int64,
    )


def _linked(paths: list[str]) -> np.ndarray:
    """Module paths in natural order → for each, True when the first component where it
    differs from the previous path differs in numbers (or chain letters) only (so their
    order is real)."""
    shapes = _ordinal_shapes(paths)
    out = np.zeros(len(paths), dtype=bool)
    for n in range(1, len(paths)):
        a, b = paths[n - 1].split("."), paths[n].split(".")
        for k, (x, y) in enumerate(zip(a, b, strict=False)):
            if x != y:
                out[n] = shapes[n - 1][k] == shapes[n][k]
                break
    return out


def _ordinal_shapes(paths: list[str]) -> list[list[str]]:
    """Module paths → each one's components with their ordinals as ``#``: a trailing number
    (``conv2``, ``3``), and a single letter among siblings whose letters are consecutive
    (``f.a, f.b, f.c``; not ``attn.q, attn.k, attn.v``), which sorts in its real order too."""
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
        [
            "#"
            if len(c) == 1 and "a" <= c <= "z" and tuple(parts[:n]) in chains
            else _TRAILING.sub("#", c)
            for n, c in enumerate(parts)
        ]
        for parts in split
    ]


_TRAILING = re.compile(r"\d+$")
"""A component's trailing number (``conv2``, ``3``): an index; numbers inside a name
(``branch5x5``, ``conv2d``) are part of it."""


def _stat_buffers(infos: list[TensorInfo], locals_: list[str]) -> list[bool]:
    """TensorInfos + their local names → for each, True for a buffer that holds no learned
    values: a buffer (known, or guessed from its local name) not named like a learned
    tensor and not a float table (:func:`_table_buffer`). Decided once per distinct
    (buffer flag, local names, dtype, 2-D table shape or not)."""
    seen: dict[tuple, bool] = {}
    out = []
    for info, local in zip(infos, locals_, strict=True):
        shape = info.shape
        own = info.name.rpartition(".")[2]  # what tensor_is_buffer guesses from
        key = (info.is_buffer, own, local, info.dtype, len(shape) == 2 and min(shape) > 1)
        found = seen.get(key)
        if found is None:
            found = seen[key] = (
                tensor_is_buffer(info) and local not in LEARNED_NAMES and not _table_buffer(info)
            )
        out.append(found)
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


def _sibling_ranks(paths: list[str]) -> list[int]:
    seen: dict[str, int] = {}
    out = []
    for p in paths:
        parent = p.rpartition(".")[0]
        out.append(seen.get(parent, 0))
        seen[parent] = out[-1] + 1
    return out


def _index_keys(
    templates: list[str], ranked: list[tuple[int, ...]]
) -> list[tuple[tuple[int, ...], int]]:
    distinct: dict[str, list[set[int]]] = {}
    for tpl, r in zip(templates, ranked, strict=True):
        slots = distinct.setdefault(tpl, [set() for _ in r])
        for pos, v in enumerate(r[: len(slots)]):
            slots[pos].add(v)
    primary_slot = {
        tpl: max(range(len(slots)), key=lambda p: (len(slots[p]), -p)) if slots else -1
        for tpl, slots in distinct.items()
    }
    out = []
    for tpl, r in zip(templates, ranked, strict=True):
        p = primary_slot[tpl]
        out.append((r, r[p] if 0 <= p < len(r) else -1))
    return out
