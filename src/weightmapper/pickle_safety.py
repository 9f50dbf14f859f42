"""Pickled torch checkpoints, safely: find the globals a pickle would import, then load it.

A pickle can name any importable callable (``os.system``) and have the unpickler call
it. Before ``torch.load`` ever sees a file, ``scan_file`` walks its pickle opcodes with
``pickletools.genops`` (no object is built, nothing is imported) and lists every global
it refers to; anything outside torch's ``weights_only`` allow list is refused unless the
caller passes ``trusted=True``. Even when the scan passes, the load itself still uses
``weights_only=True``, so a scanner gap is not a hole.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import io
import logging
import math
import pickle
import pickletools
import re
import warnings
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from weightmapper.errors import CheckpointFormatError, UnsafeCheckpointError

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTO = 0x80
UNRESOLVED = "<unresolved STACK_GLOBAL>"
"""Reported when a STACK_GLOBAL's module or name is not a plain string constant."""

# torch's legacy (non-zip) format is a sequence of pickles: magic number, protocol
# version, sys info, the object, the storage keys; raw storage bytes follow.
_LEGACY_PICKLES = 5

_STRING_OPS = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
# Opcodes that neither push nor pop a value the global-resolution cares about.
_NEUTRAL_OPS = frozenset({"PROTO", "FRAME", "STOP"})


@dataclass(frozen=True)
class PickleScan:
    """What a scan of one checkpoint file found: its layout and the globals it names."""

    path: Path
    kind: str
    """``zip`` (torch's default format), ``legacy`` (pre-1.6 stream) or ``torchscript``."""
    globals: frozenset[str] = field(default_factory=frozenset)
    """Every ``module.name`` the pickle refers to."""
    unsafe: tuple[str, ...] = ()
    """The globals outside torch's weights_only allow list, sorted."""
    members: tuple[str, ...] = ()
    """Zip archives: the members whose pickles name an unsafe global, as stored."""
    bombs: tuple[str, ...] = ()
    """Allocations the pickle would make beyond its budget (see ``MAX_CALL_ALLOCATION``);
    a file with any is never loaded, trusted or not."""

    @property
    def is_safe(self) -> bool:
        """True when every global is on torch's allow list."""
        return not self.unsafe


DATA_CLASSES: tuple[type, ...] = (argparse.Namespace,)
"""Classes beyond torch's allow list that a checkpoint may hold and that are safe to rebuild:
bags of attributes with no code of their own run by unpickling (``argparse.Namespace`` is how
Lightning and many training scripts store hyperparameters). Their contents are checked like
everything else."""


def allowed_globals() -> frozenset[str]:
    """() → the ``module.name`` strings our loads accept: torch's weights_only allow list
    (with globals the user added by ``torch.serialization.add_safe_globals``) and
    :data:`DATA_CLASSES`.
    """
    try:
        from torch import _weights_only_unpickler as wou

        names = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: fall back to the public list
        names = set()
        for g in torch.serialization.get_safe_globals():
            obj, name = g if isinstance(g, tuple) else (g, None)
            names.add(name or f"{obj.__module__}.{obj.__qualname__}")
    names.update(f"{cls.__module__}.{cls.__qualname__}" for cls in DATA_CLASSES)
    return frozenset(names)


