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
import io
import logging
import pickle
import pickletools
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

    @property
    def is_safe(self) -> bool:
        """True when every global is on torch's allow list."""
        return not self.unsafe


def allowed_globals() -> frozenset[str]:
    """() → the ``module.name`` strings torch's weights_only unpickler accepts right now.

    Includes globals the user added with ``torch.serialization.add_safe_globals``.
    """
    try:
        from torch import _weights_only_unpickler as wou

        names = set(wou._get_allowed_globals()) | set(wou._get_user_allowed_globals())
    except (ImportError, AttributeError):  # private API moved: fall back to the public list
        names = set()
        for g in torch.serialization.get_safe_globals():
            obj, name = g if isinstance(g, tuple) else (g, None)
            names.add(name or f"{obj.__module__}.{obj.__qualname__}")
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

    Raises CheckpointFormatError when the file is truncated or not a torch checkpoint.
    """
    kind = sniff_pickle_kind(path)
    found: set[str] = set()  # filled as the scan goes, so a broken tail keeps what was seen
    try:
        if kind == "zip":
            kind = _scan_zip(path, found)
        else:
            size = path.stat().st_size
            with open(path, "rb") as raw:
                f = _BoundedReader(raw, size)
                for _ in range(_LEGACY_PICKLES):
                    if f.tell() >= size:  # a plain pickle: fewer pickles than torch writes
                        break
                    scan_pickle_stream(f, into=found)  # type: ignore[arg-type]
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
            raise unsafe_error([PickleScan(path, kind, frozenset(found), unsafe)]) from e
        raise CheckpointFormatError(
            f"{path} is truncated or corrupt: its pickle could not be read ({e}). Expected a "
            "complete torch checkpoint; re-download or re-save the file."
        ) from e
    return PickleScan(path=path, kind=kind, globals=frozenset(found), unsafe=_unsafe(found))


def _unsafe(found: set[str]) -> tuple[str, ...]:
    allowed = allowed_globals()
    return tuple(sorted(g for g in found if g not in allowed))


def scan_pickle_stream(stream: BinaryIO | bytes, *, into: set[str] | None = None) -> set[str]:
    """One pickle (bytes or a file positioned at its start) → the globals it names.

    Handles GLOBAL, INST and STACK_GLOBAL. A STACK_GLOBAL whose operands are not string
    constants is reported as ``UNRESOLVED`` so that it is refused rather than missed.
    Stops after the pickle's STOP opcode, leaving a file positioned just past it. With
    ``into``, globals are added to that set as they are met (kept if the stream breaks).
    """
    if isinstance(stream, bytes | bytearray):
        stream = io.BytesIO(stream)
    found: set[str] = set() if into is None else into
    pushed: list[str | None] = []  # last values pushed; strings kept, anything else None
    memo: dict[int, str | None] = {}
    for op, arg, _pos in pickletools.genops(stream):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            found.add(_qualified(module, attr))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            if len(pushed) >= 2 and isinstance(pushed[-2], str) and isinstance(pushed[-1], str):
                found.add(_qualified(pushed[-2], pushed[-1]))
            else:
                found.add(UNRESOLVED)
            del pushed[-2:]
            pushed.append(None)
        elif name in _STRING_OPS:
            pushed.append(arg if isinstance(arg, str) else None)
        elif name in _PUT_OPS:
            memo[int(arg)] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name in _GET_OPS:
            pushed.append(memo.get(int(arg)))
        elif name == "POP" and pushed:
            pushed.pop()
        elif name not in _NEUTRAL_OPS:
            pushed.append(None)
        if len(pushed) > 64:  # only the top of the stack matters
            del pushed[:-8]
    return found


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
    if path.suffix.lower() == ".safetensors":
        # torch.load hands paths ending in .safetensors to safetensors; this one is a
        # pickle under that name, so pass an open file (mmap needs a path: read it instead).
        with open(path, "rb") as f:
            return torch.load(f, map_location="cpu", weights_only=not trusted)
    return torch.load(path, map_location="cpu", weights_only=not trusted, mmap=mmap)


def unsafe_error(scans: Iterable[PickleScan]) -> UnsafeCheckpointError:
    """Scans with unsafe globals → one UnsafeCheckpointError naming every global and file."""
    scans = [s for s in scans if s.unsafe]
    names = sorted({g for s in scans for g in s.unsafe})
    files = ", ".join(str(s.path) for s in scans[:5]) + (" ..." if len(scans) > 5 else "")
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


def _scan_zip(path: Path, found: set[str]) -> str:
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        names = [m.filename for m in members]
        if not any(_is_pickle_member(n, "data.pkl") for n in names):
            raise CheckpointFormatError(
                f"{path} is a zip archive without a data.pkl, so it is not a torch checkpoint. "
                "Expected a file written by torch.save."
            )
        kind = "torchscript" if any(_is_pickle_member(n, "constants.pkl") for n in names) else "zip"
        # every member is read by its own entry, so a duplicated name cannot hide one copy
        for member in members:
            if any(_is_pickle_member(member.filename, p) for p in _PICKLE_MEMBERS[kind]):
                with zf.open(member) as f:
                    scan_pickle_stream(f.read(), into=found)
    return kind


_PICKLE_MEMBERS = {"zip": ("data.pkl",), "torchscript": ("data.pkl", "constants.pkl")}


def _is_pickle_member(name: str, base: str) -> bool:
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
