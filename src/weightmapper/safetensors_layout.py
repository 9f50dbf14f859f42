"""A safetensors header in the layout safetensors writes → its columns, cut without a parser.

safetensors writes its header as compact JSON in one fixed layout, padded with spaces::

    {"__metadata__":{"format":"pt"},"a.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},...}

``json`` turns a 100k-tensor header into 100k dicts and 200k lists that are only read back
into columns. :func:`layout_columns` cuts the bytes instead at the fixed text between the
fields (a few passes in C over the whole header) and checks each distinct dtype-and-shape
text once. It accepts only a header that is exactly this layout and passes every check of
the entry-by-entry reader; for any other header, valid or not, it returns None, and the
caller parses it as JSON and checks it entry by entry (which names what is wrong). So a
header read here gives what parsing it would give, value for value.
"""

from __future__ import annotations

import json
import math
import operator
import re

from weightmapper.bounded_json import loads_bounded

LayoutColumns = tuple[
    list[str], list[str], list[tuple[int, ...]], list[int], list[int], dict[str, str]
]
"""Names, dtype codes, shapes, starts and ends in header order, and the metadata."""

_STRING = rb'"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*"'
"""A JSON string (escapes allowed: metadata values are often JSON text themselves)."""
_PAIR = _STRING + b":" + _STRING
_METADATA = re.compile(rb'\{"__metadata__":(\{(?:' + _PAIR + b"(?:," + _PAIR + rb")*)?\}),")
"""The metadata entry, first (where safetensors writes it), and the comma after it."""
_INT = rb"(?:0|[1-9][0-9]{0,18})"
"""A JSON integer that fits in 19 digits (larger ones are refused below anyway)."""
_KIND = re.compile(rb'([0-9A-Z_]+)","shape":\[(' + _INT + rb"(?:," + _INT + rb")*)?")
"""The text from a dtype code to the last dimension of its shape."""

_ENTRY = re.compile(
    rb',"([^"\\]*)":\{"dtype":"([^"]*","shape":\[[^\]"]*)\],"data_offsets":\[([0-9]+,[0-9]+)\]\}'
)
"""One entry and the comma before it: its name, its dtype-and-shape text and its offsets
(each checked below, the dtype and shape once per distinct text). No part runs past a quote,
so a try at matching reads a few quoted strings ahead, however the header is made, and
cutting stays linear in its length."""
_PRINTABLE = bytes(range(0x20, 256))
"""Bytes a name may hold raw (JSON refuses control characters in strings)."""
_JSON_SPACE = b" \t\n\r"


def layout_columns(
    raw: bytes, *, bits: dict[str, int], max_dims: int, max_extent: int
) -> LayoutColumns | None:
    """Header bytes + bits per dtype code and the limits on dimensions and extents →
    (names, codes, shapes, starts, ends, metadata), or None when the header is not in
    safetensors' own layout or fails any check (duplicate names included)."""
    body = raw.rstrip(_JSON_SPACE)
    meta: dict[str, str] = {}
    first = 1  # just after the opening brace
    found = _METADATA.match(body)
    if found is not None:
        try:
            meta = loads_bounded(found[1].decode("utf-8"))
        except ValueError:  # UnicodeDecodeError included
            return None
        first = found.end()
    if not (body.startswith(b"{") and body.endswith(b"}")):
        return None
    # the entries, each after a comma, tile the text: split, nothing is left between them
    fields = _ENTRY.split(b"," + body[first:-1])
    n = len(fields) // 4
    if n == 0 or any(fields[0::4]):
        return None
    names = _names(fields[1::4], n)
    kinds = _kinds(set(fields[2::4]), bits, max_dims, max_extent)
    offsets = _offsets(fields[3::4], max_extent)
    if names is None or kinds is None or offsets is None:
        return None
    codes, shapes, nbytes = zip(*map(kinds.__getitem__, fields[2::4]), strict=True)
    starts, ends = offsets[0::2], offsets[1::2]
    if list(map(operator.sub, ends, starts)) != list(nbytes):
        return None  # an entry whose offsets do not span its dtype and shape exactly
    return names, list(codes), list(shapes), starts, ends, meta


def _names(raw: list[bytes], n: int) -> list[str] | None:
    """Raw names → names, or None when one holds a quote, an escape or a control
    character, is not UTF-8, is listed twice or is ``__metadata__``."""
    joined = b"\x00".join(raw)  # no quote or backslash: the pattern excludes them
    if len(joined.translate(None, _PRINTABLE)) != n - 1:
        return None  # the only control bytes left are the n - 1 that join the names
    try:
        names = joined.decode("utf-8").split("\x00")
    except UnicodeDecodeError:
        return None
    distinct = set(names)
    if len(distinct) != n or "__metadata__" in distinct:
        return None  # JSON keeps the last of two equal names; the entry reader says why
    return names


def _kinds(
    kinds: set[bytes], bits: dict[str, int], max_dims: int, max_extent: int
) -> dict[bytes, tuple[str, tuple[int, ...], int]] | None:
    """Distinct dtype-and-shape texts → text → (code, shape, bytes of data), or None when
    one is malformed, has an unknown code, too many or too large dimensions, more elements
    than torch can index, or a size that is not a whole number of bytes."""
    out: dict[bytes, tuple[str, tuple[int, ...], int]] = {}
    for kind in kinds:
        found = _KIND.fullmatch(kind)
        if found is None:
            return None
        code = found[1].decode("ascii")
        code_bits = bits.get(code)
        shape = tuple(map(int, found[2].split(b","))) if found[2] else ()
        if code_bits is None or len(shape) > max_dims or max(shape, default=0) > max_extent:
            return None
        numel = math.prod(shape)
        if numel > max_extent or numel * code_bits % 8:
            return None
        out[kind] = (code, shape, numel * code_bits // 8)
    return out


def _offsets(raw: list[bytes], max_extent: int) -> list[int] | None:
    """Raw ``start,end`` texts (digits, a comma, digits) → [start, end, start, end, ...],
    or None unless each is a JSON integer up to ``max_extent``."""
    try:
        values: list[int] = json.loads(b"[" + b",".join(raw) + b"]")  # refuses "01"
    except ValueError:
        return None
    if max(values, default=0) > max_extent:
        return None
    return values
