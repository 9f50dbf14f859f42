"""Dotted names read many at a time: the components made of digits, found as arrays.

A 100,000-tensor checkpoint repeats a few dozen names that differ only in their block
numbers. Finding those numbers with a regular expression costs one match object per number;
here all names are one byte array, and the numbers are runs of digit bytes between two
separators, found with a few array operations.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

MAX_DIGITS = 18
"""The longest number read (any 18-digit number fits an int64)."""


class Numbers(NamedTuple):
    """The number components of a text, as :func:`number_components` finds them."""

    text: str
    """The text with each number component replaced by ``#``."""
    values: np.ndarray
    """The numbers' values in order (int64; empty unless asked for)."""
    plain: bool
    """True when no number is written with a leading zero (``07``): the text and the values
    then give back the original."""


def number_components(
    text: str, separators: str = ".", *, read_values: bool = True
) -> Numbers | None:
    """ASCII text of names joined by separators → its :class:`Numbers`: each component made
    only of digits ``0``-``9`` replaced by ``#``, the values of those components in order
    (if ``read_values``); None when the text is not ASCII or a number has more than
    :data:`MAX_DIGITS` digits.

    A component is what lies between two separators or a separator and an end of the text:
    ``a.12.b3.4`` → ``a.#.b3.#`` and 12, 4.
    """
    if not text.isascii():
        return None
    raw = np.frombuffer(text.encode("ascii"), np.uint8)
    n = len(raw)
    # One separator at each end, so every run of digits has a byte on either side.
    b = np.empty(n + 2, np.uint8)
    b[0] = b[-1] = ord(separators[0]) if separators else ord(".")
    b[1:-1] = raw
    digit = (b - ord("0")) < 10  # bytes below "0" wrap around to large values
    start = np.flatnonzero(digit[1:] & ~digit[:-1]) + 1  # first digit of each run
    end = np.flatnonzero(digit[:-1] & ~digit[1:])  # last digit of each run
    sep = np.zeros(256, bool)
    sep[list(separators.encode("ascii"))] = True
    whole = sep[b[start - 1]] & sep[b[end + 1]]
    start, end = start[whole], end[whole]
    length = end - start + 1
    if len(length) and int(length.max()) > MAX_DIGITS:
        return None
    values = np.zeros(len(start) if read_values else 0, np.int64)
    for k in range(int(length.max(initial=0)) if read_values else 0):
        more = length > k
        values[more] = values[more] * 10 + (b[start[more] + k] - ord("0"))
    # Keep the first digit of each number (as "#"), drop the rest: the digits after the
    # first of each number are numbered one after the other.
    rest = length - 1
    before = np.repeat(np.cumsum(rest) - rest, rest)  # digits dropped before this number's
    dropped = np.repeat(start + 1, rest) + (np.arange(int(rest.sum())) - before)
    keep = np.ones(n + 2, bool)
    keep[dropped] = False
    out = b.copy()
    out[start] = ord("#")
    plain = not bool(((b[start] == ord("0")) & (length > 1)).any())
    return Numbers(out[keep][1:-1].tobytes().decode("ascii"), values, plain)
