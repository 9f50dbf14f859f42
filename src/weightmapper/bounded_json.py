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
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
"""Every byte but quotes and brackets: what :func:`nesting_depth` deletes before counting."""


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
    """JSON bytes → deepest nesting of ``[``/``{`` outside strings (linear time).

    A quote is a string delimiter unless an odd run of backslashes precedes it. Deleting
    every pair of backslashes (left to right, so each run keeps only its odd one) and then
    every backslash-quote left (an escaped quote) leaves only delimiting quotes;
    ``bytes.translate`` then keeps quotes and brackets alone, and two adjacent quotes go too
    (that changes no other quote's parity, and in a header most strings hold no bracket), all
    in C; numpy counts on the short rest: brackets after an odd number of quotes are inside a
    string and do not count.
    """
    if b"\\" in raw:
        raw = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = raw.translate(None, _NOT_STRUCTURE).replace(b'""', b"")
    a = np.frombuffer(kept, dtype=np.uint8)
    step = _DEPTH_STEP[a]
    if b'"' in kept:
        inside = (np.cumsum(a == 0x22, dtype=np.int64) & 1).astype(bool)
        step[inside] = 0
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


def _refuse_constant(name: str) -> Any:
    raise JSONLimitError(f"JSON holds {name}, which is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"JSON number {text[:40]} is too large for a float")
    return value
