"""JSON from files we do not control → Python values, with bounded nesting and finite numbers.

``json.loads`` recurses once per nesting level (a document 100,000 levels deep raises
RecursionError, and one just under the interpreter's limit makes every later walk of it
recurse as deep), accepts ``NaN``/``Infinity`` and turns ``1e400`` into ``inf``. Every JSON a
user or a checkpoint hands us (safetensors headers, shard indexes, mapping files, reports)
goes through :func:`loads_bounded` instead: too deep or a non-finite number is a
:class:`JSONLimitError` (a ``ValueError``, so readers that already wrap ``ValueError`` in our
own errors report it the same way).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_DEPTH = 64
"""Deepest nesting of arrays and objects accepted (our own documents need under 10)."""

_DEPTH_STEP = np.zeros(256, dtype=np.int8)
_DEPTH_STEP[[ord("["), ord("{")]] = 1
_DEPTH_STEP[[ord("]"), ord("}")]] = -1
_MATTERS = (_DEPTH_STEP != 0) | (np.arange(256) == ord('"'))


class JSONLimitError(ValueError):
    """A JSON document nests too deep or holds a number that is not finite."""


def loads_bounded(
    data: str | bytes | bytearray,
    *,
    max_depth: int = MAX_DEPTH,
    object_pairs_hook: Callable[[list[tuple[str, Any]]], Any] | None = None,
) -> Any:
    """JSON text → value; JSONLimitError (a ValueError) when nested deeper than ``max_depth``
    or holding ``NaN``, ``Infinity`` or a number too large for a float; ValueError when not JSON.
    ``object_pairs_hook`` as for ``json.loads``.
    """
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else bytes(data)
    depth = nesting_depth(raw)
    if depth > max_depth:
        raise JSONLimitError(f"JSON nested {depth} levels deep, more than the {max_depth} allowed")
    try:
        return json.loads(
            raw,
            parse_constant=_refuse_constant,
            parse_float=_finite_float,
            object_pairs_hook=object_pairs_hook,
        )
    except RecursionError as e:  # unreachable after the depth check; kept as a last guard
        raise JSONLimitError("JSON nested too deep to parse") from e


def nesting_depth(raw: bytes) -> int:
    """JSON bytes → deepest nesting of ``[``/``{`` outside strings (linear time, in numpy).

    A quote is a string delimiter unless an odd run of backslashes precedes it; brackets
    after an odd number of delimiters are inside a string and do not count.
    """
    a = np.frombuffer(raw, dtype=np.uint8)
    # only quotes and brackets matter: work on those positions alone (one pass over the text)
    keep = np.flatnonzero(_MATTERS[a])
    sub = a[keep]
    q = sub == 0x22
    if b"\\" in raw:
        backslash = a == 0x5C
        count = np.cumsum(backslash, dtype=np.int64)
        # backslashes in the run ending at each position: count minus count at the last non-\
        run = count - np.maximum.accumulate(np.where(backslash, 0, count))
        escaped = np.zeros(len(a), dtype=bool)
        escaped[1:] = (run[:-1] & 1) == 1
        q &= ~escaped[keep]
    inside = (np.cumsum(q, dtype=np.int64) & 1).astype(bool)
    kept = _DEPTH_STEP[sub]
    kept[inside] = 0
    return int(np.cumsum(kept, dtype=np.int64).max(initial=0))


def _refuse_constant(name: str) -> Any:
    raise JSONLimitError(f"JSON holds {name}, which is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"JSON number {text[:40]} is too large for a float")
    return value
