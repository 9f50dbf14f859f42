"""Shifted blocks: numbered blocks whose pairs land in their neighbours.

When one numbered source block's pairs land in two or more target blocks (or one target
block takes pairs of several source blocks) and the same part of a block (``mlp.fc1.weight``)
moves by different block offsets in different blocks, a block was inserted or dropped
mid-stack: equal names and indices do not settle where that block's tensors belong, only
positions placed them. :func:`record_block_shifts` marks the pairs of such blocks
``block_shift`` 1.0 in their breakdown, so :func:`~weightmapper.engine.margins.is_ambiguous`
labels them ``ambiguous``, never ``high``. A regrouping that moves a part by the same offset
in every block (a downsampling layer at the end of stage N read as the start of stage N + 1)
is a convention, not a shift, and stays as it is. Linear in the number of pairs.
"""

from __future__ import annotations

import re
from collections import defaultdict

from weightmapper.engine.candidates import Proposal

NAMED_SIBLINGS = 3
"""Parts like ``encoder_layer_2`` count as numbered blocks when at least this many siblings
share their stem (``ln_1`` and ``ln_2`` are two norms of one block, not blocks)."""
_NUMBERED = re.compile(r"^(.*\D)?(\d+)$")


def numbered_blocks(keys: list[str]) -> dict[str, tuple[str, int]]:
    """Tensor keys of one side → each key's numbered block and its number: its path up to and
    including its first numbered part before the tensor's own name (``layers.3``, ``h.3``, or
    a named part such as ``encoder_layer_3`` with :data:`NAMED_SIBLINGS` numbered siblings).
    Keys with no numbered block are left out."""
    # A module's tensors share its block: each distinct module path is read once, and each
    # distinct path component matched once (a deep stack repeats a few names in every block).
    module_of = [key.rpartition(".")[0] if "." in key else None for key in keys]
    split = {m: m.split(".") for m in dict.fromkeys(module_of) if m is not None}
    numbered: dict[str, tuple[str, str] | None] = {}
    for parts in split.values():
        for part in parts:
            if part not in numbered:
                m = _NUMBERED.match(part)
                numbered[part] = None if m is None else (m.group(1) or "", m.group(2))
    # each numbered part of each module: (its position, stem, number)
    found_in: dict[str, list[tuple[int, str, str]]] = {}
    stems: dict[tuple[str, str], set[str]] = defaultdict(set)
    for module, parts in split.items():
        hits = found_in[module] = [
            (n, *found) for n, part in enumerate(parts) if (found := numbered[part]) is not None
        ]
        for n, stem, number in hits:
            if stem:
                stems[(".".join(parts[:n]), stem)].add(number)
    block_of: dict[str, tuple[str, int]] = {}
    for module, hits in found_in.items():
        parts = split[module]
        for n, stem, number in hits:
            if stem and len(stems[(".".join(parts[:n]), stem)]) < NAMED_SIBLINGS:
                continue
            block_of[module] = (".".join(parts[: n + 1]), int(number))
            break
    return {
        key: block_of[module]
        for key, module in zip(keys, module_of, strict=True)
        if module is not None and module in block_of
    }


def record_block_shifts(proposals: list[Proposal]) -> None:
    """Proposals with margins recorded → each pair of a shifted block that has a same-shape
    alternative (``runner_up`` above 0) gains ``block_shift`` 1.0 in its breakdown.

    A source block is shifted when its pairs land in two or more target blocks and a part of
    it moves by another block offset in some other block; a target block likewise when it
    takes pairs of several source blocks. Buffers that follow a pair take its mark.
    """
    lead = [p for p in proposals if p.follows is None]
    src = numbered_blocks([p.source for p in lead])
    tgt = numbered_blocks([p.target for p in lead])
    pairs = [(p, src[p.source], tgt[p.target]) for p in lead if p.source in src and p.target in tgt]
    # every pair of one block pair is one link: the groups depend on the distinct links only
    links = dict.fromkeys((("s", s[0]), ("t", t[0])) for _, s, t in pairs)
    crossing = _crossing(list(links))
    if not crossing:
        return  # no group of blocks crosses both ways: nothing shifted, nothing to mark
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


def _crossing(links: list[tuple[tuple[str, str], tuple[str, str]]]) -> set[tuple[str, str]]:
    """Links between source and target blocks → the blocks of groups (linked blocks, a
    union-find) holding two or more blocks on each side: a pure split or merge is a
    regrouping (stages nesting blocks differently), only a group crossing both ways shifts."""
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(x: tuple[str, str]) -> tuple[str, str]:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression keeps the work near linear
            parent[x], x = root, parent[x]
        return root

    for a, b in links:
        parent.setdefault(a, a)
        parent.setdefault(b, b)
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for node in parent:
        counts[find(node)][node[0] == "t"] += 1
    return {node for node in parent if min(counts[find(node)]) >= 2}
