"""Reading safetensors: headers, dtype codes, aliases of tied tensors, converted outputs.

The one place a safetensors header is parsed. :func:`read_header` checks what safetensors
checks (every entry well-formed, offsets covering the data section exactly, sizes matching
shapes and dtypes) and what it does not: JSON nesting and numbers are bounded
(:mod:`weightmapper.bounded_json`), offsets and dimensions are integers (never floats or
booleans) within int64, and the header fits in the file. So a header that passes here is one
safetensors and torch can read. The writer lives in ``convert.py`` and uses the dtype codes
defined here.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from weightmapper.bounded_json import loads_bounded
from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError
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
    """One tensor of a safetensors header, validated (a tuple: a 100k-tensor header makes
    100k of them, and a tuple is built several times faster than a frozen dataclass)."""

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
    """A safetensors file's header: entries in file order, user metadata, data offset."""

    path: Path
    data_start: int
    """Absolute offset of the data section (8 + header length)."""
    entries: dict[str, HeaderEntry]
    """Name → entry, in the order of their data in the file."""
    metadata: dict[str, str]

    def tensor_info(self, name: str) -> TensorInfo:
        """Entry name → TensorInfo with torch's dtype name and shape (F4 packs two per byte)."""
        e = self.entries[name]
        shape = e.shape
        if e.dtype == "F4" and shape:
            shape = (*shape[:-1], shape[-1] // 2)
        return TensorInfo(
            name=name, shape=shape, dtype=e.torch_dtype, nbytes=e.end - e.start, file=str(self.path)
        )

    def tensor_infos(self) -> list[TensorInfo]:
        """() → :meth:`tensor_info` of every entry, in file order (built column by column)."""
        shapes = [
            (*e.shape[:-1], e.shape[-1] // 2) if e.dtype == "F4" and e.shape else e.shape
            for e in self.entries.values()
        ]
        return tensor_infos(
            self.entries,
            shapes,
            [DTYPES[e.dtype][0] for e in self.entries.values()],
            [e.end - e.start for e in self.entries.values()],
            str(self.path),
        )

    def aliases(self) -> dict[str, str]:
        """{dropped name: kept name} of tied tensors by ``safetensors.torch.save_model``'s
        convention (metadata entries naming a stored tensor); our outputs write them too."""
        return {
            k: v for k, v in self.metadata.items() if k not in self.entries and v in self.entries
        }

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
    try:
        # A name listed twice keeps its last entry; the first one's bytes then leave a gap
        # that the coverage check below reports.
        header = loads_bounded(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(p, f"its header is not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise _bad(p, "its header is not a JSON object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise _bad(p, "__metadata__ is not a string → string map")
    keys = list(header)
    entries = [_plain_entry(spec) for spec in header.values()]
    if None in entries:  # the checks that name the problem, on the first entry that has one
        entries = [
            e if e is not None else _entry(p, key, spec)
            for key, spec, e in zip(keys, header.values(), entries, strict=True)
        ]
    data_bytes = size - 8 - n
    order = _file_order(entries)
    expected = 0
    for i in _coverage_breaks(entries, order):
        e = entries[i]
        if e.start != expected:
            raise _bad(p, f"tensor {_short(keys[i])} starts at byte {e.start}, expected {expected}")
        expected = e.end
    if order is not None:
        keys = [keys[i] for i in order]
        entries = [entries[i] for i in order]
    expected = entries[-1].end if entries else 0
    if expected != data_bytes:
        raise _bad(p, f"tensor data covers {expected} bytes but the file holds {data_bytes}")
    return SafetensorsHeader(
        path=p, data_start=8 + n, entries=dict(zip(keys, entries, strict=True)), metadata=meta
    )


_BITS = {code: bits for code, (_name, bits) in DTYPES.items()}


def _plain_entry(spec: Any) -> HeaderEntry | None:
    """One raw header entry → HeaderEntry, or None when any check fails (then
    :func:`_entry` says which): the common case without building error messages."""
    try:
        code, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
        bits = _BITS[code]
    except (KeyError, TypeError):
        return None
    if type(shape) is not list or type(offsets) is not list or len(offsets) != 2:
        return None
    if len(shape) > MAX_DIMS:
        return None
    for d in shape:
        if type(d) is not int or d < 0 or d > MAX_EXTENT:
            return None
    start, end = offsets
    if type(start) is not int or type(end) is not int or not 0 <= start <= end <= MAX_EXTENT:
        return None
    numel = math.prod(shape)
    if numel > MAX_EXTENT or (numel * bits) % 8 or end - start != numel * bits // 8:
        return None
    return HeaderEntry(code, tuple(shape), start, end)


def _file_order(entries: list[HeaderEntry]) -> list[int] | None:
    """Entries in header order → their positions sorted by start offset (stable), or None
    when they are already in that order (as safetensors writes them)."""
    starts = np.fromiter((e.start for e in entries), dtype=np.int64, count=len(entries))
    if len(starts) < 2 or bool(np.all(starts[1:] >= starts[:-1])):
        return None
    return np.argsort(starts, kind="stable").tolist()


def _coverage_breaks(entries: list[HeaderEntry], order: list[int] | None) -> list[int]:
    """Entries + file order → the positions, in file order, up to and including the first
    entry that does not start where the previous one ended ([] when all are contiguous)."""
    idx = np.arange(len(entries)) if order is None else np.asarray(order, dtype=np.int64)
    if not len(idx):
        return []
    starts = np.fromiter((entries[i].start for i in idx), dtype=np.int64, count=len(idx))
    ends = np.fromiter((entries[i].end for i in idx), dtype=np.int64, count=len(idx))
    prev_end = np.concatenate(([0], ends[:-1]))
    bad = np.flatnonzero(starts != prev_end)
    return [] if not len(bad) else idx[: int(bad[0]) + 1].tolist()


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
