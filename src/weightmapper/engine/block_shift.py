"""Shifted blocks: numbered blocks whose pairs land in their neighbours.

When one numbered source block's pairs land in two or more target blocks (or one target
block takes pairs of several source blocks) and the same part of a block (``mlp.fc1.weight``)
moves by different block offsets in different blocks, a block was inserted or dropped
mid-stack: equal names and indices do not settle where that block's tensors belong, only
positions placed them. :func:`record_block_shifts` marks the pairs of such blocks
``block_shift`` 1.0 in their breakdown, so :func:`~weightmapper.engine.margins.is_ambiguous`
labels them ``ambiguous``, never ``high``. A regrouping that moves a part by the same offset
in every block (a downsampling layer at the end of stage N read as the start of stage N + 1)
is a convention, not a shift, and stays as it is. Linear in the number of pairs: nothing
below a path's first bare number changes its block, so the paths are cut there by one
regular expression over all of them (:func:`bare_heads`) and each distinct head is read
once, from its parent's reading; the groups of linked blocks are the connected components
of a sparse graph.
"""

from __future__ import annotations

import re
from collections import defaultdict
from itertools import repeat
from operator import itemgetter

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from weightmapper.engine.candidates import Proposal
from weightmapper.engine.collect import PairColumns
from weightmapper.engine.names import distinct_codes
from weightmapper.engine.path_fold import fold_paths
from weightmapper.engine.side import Side
from weightmapper.engine.state import MatchState

NAMED_SIBLINGS = 3
"""Parts like ``encoder_layer_2`` count as numbered blocks when at least this many siblings
share their stem (``ln_1`` and ``ln_2`` are two norms of one block, not blocks)."""
_NUMBERED = re.compile(r"^(.*\D)?(\d+)$")
_FIRST = itemgetter(0)


def numbered_blocks(keys: list[str]) -> dict[str, tuple[str, int]]:
    """Tensor keys of one side → each key's numbered block and its number: its path up to and
    including its first numbered part before the tensor's own name (``layers.3``, ``h.3``, or
    a named part such as ``encoder_layer_3`` with :data:`NAMED_SIBLINGS` numbered siblings).
    Keys with no numbered block are left out."""
    return {key: block for key, block in zip(keys, key_blocks(keys), strict=True) if block}


Block = tuple[str, int]
"""A numbered block: its path and its number."""
_Hit = tuple[str, str, str, Block]
"""A named numbered part of a module path (``encoder_layer_3``): (the path above it, its stem,
its number as written, the block it makes when it counts as one)."""
_Parts = tuple[tuple[_Hit, ...], Block | None]
"""What a module path says of its block: the named numbered parts before its first bare
number, the block that bare number ends (``layers.3``) or None."""


def key_blocks(keys: list[str]) -> list[Block | None]:
    """Tensor keys of one side → each key's numbered block and its number, or None
    (:func:`numbered_blocks`)."""
    # a key's module path: the part before its last dot (the root for a key without one)
    modules = list(map(_FIRST, map(str.rpartition, keys, repeat("."))))
    code, blocks = path_blocks(modules)
    return [blocks[c] if c >= 0 else None for c in code.tolist()]


