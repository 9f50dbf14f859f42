"""Reading safetensors: headers, dtype codes, aliases of tied tensors, converted outputs.

The one place a safetensors header is parsed. :func:`read_header` checks what safetensors
checks (every entry well-formed, offsets covering the data section exactly, sizes matching
shapes and dtypes) and what it does not: JSON nesting and numbers are bounded
(:mod:`weightmapper.bounded_json`), offsets and dimensions are integers (never floats or
booleans) within int64, and the header fits in the file. So a header that passes here is one
safetensors and torch can read. A header in the layout safetensors writes is cut into its
columns without a JSON parser (:mod:`weightmapper.safetensors_layout`, which accepts only
what these checks accept); any other is parsed and checked entry by entry. The writer lives
in ``convert.py`` and uses the dtype codes defined here.
"""

from __future__ import annotations

import math
import operator
import os
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from weightmapper.bounded_json import loads_bounded
from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError
from weightmapper.safetensors_layout import LayoutColumns, layout_columns
from weightmapper.tensor_info import TensorInfo, tensor_infos

ALIASES_KEY = "weightmapper_aliases"
"""safetensors metadata entry: JSON {alias name: name of the tensor actually stored}."""
INDEX_SUFFIX = ".index.json"
MAX_HEADER_BYTES = 100_000_000
"""safetensors' own limit on the JSON header."""
MAX_DIMS = 64
"""Most dimensions a tensor may have (torch's own limit)."""
MAX_EXTENT = 2**63 - 1
"""Largest dimension, element count and offset: torch sizes and safetensors offsets are 64-bit."""

DTYPES: dict[str, tuple[str, int]] = {
    "F64": ("float64", 64),
    "F32": ("float32", 32),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I64": ("int64", 64),
    "I32": ("int32", 32),
    "I16": ("int16", 16),
    "I8": ("int8", 8),
    "U64": ("uint64", 64),
    "U32": ("uint32", 32),
    "U16": ("uint16", 16),
    "U8": ("uint8", 8),
    "BOOL": ("bool", 8),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F6_E2M3": ("f6_e2m3", 6),
    "F6_E3M2": ("f6_e3m2", 6),
    "F4": ("float4_e2m1fn_x2", 4),
    "C64": ("complex64", 64),
}
"""safetensors dtype code → (torch dtype name, bits per element); torch cannot load the F6 ones."""

WRITABLE_CODES: dict[str, str] = {
    name: code
    for code, (name, _bits) in DTYPES.items()
    if code not in ("F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4")
}
"""torch dtype name → the code our writer stores it under (whole-byte dtypes torch saves)."""


class HeaderEntry(NamedTuple):
    """One tensor of a safetensors header, validated."""

    dtype: str
    """safetensors dtype code (``F32``, ``BF16``, ...)."""
    shape: tuple[int, ...]
    start: int
    """Offset of the first data byte, relative to the data section."""
    end: int

    @property
    def torch_dtype(self) -> str:
        """The torch dtype name of this entry's code."""
        return DTYPES[self.dtype][0]


