"""Module-path values computed from the parent's: each distinct prefix is read once.

Several evidence readers ask one question of every module path: the innermost word of a
vocabulary it contains (:mod:`weightmapper.engine.evidence`,
:mod:`weightmapper.engine.unique_roles`), its first numbered component
(:mod:`weightmapper.engine.block_shift`). A path's answer follows from its parent's answer
and its own last component, and a large checkpoint repeats a few parents thousands of times
(``layers.7.attn`` holds ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``), so
:func:`fold_paths` computes each distinct prefix once and each path from its parent's value.

A question about words alone is the same for every path of one chain of numbered siblings
(``layers.0.attn.q_proj``, ``layers.1.attn.q_proj``, …; :attr:`Side.group_chain`), whose
paths differ only in ordinal components, none of which is a word: :func:`group_words` reads
one path per chain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import numpy as np

from weightmapper.engine.side import Side

V = TypeVar("V")

Step = Callable[[V, str, str], V]
"""(the parent path's value, the path, its last component) → the path's value. The last
component is the whole path for a first component (no dot)."""


def fold_paths(paths: Iterable[str], step: Step[V], root: V) -> dict[str, V]:
    """Module paths + :data:`Step` + the value of the root path ``""`` → the value of every
    path and of every prefix of one, each computed once from its parent's (a path's parent
    is the part before its last dot)."""
    done: dict[str, V] = {"": root}

    def value(path: str) -> V:
        parent, _, own = path.rpartition(".")
        above = done[parent] if parent in done else value(parent)
        got = done[path] = step(above, path, own)
        return got

    for path in paths:
        if path not in done:
            parent, _, own = path.rpartition(".")
            above = done[parent] if parent in done else value(parent)
            done[path] = step(above, path, own)
    return done


def ordinal_free(words: Iterable[str]) -> bool:
    """Words compared with lower-cased path components → True when none of them can be an
    ordinal component of a chain of numbered siblings: none ends with a digit (``conv2``,
    ``3``), is a single letter ``a``–``z`` (``f.a``, ``f.b``) or holds ``#`` (the mark such
    components share in a chain)."""
    return not any(
        w[-1:].isdecimal() or "#" in w or (len(w) == 1 and "a" <= w <= "z") for w in words
    )


def group_words(
    side: Side, step: Step[V], root: V, vocabulary: Iterable[str]
) -> tuple[np.ndarray, list[V]]:
    """Side + a :data:`Step` that reads no component but the words of a vocabulary + the
    root's value + that vocabulary → (value number per group, the values).

    The groups of one chain of numbered siblings share the value of its first group's path
    when the vocabulary is :func:`ordinal_free` (the chain's paths then differ only in
    components that are no word); every other group's path is folded on its own."""
    paths = side.group_paths
    chain = side.group_chain
    if not ordinal_free(vocabulary):
        values = fold_paths(paths, step, root)
        return np.arange(len(paths), dtype=np.int64), [values[p] for p in paths]
    lone = np.flatnonzero(chain < 0)
    chained = np.flatnonzero(chain >= 0)
    _, first, back = np.unique(chain[chained], return_index=True, return_inverse=True)
    # the groups whose paths are read: every lone one, then the first of each chain
    read = np.concatenate([lone, chained[first]])
    codes = np.empty(len(paths), np.int64)
    codes[lone] = np.arange(len(lone))
    codes[chained] = len(lone) + back.reshape(-1)
    read_paths = [paths[g] for g in read.tolist()]
    values = fold_paths(read_paths, step, root)
    return codes, [values[p] for p in read_paths]