def sniff_pickle_kind(path: Path) -> str:
    """Checkpoint file → ``zip`` or ``legacy``; raises CheckpointFormatError for anything else."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == ZIP_MAGIC:
        return "zip"
    if head[:1] and head[0] == PICKLE_PROTO:
        return "legacy"
    raise CheckpointFormatError(
        f"{path} is not a torch checkpoint: it starts with {head!r}, expected a zip archive "
        "(torch.save) or a pickle stream. Check that the file is complete and really a "
        ".pt/.pth/.bin/.ckpt checkpoint."
    )


def scan_file(path: Path) -> PickleScan:
    """Checkpoint file → PickleScan listing the globals its pickle(s) name; imports nothing.

    Zip members are matched as torch matches them (case-insensitively), every pickle
    member is scanned, and what the pickles would allocate is bounded (allocating calls,
    storage sizes against their records or the file, inflation of compressed members).
    Raises CheckpointFormatError when the file is truncated, not a torch checkpoint, or
    would allocate beyond its budget (unless it also names unsafe globals: then the scan
    is returned and refused as unsafe).
    """
    kind = sniff_pickle_kind(path)
    found: set[str] = set()  # filled as the scan goes, so a broken tail keeps what was seen
    size = path.stat().st_size
    budget = _Budget(file_bytes=size)
    members: list[str] = []
    try:
        if kind == "zip":
            kind = _scan_zip(path, found, budget, members)
        else:
            with open(path, "rb") as raw:
                f = _BoundedReader(raw, size)
                for _ in range(_LEGACY_PICKLES):
                    if f.tell() >= size:  # a plain pickle: fewer pickles than torch writes
                        break
                    scan_pickle_stream(f, into=found, budget=budget)  # type: ignore[arg-type]
    except CheckpointFormatError:
        raise
    # zipfile raises RuntimeError (encrypted member), NotImplementedError (unknown
    # compression, strong encryption) and zlib.error (bad deflate data) on corrupt archives.
    except (
        ValueError,
        EOFError,
        zipfile.BadZipFile,
        pickle.UnpicklingError,
        OSError,
        RuntimeError,
        NotImplementedError,
        zlib.error,
    ) as e:
        unsafe = _unsafe(found)
        if unsafe:  # what was readable already names code to run: say that first
            scan = PickleScan(path, kind, frozenset(found), unsafe, tuple(members))
            raise unsafe_error([scan]) from e
        raise CheckpointFormatError(
            f"{path} is truncated or corrupt: its pickle could not be read ({e}). Expected a "
            "complete torch checkpoint; re-download or re-save the file."
        ) from e
    scan = PickleScan(
        path=path,
        kind=kind,
        globals=frozenset(found),
        unsafe=_unsafe(found),
        members=tuple(members),
        bombs=tuple(budget.problems[:10]),
    )
    if scan.bombs and not scan.unsafe:
        raise bomb_error(scan)
    return scan


def bomb_error(scan: PickleScan) -> CheckpointFormatError:
    """A scan with allocations beyond its budget → the error refusing to load it."""
    return CheckpointFormatError(
        f"{scan.path} would make torch allocate far more memory than the file holds: "
        f"{'; '.join(scan.bombs[:3])}. Expected storages no larger than their data in the file "
        "and no allocating calls with sizes; the file is corrupt or hostile and is not loaded "
        "(not even with --trust-pickle). Re-save the weights from a trusted copy."
    )


def _unsafe(found: set[str]) -> tuple[str, ...]:
    allowed = allowed_globals()
    return tuple(sorted(g for g in found if g not in allowed))


@dataclass(frozen=True)
class _Global:
    """A global pushed on the modelled stack (``module.name``)."""

    name: str


_MARK = object()  # MARK on the modelled stack
_UNKNOWN = None  # any value the model does not track
_MAX_STACK = 100_000  # deeper stacks keep their top only: that is where calls happen
_BYTE_ALLOCATORS = frozenset({"builtins.bytearray", "builtins.bytes"})
_LEGACY_TENSOR = re.compile(r"^torch\.(?:cuda\.|sparse\.|cuda\.sparse\.)?[A-Za-z0-9]+Tensor$")
_STORAGE = re.compile(r"^torch\.(?:cuda\.|storage\.)?([A-Za-z0-9]*)Storage$")


@dataclass
class _Budget:
    """What one file's pickles may allocate: calls to allocators, storages by size."""

    file_bytes: int
    """Bytes of the file (legacy storages are read from it, so they cannot exceed it)."""
    records: dict[str, int] | None = None
    """Zip format: storage key → bytes of its ``data/KEY`` record."""
    storage_bytes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def call_limit(self) -> int:
        """Largest allocation a call in the pickle may ask for (bytes)."""
        return min(max(self.file_bytes, 1 << 20), MAX_CALL_ALLOCATION)


MAX_CALL_ALLOCATION = 256 << 20
"""Bytes one allocating call in a pickle (``bytearray(n)``, ``torch.FloatStorage(n)``, a
legacy ``torch.FloatTensor(n, m)``) may request, and never more than the file's own size
(at least 1 MiB): torch's own files never make such calls with a size, they read storages."""
MAX_INFLATION = 64
"""A compressed zip member may inflate to at most this many times its stored size (+1 MiB):
torch writes members uncompressed, so more is a decompression bomb."""


