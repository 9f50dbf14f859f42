"""Columns of proposals: one numpy array per breakdown signal, for work done on every pair.

A 100k-tensor checkpoint makes 100k proposals; reading a signal out of each breakdown dict
once into a float64 column, and computing margins, evidence and probabilities on columns,
costs one pass per signal instead of Python arithmetic per pair. Each column holds exactly
the floats ``float(breakdown.get(key, default))`` gives, so results stay bit for bit the
same as the per-pair formulas they replace.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from itertools import chain
from operator import itemgetter, methodcaller

import numpy as np


def column(breakdowns: Sequence[Mapping[str, float]], key: str, default: float = 0.0) -> np.ndarray:
    """Breakdowns + signal name (+ value when absent) → float64 array, one value per breakdown."""
    return np.fromiter(
        (bd.get(key, default) for bd in breakdowns), dtype=np.float64, count=len(breakdowns)
    )


def columns(
    breakdowns: Sequence[Mapping[str, float]] | Breakdowns,
    keys: Sequence[str] | Mapping[str, float],
    default: float = 0.0,
) -> dict[str, np.ndarray]:
    """Breakdowns (or a :class:`Breakdowns` read of them) + signal names (or names → their
    values when absent) → {name: :func:`column`}."""
    table = breakdowns if isinstance(breakdowns, Breakdowns) else Breakdowns(breakdowns)
    if isinstance(keys, Mapping):
        return {k: table.column(k, d) for k, d in keys.items()}
    return {k: table.column(k, default) for k in keys}


class Breakdowns:
    """Breakdown dicts read once, every signal of every pair in one pass; columns are then
    cut out of that read.

    Proposals' breakdowns nearly all hold the same signals (the same stages wrote them), a
    few hold more. The signals of the most common count (those of the first breakdown that
    has that many) are read from every breakdown holding at least as many, through one
    getter of those signals: a row of values per breakdown, whatever order each dict holds
    them in. The breakdowns of another count are also read as their values in key order,
    grouped by key sequence. Each group is one block, a row per breakdown and a column per
    signal: a signal's column is a column of each block (of the first alone, almost always),
    not a gather per pair. Reading 28 columns costs one pass over the dicts, not 28.
    """

    def __init__(self, breakdowns: Sequence[Mapping[str, float]]) -> None:
        n = len(breakdowns)
        self.n = n
        # per group: the rows it holds (None: every row), its signals, their values as a block
        self._blocks: list[tuple[np.ndarray | None, tuple[str, ...], np.ndarray]] = []
        sizes = np.fromiter(map(len, breakdowns), np.int64, n)
        size = int(np.bincount(sizes).argmax()) if n else 0
        common = tuple(breakdowns[int(np.argmax(sizes == size))]) if n else ()
        # the other counts: read by key sequence (those with more for their other signals)
        rest = np.flatnonzero(sizes != size)
        if size > 1:  # a getter of one signal gives a value, not a row
            fits = np.flatnonzero(sizes >= size)
            rows = None if len(fits) == n else fits
            chosen = (
                breakdowns if rows is None else list(map(breakdowns.__getitem__, fits.tolist()))
            )
            try:
                values = np.fromiter(
                    chain.from_iterable(map(itemgetter(*common), chosen)),
                    np.float64,
                    len(chosen) * size,
                )
            except KeyError:  # not every one holds those signals: all read by key sequence
                rest = np.arange(n)
            else:
                self._blocks.append((rows, common, values.reshape(len(chosen), size)))
        else:
            rest = np.arange(n)
        if len(rest):
            self._read_by_sequence(list(map(breakdowns.__getitem__, rest.tolist())), rest)
        # signal → its column in each block (-1: absent there)
        self._slot: dict[str, list[int]] = {}
        for code, (_, keys, _) in enumerate(self._blocks):
            for pos, key in enumerate(keys):
                self._slot.setdefault(key, [-1] * len(self._blocks))[code] = pos

    def _read_by_sequence(self, breakdowns: list[Mapping[str, float]], rows: np.ndarray) -> None:
        """Breakdowns + their row numbers → a block per distinct key sequence among them,
        each breakdown read as its values in key order."""
        n = len(breakdowns)
        sequences = list(map(tuple, breakdowns))
        layouts = {keys: code for code, keys in enumerate(dict.fromkeys(sequences))}
        layout = np.fromiter(map(layouts.__getitem__, sequences), np.int64, n)
        sizes = np.fromiter(map(len, sequences), np.int64, n)
        start = np.cumsum(sizes) - sizes  # where each breakdown's values begin
        values = np.fromiter(
            chain.from_iterable(map(methodcaller("values"), breakdowns)),
            np.float64,
            int(sizes.sum()),
        )
        whole = len(rows) == self.n
        for code, keys in enumerate(layouts):
            mine = np.flatnonzero(layout == code)
            at = start[mine][:, None] + np.arange(len(keys))
            self._blocks.append(
                (None if whole and len(layouts) == 1 else rows[mine], keys, values[at])
            )

    def __len__(self) -> int:
        return self.n

    def column(self, key: str, default: float = 0.0) -> np.ndarray:
        """Signal name (+ value when absent) → float64 array, one value per breakdown: what
        :func:`column` gives."""
        slots = self._slot.get(key)
        if slots is None:
            return np.full(self.n, default, np.float64)
        rows, _, block = self._blocks[0]
        if rows is None and slots[0] >= 0:
            # a signal every breakdown holds: the other blocks repeat what this one read
            return block[:, slots[0]].copy()
        out = np.full(self.n, default, np.float64)
        for (rows, _, block), pos in zip(self._blocks, slots, strict=True):
            if pos >= 0:
                out[rows] = block[:, pos]
        return out


def weighted_mean(
    cols: Mapping[str, np.ndarray], weights: Mapping[str, float], total: float
) -> np.ndarray:
    """Signal columns + weights (in their order) + their total → the weighted mean of each
    row, summed left to right in float64 as ``sum(w[k] * x[k] for k in w) / total`` is."""
    n = len(next(iter(cols.values()))) if cols else 0
    acc = np.zeros(n, np.float64)
    for k, weight in weights.items():
        acc = acc + weight * np.asarray(cols[k], np.float64)
    return acc / total


def distinct_pairs(
    code_a: np.ndarray, code_b: np.ndarray, n_b: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-length codes of two sides (``code_b`` below ``n_b``) → (first code, second code
    of each distinct pair in ascending order of ``a * n_b + b``, the distinct pair of each
    input pair): ``np.unique(..., return_inverse=True)``, without sorting where the table of
    all code pairs is small (a few distinct names against a few)."""
    joint = code_a * n_b + code_b
    n_a = int(code_a.max(initial=-1)) + 1
    if len(joint) and n_a * n_b <= max(4 * len(joint), 1 << 16):
        present = np.zeros(n_a * n_b, bool)
        present[joint] = True
        uniq = np.flatnonzero(present)
        back = (np.cumsum(present) - 1)[joint]
    else:
        uniq, back = np.unique(joint, return_inverse=True)
        back = back.reshape(-1)
    ka, kb = np.divmod(uniq, n_b)
    return ka, kb, back