def side_blocks(side: Side, rows: np.ndarray) -> tuple[np.ndarray, list[Block]]:
    """Side + key numbers → (block number per key, -1 for none; the distinct blocks) of
    :func:`key_blocks` for those keys (a key's module path is its group's path, as
    :meth:`~weightmapper.inventory.Inventory.group_of` reads it).

    A module's block is its parent's head (:func:`bare_heads`) when the parent has a bare
    number, else its own path's: so only the distinct parents of the keys' groups are cut,
    one group standing for each (``layers.3.attn`` holds ``q_proj``, ``k_proj``, … ;
    :attr:`Side.group_parent` codes them), and only the groups whose parent has no bare
    number are read on their own."""
    groups = side.group[rows]
    read = np.flatnonzero(np.bincount(groups, minlength=len(side.group_paths)))
    paths = side.group_paths
    # one group stands for each parent path (siblings share its code)
    codes = side.group_parent[read]
    stand = np.full(int(codes.max(initial=-1)) + 1, -1, np.int64)
    stand[codes] = read
    parents = np.flatnonzero(stand >= 0)
    heads = bare_heads(list(map(paths.__getitem__, stand[parents].tolist())), of_parent=True)
    if heads is None:  # a path holds a line break: every path read whole
        code, blocks = path_blocks(list(map(paths.__getitem__, read.tolist())))
    else:
        cut = np.fromiter(map(bool, heads), bool, len(heads))
        slot = np.zeros(len(stand), np.int64)  # parent code → its number among the parents
        slot[parents] = np.arange(len(parents))
        under = cut[slot[codes]]  # the groups whose parent has a bare number
        alone = read[~under]
        # the heads read: each cut parent's, then each other group's own path
        head_code, blocks = _head_blocks(
            [h for h in heads if h], list(map(paths.__getitem__, alone.tolist()))
        )
        entry = np.empty(len(read), np.int64)
        entry[under] = (np.cumsum(cut) - 1)[slot[codes[under]]]
        entry[~under] = int(cut.sum()) + np.arange(len(alone))
        code = head_code[entry]
    per_group = np.full(len(paths), -1, np.int64)
    per_group[read] = code
    return per_group[groups], blocks


def path_blocks(paths: list[str]) -> tuple[np.ndarray, list[Block]]:
    """Module paths of one side's keys → (block number per path, -1 for none; the distinct
    blocks): each path's block as :func:`numbered_blocks` reads it.

    Nothing below a path's first bare number changes its block (``layers.3.attn.q_proj``
    and ``layers.3.mlp`` read as ``layers.3`` does), so the paths are cut there
    (:func:`bare_heads`) and only the distinct heads are read: a deep stack has thousands
    of modules but one head per block."""
    heads = bare_heads(paths)
    if heads is None:  # a path holds a line break: every path read whole
        return _head_blocks([], paths)
    cut = np.fromiter(map(bool, heads), bool, len(heads))
    code, blocks = _head_blocks(
        [h for h in heads if h], [p for h, p in zip(heads, paths, strict=True) if not h]
    )
    order = np.empty(len(paths), np.int64)  # each path's place among the cut, then the whole
    order[cut] = np.arange(int(cut.sum()))
    order[~cut] = int(cut.sum()) + np.arange(len(paths) - int(cut.sum()))
    return code[order], blocks


_BARE_HEAD = re.compile(r"^(?:[^.\n]*\.)*?\d+(?=\.|$)|^", re.MULTILINE)
"""A line's path up to and including its first component that is a bare number, else the
empty string: ``\\d`` as in :data:`_NUMBERED`, so a bare number here is one there."""
_PARENT_BARE_HEAD = re.compile(r"^(?:[^.\n]*\.)*?\d+(?=\.)|^", re.MULTILINE)
""":data:`_BARE_HEAD` of a line's parent path: the bare number is not the last component."""


def bare_heads(paths: list[str], *, of_parent: bool = False) -> list[str] | None:
    """Module paths → each one's part up to and including its first component that is a bare
    number (``layers.3`` of ``layers.3.attn.q_proj``), ``""`` when it has none; with
    ``of_parent``, that of each one's parent path (its last component left out). One
    regular-expression pass over all of them; None when a path holds a line break (it would
    read as two lines)."""
    pattern = _PARENT_BARE_HEAD if of_parent else _BARE_HEAD
    heads = pattern.findall("\n".join(paths)) if paths else []
    return heads if len(heads) == len(paths) else None