@dataclass(frozen=True)
class SafetensorsHeader:
    """A safetensors file's header: its entries in file order, as columns (a 100k-tensor header
    is read without an object per entry), user metadata, data offset."""

    path: Path
    data_start: int
    """Absolute offset of the data section (8 + header length)."""
    names: list[str]
    """Tensor names, in the order of their data in the file."""
    codes: list[str]
    """Each tensor's safetensors dtype code (``F32``, ``BF16``, ...)."""
    shapes: list[tuple[int, ...]]
    starts: list[int]
    """Offset of each tensor's first data byte, relative to the data section."""
    ends: list[int]
    metadata: dict[str, str]

    @cached_property
    def entries(self) -> dict[str, HeaderEntry]:
        """Name → entry, in the order of their data in the file (built when first asked for)."""
        rows = map(HeaderEntry, self.codes, self.shapes, self.starts, self.ends)
        return dict(zip(self.names, rows, strict=True))

    def tensor_info(self, name: str) -> TensorInfo:
        """Entry name → TensorInfo with torch's dtype name and shape (F4 packs two per byte)."""
        e = self.entries[name]
        return TensorInfo(
            name=name,
            shape=_torch_shape(e.dtype, e.shape),
            dtype=e.torch_dtype,
            nbytes=e.end - e.start,
            file=str(self.path),
        )

    def tensor_infos(self) -> list[TensorInfo]:
        """() → :meth:`tensor_info` of every entry, in file order (built from the columns)."""
        shapes = self.shapes
        if "F4" in set(self.codes):
            shapes = list(map(_torch_shape, self.codes, shapes))
        return tensor_infos(
            self.names,
            shapes,
            map(_TORCH_NAMES.__getitem__, self.codes),
            map(operator.sub, self.ends, self.starts),
            str(self.path),
        )

    def aliases(self) -> dict[str, str]:
        """{dropped name: kept name} of tied tensors by ``safetensors.torch.save_model``'s
        convention (metadata entries naming a stored tensor); our outputs write them too."""
        if not self.metadata:
            return {}
        stored = set(self.names)
        return {k: v for k, v in self.metadata.items() if k not in stored and v in stored}

    def converted_aliases(self) -> dict[str, str]:
        """{alias: stored name} from our outputs' ``weightmapper_aliases`` entry (empty if none)."""
        raw = self.metadata.get(ALIASES_KEY)
        if not raw:
            return {}
        try:
            ours = loads_bounded(raw)
        except ValueError as e:
            raise _bad(self.path, f"its {ALIASES_KEY} metadata is not JSON ({e})") from e
        if not isinstance(ours, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in ours.items()
        ):
            raise _bad(self.path, f"its {ALIASES_KEY} metadata is not a name → name map")
        return ours