class IndexColumns:
    """Index keys of one side's groups (dense-ranked layer indices, primary index) as arrays:
    depth and primary index per group, and the ranks slot by slot (one row per slot, padded
    with 0), so the index agreement of many pairs of groups is array arithmetic."""

    def __init__(self, keys: Sequence[tuple[tuple[int, ...], int]]) -> None:
        n = len(keys)
        ranks = list(map(itemgetter(0), keys))
        self.depth = np.fromiter(map(len, ranks), np.int64, n)
        self.primary = np.fromiter(map(itemgetter(1), keys), np.int64, n)
        # every key's ranks in one flat run, each placed at (its slot, its group): one
        # scatter instead of a slice assignment per group
        flat = np.fromiter(chain.from_iterable(ranks), np.int64, int(self.depth.sum()))
        group = np.repeat(np.arange(n), self.depth)
        slot = np.arange(len(flat)) - np.repeat(np.cumsum(self.depth) - self.depth, self.depth)
        self.slots = np.zeros((int(self.depth.max(initial=0)), n), np.int64)
        """Slot × group → rank (0 past a group's depth): each slot's ranks contiguous."""
        self.slots[slot, group] = flat

    @classmethod
    def from_arrays(cls, depth: np.ndarray, primary: np.ndarray, ranks: np.ndarray) -> IndexColumns:
        """Per group: number of indices, primary index, and group × slot ranks padded with 0
        → the IndexColumns ``IndexColumns(keys)`` builds from the same keys."""
        out = cls.__new__(cls)
        out.depth, out.primary = depth, primary
        out.slots = np.ascontiguousarray(ranks.T)
        return out

    def similarity(self, other: IndexColumns, ga: np.ndarray, gb: np.ndarray) -> np.ndarray:
        """Groups of this side + groups of ``other`` (equal length) → index agreement of each
        pair (float64), :func:`~weightmapper.engine.primitives.index_sim_one` on arrays: 1
        equal; 0.5 when one has no indices; for equal depths half the share of equal slots;
        else 0.8 for an equal primary index, 0.2 otherwise.

        The value depends on four small numbers per pair (the two depths, the equal slots,
        whether the primary indices agree), so it is read from a table of every combination
        the formula gives, instead of evaluating the formula's branches on every pair.
        """
        deep_a, deep_b = len(self.slots), len(other.slots)
        depth = min(deep_a, deep_b)
        # the table's layout (depth a, depth b, equal slots, equal primary), its first two
        # coordinates worked out per group
        code = (self.depth * ((deep_b + 1) * (depth + 1) * 2))[ga]
        code += (other.depth * ((depth + 1) * 2))[gb]
        code += self.primary[ga] == other.primary[gb]
        # a slot past a group's depth holds a value no rank of either side has (a different
        # one per side), so it never counts as equal
        low = min(self.slots.min(initial=0), other.slots.min(initial=0))
        for slot in range(depth):
            a = np.where(self.depth > slot, self.slots[slot], low - 1)
            b = np.where(other.depth > slot, other.slots[slot], low - 2)
            code += 2 * (a[ga] == b[gb])
        return _index_table(deep_a, deep_b)[code]


@cache
def _index_table(depth_a: int, depth_b: int) -> np.ndarray:
    """Deepest index key of each side → flat float64 table of the index agreement over
    (depth a, depth b, equal slots, equal primary index), in
    :meth:`IndexColumns.similarity`'s layout; each entry the same float64 arithmetic as the
    per-pair formula. (Slots equal past the shorter depth are not counted; the formula
    reads them only for equal depths.)"""
    la, lb, eq, same_primary = (
        x.ravel()
        for x in np.meshgrid(
            np.arange(depth_a + 1),
            np.arange(depth_b + 1),
            np.arange(min(depth_a, depth_b) + 1),
            np.array([False, True]),
            indexing="ij",
        )
    )
    same_len = la == lb
    vals = np.where(same_primary, 0.8, 0.2)
    vals = np.where(same_len, 0.5 * eq / np.maximum(la, 1), vals)
    vals = np.where((la == 0) != (lb == 0), 0.5, vals)
    return np.where(same_len & (eq == la), 1.0, vals)
