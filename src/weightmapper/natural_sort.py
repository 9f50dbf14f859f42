"""Natural sort of names: embedded numbers ordered by value (``layer2`` before ``layer10``).

:func:`natural_key` is the sort key; :func:`natural_order` sorts many names at once the same
way. A large checkpoint's names are a few templates (the name with its numbers taken out)
repeated thousands of times, so the text of each template is ranked once and the names are
sorted as rows of ranks by numpy, instead of one key tuple per name compared in Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

_DIGIT_RUNS = re.compile(r"(\d+)")
_NUMBER = "\x00"
"""Stands for a number in a template; names holding it are sorted by :func:`natural_key`."""
_SEPARATOR = "\x01"
"""Joins names so all are read in a few passes over one string; names holding it are
sorted by :func:`natural_key`."""
MAX_NUMBERS = 32
"""Most numbers per name sorted as rows of ranks (a row has a column per text and number);
names with more are sorted by :func:`natural_key`."""
_DIGIT_TO_NUMBER = bytes.maketrans(b"0123456789", _NUMBER.encode() * 10)
"""Every ASCII digit → the number mark: a name's template, a mark per digit."""
_NUMBER_RUNS = re.compile(_NUMBER.encode() + b"+")
_DIGITS_ONLY = bytes(c if c in b"0123456789" else ord(" ") for c in range(256))
"""Every byte but an ASCII digit → a space: the digit runs, split on spaces."""
_FEW = 64
"""Below this many names, sorting by :func:`natural_key` is as fast."""


def natural_key(text: str) -> tuple[str | int, ...]:
    """``layer10.conv2`` → ``("layer", 10, ".conv", 2, "")``, a sort key that orders
    embedded numbers by value.

    Text and numbers alternate, text first (empty where the name starts or ends with a
    number), so two keys only ever compare text with text and a number with a number.
    """
    parts: list[str | int] = _DIGIT_RUNS.split(text)  # type: ignore[assignment]
    parts[1::2] = map(int, parts[1::2])
    return tuple(parts)


def natural_order(texts: Sequence[str]) -> list[int]:
    """Names → positions that sort them by :func:`natural_key`, equal keys in input order
    (``sorted(range(len(texts)), key=lambda i: natural_key(texts[i]))``).

    Each name is a row: the rank of each text part among all text parts, the rank of each
    number among all numbers (by value, so ``01`` and ``1`` tie), and -1 past its end (a
    key that is a prefix of another sorts first, as tuples do). A stable lexicographic sort
    of the rows is the order of the keys. Names are read all at once as ASCII bytes (where
    a digit is ``0``-``9`` alone); other names are sorted by :func:`natural_key`.
    """
    n = len(texts)
    joined = _SEPARATOR.join(texts)
    if n < _FEW or not joined.isascii() or _NUMBER in joined or joined.count(_SEPARATOR) != n - 1:
        return sorted(range(n), key=lambda i: natural_key(texts[i]))
    raw = joined.encode("ascii")
    templates = raw.translate(_DIGIT_TO_NUMBER).split(_SEPARATOR.encode())
    distinct = list(dict.fromkeys(templates))
    text_parts = [_NUMBER_RUNS.split(t) for t in distinct]
    counts = np.array([len(parts) - 1 for parts in text_parts], dtype=np.int64)
    most = int(counts.max())
    if most > MAX_NUMBERS:
        return sorted(range(n), key=lambda i: natural_key(texts[i]))
    # one row of text ranks per template, spread over the even columns (ASCII bytes sort as
    # their text does)
    text_rank = _ranks({p for parts in text_parts for p in parts}, key=None)
    rows = np.full((len(distinct), 2 * most + 1), -1, dtype=np.int64)
    for row, parts in zip(rows, text_parts, strict=True):
        row[0 : 2 * len(parts) : 2] = [text_rank[p] for p in parts]
    template_of = dict(zip(distinct, range(len(distinct)), strict=True))
    tid = np.fromiter(map(template_of.__getitem__, templates), dtype=np.int64, count=n)
    table = rows[tid]
    # numbers, name after name, into the odd columns
    numbers = raw.translate(_DIGITS_ONLY).split()
    number_rank = _ranks(set(numbers), key=int)
    ranked = np.fromiter(map(number_rank.__getitem__, numbers), dtype=np.int64, count=len(numbers))
    per_name = counts[tid]
    first = np.cumsum(per_name) - per_name
    for j in range(most):
        has = np.flatnonzero(per_name > j)
        table[has, 2 * j + 1] = ranked[first[has] + j]
    return np.lexsort(table.T[::-1]).tolist()  # the last key given is the primary one


def _ranks(values: set[bytes], key: type[int] | None) -> dict[bytes, int]:
    """Distinct byte strings (+ a key to compare them by) → each → its rank; equal keys
    share a rank (``01`` and ``1`` by value)."""
    ordered = sorted(values, key=key)
    out: dict[bytes, int] = {}
    rank, previous = -1, object()
    for value in ordered:
        k = value if key is None else key(value)
        if k != previous:
            rank, previous = rank + 1, k
        out[value] = rank
    return out