def _torch_shape(code: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """safetensors dtype code + shape → the shape torch gives it (F4 packs two per byte)."""
    return (*shape[:-1], shape[-1] // 2) if code == "F4" and shape else shape


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """safetensors file → its validated header; reads the header bytes only.

    Raises CheckpointNotFoundError when the file is missing and CheckpointFormatError when
    the header is malformed, inconsistent with the file, or beyond the limits above.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(p, f"it is {size} bytes long, too short for a header")
            (n,) = struct.unpack("<Q", head)
            if n > min(MAX_HEADER_BYTES, size - 8):
                raise _bad(p, f"its header claims {n} bytes in a {size}-byte file")
            raw = fh.read(n)
    except FileNotFoundError as e:
        raise CheckpointNotFoundError(
            f"{p} does not exist; expected a safetensors file. Check the path."
        ) from e
    except OSError as e:
        raise _bad(p, f"its header cannot be read ({e.strerror or e})") from e
    columns = layout_columns(raw, bits=_BITS, max_dims=MAX_DIMS, max_extent=MAX_EXTENT)
    if columns is None:  # another layout, or a problem that the entry checks name
        columns = _parsed_columns(p, raw)
    names, codes, shapes, starts, ends, meta = columns
    order = _file_order(p, names, starts, ends)
    if order is not None:
        names, codes, shapes, starts, ends = (
            [col[i] for i in order] for col in (names, codes, shapes, starts, ends)
        )
    data_bytes = size - 8 - n
    expected = ends[-1] if ends else 0
    if expected != data_bytes:
        raise _bad(p, f"tensor data covers {expected} bytes but the file holds {data_bytes}")
    return SafetensorsHeader(
        path=p,
        data_start=8 + n,
        names=names,
        codes=codes,
        shapes=shapes,
        starts=starts,
        ends=ends,
        metadata=meta,
    )


def _parsed_columns(p: Path, raw: bytes) -> LayoutColumns:
    """Header bytes → (names, codes, shapes, starts, ends, metadata) parsed as JSON and
    checked; CheckpointFormatError naming the first problem."""
    try:
        # A name listed twice keeps its last entry; the first one's bytes then leave a gap
        # that the coverage check reports.
        header = loads_bounded(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(p, f"its header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _bad(p, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(p, "__metadata__ is not a string → string map")
    names = list(header)
    specs = list(header.values())
    columns = _plain_columns(specs)
    if columns is None:  # the checks that name the problem, entry by entry
        columns = _checked_columns(p, names, specs)
    return (names, *columns, meta)


_BITS = {code: bits for code, (_name, bits) in DTYPES.items()}
_TORCH_NAMES = {code: name for code, (name, _bits) in DTYPES.items()}
_Columns = tuple[list[str], list[tuple[int, ...]], list[int], list[int]]
"""A header's entries as columns: dtype codes, shapes, starts, ends."""


def _plain_columns(specs: list[Any]) -> _Columns | None:
    """Raw header entries → (codes, shapes, starts, ends) when every entry passes every check
    of :func:`_entry`, else None (then :func:`_entry` says which entry fails and why).

    One pass, one entry at a time and no message built: the entries come fresh from the JSON
    parser, and each is checked while it is in cache (a pass per check, even in C, would
    fetch all 100k of them from memory again).
    """
    codes: list[str] = []
    shapes: list[tuple[int, ...]] = []
    starts: list[int] = []
    ends: list[int] = []
    bits_of = _BITS.get
    for spec in specs:
        try:
            code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
            bits = bits_of(code)
        except (KeyError, TypeError):  # no object, a key missing, or a code that is no string
            return None
        if bits is None or type(shape) is not list or len(shape) > MAX_DIMS:
            return None
        if type(offsets) is not list or len(offsets) != 2:
            return None
        numel = 1
        for d in shape:
            if type(d) is not int or not 0 <= d <= MAX_EXTENT:  # never a bool or a float
                return None
            numel *= d
        start, end = offsets
        if type(start) is not int or type(end) is not int or not 0 <= start <= end <= MAX_EXTENT:
            return None
        # bits of data == 8 × bytes spanned: a whole number of bytes, and the right number
        if numel > MAX_EXTENT or numel * bits != (end - start) << 3:
            return None
        codes.append(code)
        shapes.append(tuple(shape))
        starts.append(start)
        ends.append(end)
    return codes, shapes, starts, ends


def _checked_columns(path: Path, names: list[str], specs: list[Any]) -> _Columns:
    """Raw header entries → their columns, checked one by one: CheckpointFormatError naming
    the first entry that fails (or the columns, when all pass)."""
    entries = [_entry(path, key, spec) for key, spec in zip(names, specs, strict=True)]
    return (
        [e.dtype for e in entries],
        [e.shape for e in entries],
        [e.start for e in entries],
        [e.end for e in entries],
    )


def _file_order(
    path: Path, names: list[str], starts: list[int], ends: list[int]
) -> list[int] | None:
    """Entries' names, starts and ends in header order → their positions sorted by start
    (stable), or None when already in that order (as safetensors writes them).

    Raises CheckpointFormatError at the first entry, in file order, that does not start
    where the one before it ended (the first at byte 0).
    """
    if not starts or (starts[0] == 0 and starts[1:] == ends[:-1]):
        return None  # listed in file order, each starting where the one before ended
    start = np.array(starts, dtype=np.int64)  # every offset is checked to fit in int64
    end = np.array(ends, dtype=np.int64)
    order = None
    if len(start) > 1 and not bool(np.all(start[1:] >= start[:-1])):
        order = np.argsort(start, kind="stable")
        start, end = start[order], end[order]
    expected = np.zeros_like(end)
    expected[1:] = end[:-1]
    gaps = np.flatnonzero(start != expected)
    if len(gaps):
        i = int(gaps[0])
        k = int(order[i]) if order is not None else i
        raise _bad(
            path,
            f"tensor {_short(names[k])} starts at byte {starts[k]}, expected {int(expected[i])}",
        )
    return None if order is None else order.tolist()


def _entry(path: Path, key: str, spec: Any) -> HeaderEntry:
    """One raw header entry → HeaderEntry; CheckpointFormatError when malformed."""

    def malformed(why: str) -> CheckpointFormatError:
        return _bad(path, f"the entry for {_short(key)} is malformed: {why}")

    if not isinstance(spec, dict):
        raise malformed("it is not an object")
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(code, str) or code not in DTYPES:
        raise malformed(f"dtype {str(code)[:40]!r}, expected one of {', '.join(DTYPES)}")
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(map(_is_extent, shape)):
        raise malformed(
            f"shape {str(shape)[:80]}, expected at most {MAX_DIMS} integer dimensions from 0 "
            f"to {MAX_EXTENT} (none negative, fractional or infinite)"
        )
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_extent, offsets)):
        raise malformed(
            f"data_offsets {str(offsets)[:80]}, expected [start, end]: two integers from 0 "
            f"to {MAX_EXTENT} (none negative, fractional or infinite)"
        )
    start, end = offsets
    if start > end:
        raise malformed(f"it starts at byte {start}, after its end {end}")
    numel = math.prod(shape)  # exact: every dimension is a bounded int
    if numel > MAX_EXTENT:
        raise malformed(f"{numel} elements, more than torch can index")
    total_bits = numel * DTYPES[code][1]
    if total_bits % 8 or end - start != total_bits // 8:
        raise _bad(
            path,
            f"{_short(key)} is {code} {shape} ({total_bits / 8:g} bytes) but its offsets span "
            f"{end - start} bytes",
        )
    return HeaderEntry(dtype=code, shape=tuple(shape), start=start, end=end)