def _head_blocks(cut: list[str], whole: list[str]) -> tuple[np.ndarray, list[Block]]:
    """Paths cut after their first bare number (:func:`bare_heads`) + paths read whole →
    (block number of each, the cut ones first, -1 for none; the distinct blocks), each
    distinct path read once."""
    cut_code, cut_heads = distinct_codes(cut)
    whole_code, whole_paths = distinct_codes(whole)
    parts = _cut_parts(cut_heads) + _path_parts(whole_paths)
    ids: dict[Block, int] = {}
    per_path = [-1 if b is None else ids.setdefault(b, len(ids)) for b in _chosen(parts)]
    per = np.array(per_path, np.int64)
    return np.concatenate([per[cut_code], per[len(cut_heads) + whole_code]]), list(ids)


def _path_blocks(paths: list[str]) -> list[Block | None]:
    """Module paths → each one's numbered block, or None, read path by path (the rule the
    readings per head follow)."""
    return _chosen(_path_parts(paths))


def _cut_parts(heads: list[str]) -> list[_Parts]:
    """Distinct paths that end in their first bare number → what :func:`_path_parts` reads
    of each: the named parts of the path above that number (read once per distinct path
    above: ``layers`` for every ``layers.N``) and the block that number ends."""
    split = list(map(str.rpartition, heads, repeat(".")))
    code, aboves = distinct_codes(list(map(_FIRST, split)))
    hits = [p[0] for p in _path_parts(aboves)]
    return [
        (hits[c], (head, int(number)))
        for c, head, (_a, _dot, number) in zip(code.tolist(), heads, split, strict=True)
    ]


def _path_parts(paths: list[str]) -> list[_Parts]:
    """Module paths → what each says of its block (:data:`_Parts`): each distinct path and
    each prefix of one read once, from its parent's reading (:func:`fold_paths`)."""
    numbered: dict[str, tuple[str, str] | None] = {}

    def step(parent: _Parts, path: str, own: str) -> _Parts:
        if parent[1] is not None:
            return parent  # below a bare number: that number is the block
        found = numbered.get(own, False)
        if found is False:
            m = _NUMBERED.match(own)
            found = numbered[own] = None if m is None else (m.group(1) or "", m.group(2))
        if found is None:
            return parent
        stem, number = found
        block = (path, int(number))
        if not stem:
            return parent[0], block
        above = path.rpartition(".")[0]
        return (*parent[0], (above, stem, number, block)), None

    return list(map(fold_paths(paths, step, ((), None)).__getitem__, paths))


def _chosen(parts: list[_Parts]) -> list[Block | None]:
    """What paths say of their blocks (:data:`_Parts`) → each one's block, or None: a named
    part counts as a block among enough numbered siblings of its stem."""
    named = {p for p in parts if p[0]}
    if not named:
        return [p[1] for p in parts]
    # A named part below a bare number never decides (the bare number above it does), so
    # only the named parts above the first bare number are counted.
    stems: dict[tuple[str, str], set[str]] = defaultdict(set)
    for hits, _bare in named:
        for above, stem, number, _block in hits:
            stems[(above, stem)].add(number)
    chosen: dict[_Parts, Block | None] = {}
    for p in named:
        counted = (b for above, stem, _n, b in p[0] if len(stems[(above, stem)]) >= NAMED_SIBLINGS)
        chosen[p] = next(counted, p[1])
    return [chosen[p] if p[0] else p[1] for p in parts]