def scan_pickle_stream(
    stream: BinaryIO | bytes, *, into: set[str] | None = None, budget: _Budget | None = None
) -> set[str]:
    """One pickle (bytes or a file positioned at its start) → the globals it names.

    Handles GLOBAL, INST and STACK_GLOBAL. A STACK_GLOBAL whose operands are not string
    constants is reported as ``UNRESOLVED`` so that it is refused rather than missed.
    Stops after the pickle's STOP opcode, leaving a file positioned just past it. With
    ``into``, globals are added to that set as they are met (kept if the stream breaks).
    With ``budget``, what the pickle would allocate when loaded (allocating calls with
    constant sizes, storages by their element count) is checked against it and every excess
    is added to ``budget.problems``. Nothing is built and nothing is imported: the stack is
    modelled with constants, tuples of them and globals; every other value is unknown.
    """
    if isinstance(stream, bytes | bytearray):
        stream = io.BytesIO(stream)
    found: set[str] = set() if into is None else into
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            g = _Global(_qualified(module, attr))
            found.add(g.name)
            if name == "INST":
                _call(g, tuple(_pop_mark(stack)), budget)
            stack.append(g)
        elif name == "STACK_GLOBAL":
            attr_, module_ = (stack.pop() if stack else None), (stack.pop() if stack else None)
            if isinstance(module_, str) and isinstance(attr_, str):
                g = _Global(_qualified(module_, attr_))
            else:
                g = _Global(UNRESOLVED)
            found.add(g.name)
            stack.append(g)
        elif name in _STRING_OPS or name in _INT_OPS:
            stack.append(arg if isinstance(arg, str | int) else _UNKNOWN)
        elif name == "MARK":
            stack.append(_MARK)
        elif name == "TUPLE":
            stack.append(tuple(_pop_mark(stack)))
        elif name in _TUPLE_N:
            n = _TUPLE_N[name]
            items = stack[len(stack) - n :] if n else []
            del stack[len(stack) - n :]
            stack.append(tuple(items))
        elif name in ("REDUCE", "NEWOBJ"):
            args = stack.pop() if stack else None
            fn = stack.pop() if stack else None
            _call(fn, args, budget)
            stack.append(_UNKNOWN)
        elif name == "OBJ":
            items = _pop_mark(stack)
            _call(items[0] if items else None, tuple(items[1:]), budget)
            stack.append(_UNKNOWN)
        elif name == "BINPERSID":
            pid = stack.pop() if stack else None
            if budget is not None:
                _persistent(pid, budget)
            stack.append(_UNKNOWN)
        elif name in _PUT_OPS:
            _memo_put(memo, int(arg), stack[-1] if stack else None)
        elif name == "MEMOIZE":
            _memo_put(memo, len(memo), stack[-1] if stack else None)
        elif name in _GET_OPS:
            stack.append(memo.get(int(arg)))
        elif name == "DUP":
            stack.append(stack[-1] if stack else None)
        elif name == "STOP":
            break
        elif name not in _NEUTRAL_OPS:
            _generic(op, stack)
        if len(stack) > _MAX_STACK:
            del stack[: _MAX_STACK // 2]
    return found


_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_TUPLE_N = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_MAX_MEMO = 1_000_000


def _memo_put(memo: dict[int, Any], key: int, value: Any) -> None:
    # a memo index is any integer the file chooses: keep the model's memo bounded
    if key in memo or len(memo) < _MAX_MEMO:
        memo[key] = value


def _pop_mark(stack: list[Any]) -> list[Any]:
    """Modelled stack → the items above its last MARK (MARK removed); all of it if none."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i] is _MARK:
            items = stack[i + 1 :]
            del stack[i:]
            return items
    items = stack[:]
    stack.clear()
    return items


def _generic(op: pickletools.OpcodeInfo, stack: list[Any]) -> None:
    """Any other opcode: pop what it consumes, push unknowns for what it produces."""
    before = [s.name for s in op.stack_before]
    if "mark" in before:
        _pop_mark(stack)
        n = before.index("mark")
    else:
        n = len(before)
    if n:
        del stack[max(0, len(stack) - n) :]
    stack.extend([_UNKNOWN] * len(op.stack_after))


def _call(fn: Any, args: Any, budget: _Budget | None) -> None:
    """A modelled call → its allocation checked against the budget (when it is an allocator)."""
    if budget is None or not isinstance(fn, _Global) or not isinstance(args, tuple):
        return
    ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    size: int | None = None
    if fn.name in _BYTE_ALLOCATORS and ints:
        size = ints[0]
    elif (m := _STORAGE.match(fn.name)) and ints:
        size = ints[0] * _element_bytes(m.group(1))
    elif _LEGACY_TENSOR.match(fn.name) and ints:
        size = math.prod(abs(i) for i in ints) * 8
    if size is not None and size > budget.call_limit:
        budget.problems.append(
            f"{fn.name}({', '.join(_num(i) for i in ints[:4])}) would allocate {_num(size)} bytes "
            f"(at most {budget.call_limit:,} allowed for a {budget.file_bytes:,}-byte file)"
        )


def _persistent(pid: Any, budget: _Budget) -> None:
    """torch's ``('storage', type, key, location, numel)`` → its bytes checked against the file."""
    if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
        return
    storage_type, key, numel = pid[1], pid[2], pid[4]
    if not isinstance(numel, int) or not isinstance(key, str):
        return
    m = _STORAGE.match(storage_type.name) if isinstance(storage_type, _Global) else None
    nbytes = numel * _element_bytes(m.group(1) if m else "")
    if budget.records is not None:
        have = budget.records.get(key)
        if have is not None and nbytes > have:
            budget.problems.append(
                f"storage {key[:40]!r} claims {_num(numel)} elements ({_num(nbytes)} bytes) "
                f"but its record holds {have:,} bytes"
            )
        return
    budget.storage_bytes += max(nbytes, 0)
    if budget.storage_bytes > budget.file_bytes:
        budget.problems.append(
            f"storages claim {_num(budget.storage_bytes)} bytes (storage {key[:40]!r}: "
            f"{_num(numel)} elements) in a {budget.file_bytes:,}-byte file"
        )


_ELEMENT_BYTES = {
    "Double": 8, "Float": 4, "Half": 2, "BFloat16": 2, "Long": 8, "Int": 4, "Short": 2,
    "Char": 1, "Byte": 1, "Bool": 1, "ComplexFloat": 8, "ComplexDouble": 16, "Untyped": 1,
    "Typed": 1, "QInt8": 1, "QUInt8": 1, "QInt32": 4, "QUInt4x2": 1, "QUInt2x4": 1,
}  # fmt: skip


def _num(n: int) -> str:
    """An integer from a file → text; a huge one by its size (str() refuses > 4300 digits)."""
    return f"{n:,}" if abs(n) < 10**30 else f"~2**{abs(n).bit_length()}"


def _element_bytes(kind: str) -> int:
    return _ELEMENT_BYTES.get(kind, 1)


def load_torch_file(
    path: Path, *, trusted: bool = False, scan: PickleScan | None = None
) -> tuple[Any, PickleScan]:
    """Torch checkpoint file → (unpickled object, scan); never runs the file's code by default.

    Untrusted: refuse with UnsafeCheckpointError when the scan finds globals outside the
    allow list, else ``torch.load(weights_only=True)``, memory-mapped for zip files so no
    tensor data is read until touched. ``trusted=True`` allows any global (the file's code
    may run): use it only for files whose origin you trust. ``scan`` reuses an earlier
    ``scan_file(path)`` result.
    """
    if scan is None or scan.path != path:
        scan = scan_file(path)
    if scan.kind == "torchscript":
        return _load_torchscript(path, scan, trusted=trusted), scan
    if scan.unsafe and not trusted:
        raise unsafe_error([scan])
    if scan.bombs:
        raise bomb_error(scan)
    if scan.unsafe:
        logger.warning("%s: loading with trusted=True despite globals %s", path, list(scan.unsafe))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            obj = _torch_load(path, trusted=trusted, mmap=scan.kind == "zip")
        for w in caught:
            logger.info("torch.load(%s): %s", path.name, w.message)
    except pickle.UnpicklingError as e:
        # The scan passed but torch's own safe unpickler still refused (an opcode it does
        # not implement, such as pickle protocol 4 frames): it cannot be loaded safely.
        raise UnsafeCheckpointError(
            f"{path} cannot be loaded safely: torch's weights_only loader refused it "
            f"({_first_line(e)}). Expected a checkpoint written by torch.save with the default "
            "pickle protocol. If you trust the file's origin, pass trusted=True "
            "(--trust-pickle on the command line); otherwise re-save it as safetensors.",
            [],
        ) from e
    except Exception as e:
        # On a corrupt pickle torch's loaders raise whatever the broken stream provokes
        # (KeyError, AttributeError, AssertionError, TypeError, RuntimeError, ...).
        raise CheckpointFormatError(
            f"{path} could not be read as a torch checkpoint ({_first_line(e)}). Expected a "
            "complete file written by torch.save; it may be truncated or corrupt: re-download "
            "or re-save it."
        ) from e
    return obj, scan


def _torch_load(path: Path, *, trusted: bool, mmap: bool) -> Any:
    with torch.serialization.safe_globals(list(DATA_CLASSES)):
        if path.suffix.lower() == ".safetensors":
            # torch.load hands paths ending in .safetensors to safetensors; this one is a
            # pickle under that name, so pass an open file (mmap needs a path: read it).
            with open(path, "rb") as f:
                return torch.load(f, map_location="cpu", weights_only=not trusted)
        return torch.load(path, map_location="cpu", weights_only=not trusted, mmap=mmap)


def unsafe_error(scans: Iterable[PickleScan]) -> UnsafeCheckpointError:
    """Scans with unsafe globals → one UnsafeCheckpointError naming every global and file."""
    scans = [s for s in scans if s.unsafe]
    names = sorted({g for s in scans for g in s.unsafe})
    files = ", ".join(
        str(s.path) + (f" (member {', '.join(s.members[:3])})" if s.members else "")
        for s in scans[:5]
    ) + (" ..." if len(scans) > 5 else "")
    return UnsafeCheckpointError(
        f"refusing to load {files}: its pickle refers to globals outside torch's weights_only "
        f"safe list ({', '.join(names)}); loading it could run arbitrary code. Expected only "
        "tensors, containers and plain values. Pass trusted=True (--trust-pickle on the command "
        "line) only if you trust the file's origin, or re-save the weights as safetensors.",
        names,
    )


class _BoundedReader:
    """A file for pickletools that never reads past its end or a line longer than 1 MiB.

    A corrupt length field (a string "of 2**60 bytes") would otherwise make ``read(n)``
    allocate n bytes before finding out the file is shorter.
    """

    _MAX_LINE = 1 << 20

    def __init__(self, f: BinaryIO, size: int) -> None:
        self._f = f
        self._size = size

    def read(self, n: int = -1) -> bytes:
        remaining = max(0, self._size - self._f.tell())
        return self._f.read(remaining if n < 0 or n > remaining else n)

    def readline(self, limit: int = -1) -> bytes:
        return self._f.readline(self._MAX_LINE if limit < 0 else min(limit, self._MAX_LINE))

    def tell(self) -> int:
        return self._f.tell()


def _scan_zip(path: Path, found: set[str], budget: _Budget, unsafe_members: list[str]) -> str:
    allowed = allowed_globals()
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        names = [m.filename for m in members]
        if not any(_is_pickle_member(n, "data.pkl") for n in names):
            raise CheckpointFormatError(
                f"{path} is a zip archive without a data.pkl, so it is not a torch checkpoint. "
                "Expected a file written by torch.save."
            )
        kind = "torchscript" if any(_is_pickle_member(n, "constants.pkl") for n in names) else "zip"
        for m in members:
            if m.compress_type != zipfile.ZIP_STORED and m.file_size > (
                MAX_INFLATION * m.compress_size + (1 << 20)
            ):
                budget.problems.append(
                    f"member {m.filename} inflates from {m.compress_size:,} to {m.file_size:,} "
                    "bytes (a decompression bomb)"
                )
        if budget.problems:
            return kind
        budget.records = {}
        for m in members:
            parts = m.filename.replace("\\", "/").split("/")
            if len(parts) >= 2 and parts[-2].lower() == "data":
                budget.records[parts[-1]] = m.file_size
        # Every member whose name ends in .pkl in any letter case is scanned, each by its own
        # entry: torch finds records case-insensitively, and a duplicated name cannot hide a
        # copy. A pickle is read as a stream up to its STOP; padding after it is never read.
        for member in members:
            if not member.filename.lower().endswith(".pkl"):
                continue
            seen: set[str] = set()
            try:
                with zf.open(member) as f:
                    scan_pickle_stream(
                        _BoundedReader(f, member.file_size),  # type: ignore[arg-type]
                        into=seen,
                        budget=budget,
                    )
            finally:
                found |= seen
                if seen - allowed:
                    unsafe_members.append(member.filename)
    return kind


def _is_pickle_member(name: str, base: str) -> bool:
    name = name.lower()
    return name == base or name.endswith("/" + base)


def _load_torchscript(path: Path, scan: PickleScan, *, trusted: bool) -> Any:
    if not trusted:
        raise UnsafeCheckpointError(
            f"{path} is a TorchScript archive (torch.jit.save); loading it runs its TorchScript "
            "code. Expected a state dict saved with torch.save or safetensors. Pass trusted=True "
            "(--trust-pickle on the command line) only if you trust the file's origin.",
            sorted(scan.unsafe) or ["torch.jit.load"],
        )
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as e:
        raise CheckpointFormatError(
            f"{path} could not be loaded as TorchScript ({_first_line(e)}); the file may be "
            "truncated or corrupt."
        ) from e


def _qualified(module: str, name: str) -> str:
    # Same Python 2 → 3 renames the unpickler (and torch's weights_only loader) applies.
    if (module, name) in _compat_pickle.NAME_MAPPING:
        module, name = _compat_pickle.NAME_MAPPING[(module, name)]
    elif module in _compat_pickle.IMPORT_MAPPING:
        module = _compat_pickle.IMPORT_MAPPING[module]
    return f"{module}.{name}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