def _is_extent(x: Any) -> bool:
    return type(x) is int and 0 <= x <= MAX_EXTENT


def _short(key: str) -> str:
    return repr(key[:80] + ("…" if len(key) > 80 else ""))


def _bad(path: Path, why: str) -> CheckpointFormatError:
    return CheckpointFormatError(
        f"{path} is not a valid safetensors file: {why}. It may be truncated, corrupt or "
        "hostile; expected a complete safetensors file: re-download or re-save it."
    )


# --- converted outputs ---------------------------------------------------------------------


def output_files(path: str | os.PathLike[str]) -> list[Path]:
    """Converted output (file, index JSON or directory) → its safetensors file(s)."""
    p = Path(path)
    if p.is_dir():
        idx = p / f"model.safetensors{INDEX_SUFFIX}"
        if idx.exists():
            return output_files(idx)
        files = sorted(p.glob("*.safetensors"))
        if not files:
            raise CheckpointNotFoundError(
                f"{p} holds no .safetensors file or index; pass the output of `weightmapper apply`"
            )
        return files
    if not p.exists():
        raise CheckpointNotFoundError(
            f"{p} does not exist; pass the output of `weightmapper apply`"
        )
    if p.name.endswith(".json"):
        from weightmapper.checkpoint import shard_files  # the index is a checkpoint concept

        return shard_files(p)
    return [p]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """safetensors file → its ``__metadata__`` dict (empty when absent); reads the header only."""
    return dict(read_header(path).metadata)


def read_aliases(path: str | os.PathLike[str]) -> dict[str, str]:
    """Converted output (file, index or directory) → {alias: stored name} of tied tensors."""
    aliases: dict[str, str] = {}
    for f in output_files(path):
        if f.suffix == ".safetensors":
            aliases.update(read_header(f).converted_aliases())
    return aliases


def load_converted(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Converted output (file, index or directory) → state dict with tied tensors restored."""
    from safetensors.torch import load_file

    out: dict[str, torch.Tensor] = {}
    for f in output_files(path):
        read_header(f)  # validated here first: safetensors' own errors are not ours
        out.update(load_file(str(f)))
    for alias, name in read_aliases(path).items():
        if name not in out:
            raise CheckpointFormatError(
                f"{path}: alias {alias!r} points at {name!r}, which is not stored; the "
                "output is incomplete, convert it again"
            )
        out[alias] = out[name]
    return out