def record_block_shifts(
    proposals: list[Proposal],
    st: MatchState | None = None,
    columns: PairColumns | None = None,
) -> None:
    """Proposals with margins recorded (+ their MatchState and :class:`PairColumns`) → each
    pair of a shifted block that has a same-shape alternative (``runner_up`` above 0) gains
    ``block_shift`` 1.0 in its breakdown.

    A source block is shifted when its pairs land in two or more target blocks and a part of
    it moves by another block offset in some other block; a target block likewise when it
    takes pairs of several source blocks. Buffers that follow a pair take its mark. With the
    state and columns, the blocks are read per group of each side (:func:`side_blocks`);
    without, from the proposals' keys (:func:`key_blocks`).
    """
    if st is None or columns is None:
        lead = np.fromiter((p.follows is None for p in proposals), bool, len(proposals))
        lead = np.flatnonzero(lead)
        led = [proposals[n] for n in lead.tolist()]
        s_id, s_blocks = path_blocks([p.source.rpartition(".")[0] for p in led])
        t_id, t_blocks = path_blocks([p.target.rpartition(".")[0] for p in led])
    else:
        lead = np.flatnonzero(columns.lead)
        s_id, s_blocks = side_blocks(st.s, columns.source[lead])
        t_id, t_blocks = side_blocks(st.t, columns.target[lead])
    both = (s_id >= 0) & (t_id >= 0)
    if not both.any():
        return  # no pair joins two numbered blocks
    # every pair of one block pair is one link: the groups depend on the distinct links only
    n_s, n_t = len(s_blocks), len(t_blocks)
    links = np.unique(s_id[both] * n_t + t_id[both])
    crossing = _crossing(links // n_t, links % n_t, n_s, n_t)
    if not crossing.any():
        return  # no group of blocks crosses both ways: nothing shifted, nothing to mark
    across = {("s", b[0]) for b, c in zip(s_blocks, crossing[:n_s], strict=True) if c}
    across |= {("t", b[0]) for b, c in zip(t_blocks, crossing[n_s:], strict=True) if c}
    pairs = [
        (proposals[n], s_blocks[s], t_blocks[t])
        for n, s, t in zip(
            lead[both].tolist(), s_id[both].tolist(), t_id[both].tolist(), strict=True
        )
    ]
    _mark_shifted(proposals, pairs, across)


def _mark_shifted(
    proposals: list[Proposal],
    pairs: list[tuple[Proposal, Block, Block]],
    crossing: set[tuple[str, str]],
) -> None:
    """Proposals + the lead pairs with both blocks + the blocks of crossing groups → the pairs
    of shifted blocks marked (:func:`record_block_shifts`)."""
    shifted: set[tuple[str, str]] = set()
    for side, label in ((0, "s"), (1, "t")):  # source blocks split, target blocks merged
        reach: dict[str, set[str]] = defaultdict(set)
        offsets: dict[str, set[int]] = defaultdict(set)
        parts: list[tuple[str, str]] = []
        for p, s, t in pairs:
            own, other, key = (s, t, p.source) if side == 0 else (t, s, p.target)
            part = key[len(own[0]) + 1 :]  # the key inside its block: the same in every block
            reach[own[0]].add(other[0])
            offsets[part].add(t[1] - s[1])
            parts.append((own[0], part))
        for block, part in parts:
            if len(reach[block]) >= 2 and len(offsets[part]) >= 2 and (label, block) in crossing:
                shifted.add((label, block))
    marked: set[str] = set()
    for p, s, t in pairs:
        hit = ("s", s[0]) in shifted or ("t", t[0]) in shifted
        if hit and float(p.breakdown.get("runner_up", 0.0)) > 0.0:
            p.breakdown["block_shift"] = 1.0
            marked.add(p.source)
    for p in proposals:
        if p.follows is not None and p.follows in marked:
            p.breakdown["block_shift"] = 1.0


def _crossing(a: np.ndarray, b: np.ndarray, n_a: int, n_b: int) -> np.ndarray:
    """Links between source blocks ``a`` and target blocks ``b`` (block numbers below n_a and
    n_b) → for every source block, then every target block, True when it lies in a group of
    linked blocks (a connected component) holding two or more blocks on each side: a pure
    split or merge is a regrouping (stages nesting blocks differently), only a group crossing
    both ways shifts."""
    n = n_a + n_b
    graph = coo_matrix((np.ones(len(a), np.int8), (a, n_a + b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    side_a = np.bincount(label[:n_a], minlength=n)
    side_b = np.bincount(label[n_a:], minlength=n)
    return np.minimum(side_a, side_b)[label] >= 2
