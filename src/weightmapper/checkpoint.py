"""Any checkpoint on disk → a lazy TensorTable; the one place checkpoint keys are cleaned.

Reads single and sharded safetensors (header only), torch pickles (``.pt``/``.pth``/
``.bin``, zip or legacy, single or sharded with an index JSON), Lightning ``.ckpt`` files,
and state dicts nested under ``state_dict`` / ``model`` / ... . Tensor data is read only
when asked for (``load``, ``iter_files``, ``to_state_dict``). Pickles are scanned before
loading and refused when they would import code (see ``weightmapper.pickle_safety``).
"""

from __future__ import annotations

import logging
import os
import re
import stat
import struct
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import repeat
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple, Protocol

import torch
from safetensors import safe_open

from weightmapper.bounded_json import loads_bounded
from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError
from weightmapper.hashing import checkpoint_sha256
from weightmapper.pickle_safety import PickleScan, load_torch_file, scan_file, unsafe_error
from weightmapper.safetensors_io import MAX_HEADER_BYTES, read_header
from weightmapper.tensor_info import TensorInfo, dtype_name

logger = logging.getLogger(__name__)

WRAPPER_PREFIXES: tuple[str, ...] = ("module.", "_orig_mod.")
"""Prefixes added by wrappers, never by a model: DDP/DataParallel and torch.compile."""
COMPILE_INFIX = "._orig_mod."
"""torch.compile on a submodule leaves ``_orig_mod.`` inside the key."""

STATE_DICT_KEYS: tuple[str, ...] = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "params",
    "weights",
)
"""Keys a state dict is commonly nested under, tried in this order."""
EMA_KEYS: tuple[str, ...] = (
    "state_dict_ema",
    "model_ema",
    "ema_state_dict",
    "ema",
    "ema_model",
)
"""Keys an EMA copy is commonly nested under; reported, used only when asked for."""
MAX_INDEX_BYTES = 64 << 20
"""Largest shard index read (a 100k-tensor index is a few MB)."""
MAX_NAME_CHARS = 1024
"""Longest tensor name accepted (real ones stay under 300 characters)."""
MAX_NAME_PARTS = 64
"""Most dotted parts in a tensor name (module nesting; real ones stay under 20)."""
LIGHTNING_MARKERS: tuple[str, ...] = ("pytorch-lightning_version", "lightning_version")

_DEFAULT_NAMES: tuple[str, ...] = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
_CANDIDATE_GLOBS: tuple[tuple[str, ...], ...] = (
    ("*.safetensors.index.json",),
    ("*.index.json",),
    ("*.safetensors",),
    ("*.bin", "*.pt", "*.pth", "*.ckpt"),
)


class _Source(NamedTuple):
    """Where one tensor's data is: built per name only once data or original names are asked
    for (mapping reads names, shapes and dtypes alone)."""

    original: str
    """Key as written in the file (before wrapper prefixes were stripped)."""
    stored: str
    """Key to read the data under; differs from ``original`` for a safetensors alias."""
    file: Path


class TensorTable(Mapping[str, TensorInfo]):
    """Read-only name → TensorInfo table of one checkpoint; tensor data is read on demand.

    Names are normalized (wrapper prefixes stripped unless ``strip_prefixes=False``);
    ``original_name`` gives the key as stored. Tied names (one storage under several
    names) all appear, are listed in ``tied`` and load as the same tensor object.
    """

    def __init__(
        self,
        *,
        path: Path,
        format: str,
        files: list[Path],
        names: list[str],
        infos: list[TensorInfo],
        originals: list[str],
        stored: list[str],
        where: list[Path],
        readers: dict[Path, _Reader],
        metadata: dict[str, Any],
        stripped_prefixes: list[str],
        suggested_prefix: str | None,
        tied: list[tuple[str, ...]],
        index: Path | None = None,
    ) -> None:
        self.path = path
        """The checkpoint file or index the table was read from."""
        self.format = format
        """``safetensors``, ``safetensors-sharded``, ``pickle``, ``pickle-sharded``,
        ``lightning`` or ``torchscript``."""
        self.files = files
        """Files holding tensor data, in a stable order."""
        self.index = index
        """The shard index JSON, when sharded."""
        self.metadata = metadata
        """JSON-ready extras: ``nested_key``, ``lightning`` (hyper-parameters, epoch, ...),
        ``safetensors`` (header metadata), ``ema_keys``, ``unsafe_globals`` (trusted loads)."""
        self.stripped_prefixes = stripped_prefixes
        """Wrapper prefixes removed from every key, in the order they were removed."""
        self.suggested_prefix = suggested_prefix
        """A prefix every key shares (Lightning's ``model.``): offered, never removed."""
        self.tied = tied
        """Groups of names that share one storage, each sorted; list sorted."""
        self._infos = dict(zip(names, infos, strict=True))
        self._columns = (names, originals, stored, where)
        self._readers = readers

    @cached_property
    def _sources(self) -> dict[str, _Source]:
        """Normalized name → where its data is (built when first asked for)."""
        names, originals, stored, where = self._columns
        return dict(zip(names, map(_Source, originals, stored, where), strict=True))

    def __getitem__(self, name: str) -> TensorInfo:
        return self._infos[name]

    def infos(self) -> dict[str, TensorInfo]:
        """() → a new {normalized name: TensorInfo} dict in table order (``dict(table)``
        without a ``__getitem__`` call per name)."""
        return self._infos.copy()

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def __repr__(self) -> str:
        return (
            f"TensorTable({str(self.path)!r}, format={self.format!r}, tensors={len(self)}, "
            f"files={len(self.files)})"
        )

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data, each shared storage counted once."""
        return sum(self._infos[n].nbytes for n in self.unique_names())

    def original_name(self, name: str) -> str:
        """Normalized name → the key as written in the file."""
        return self._sources[name].original

    def load(self, name: str) -> torch.Tensor:
        """Normalized name → its tensor on CPU; the file is never modified.

        Safetensors data is read now into a new tensor. Pickles are memory-mapped: the
        tensor is a copy-on-write view of the file, read from disk as it is touched.
        """
        source = self._sources[name]
        return self._readers[source.file].load([source.stored])[source.stored]

    def iter_files(self) -> Iterator[tuple[Path, dict[str, torch.Tensor]]]:
        """() → (file, {normalized name: tensor}) one file at a time, so one shard is in memory."""
        by_file: dict[Path, list[str]] = {f: [] for f in self.files}
        sources = self._sources
        for n, source in sources.items():
            by_file[source.file].append(n)
        for file, names in by_file.items():
            stored = self._readers[file].load(sorted({sources[n].stored for n in names}))
            yield file, {n: stored[sources[n].stored] for n in names}

    def to_state_dict(self) -> dict[str, torch.Tensor]:
        """() → every tensor under its normalized name; tied names share one tensor."""
        out: dict[str, torch.Tensor] = {}
        for _file, tensors in self.iter_files():
            out.update(tensors)
        return {n: out[n] for n in self._infos}

    def content_hash(self) -> str:
        """() → the checkpoint's sha256 (see :func:`weightmapper.hashing.files_sha256`) over
        its data files, each file's digest kept in the hash cache."""
        return checkpoint_sha256(self.files)

    def conversion_problems(
        self, names: Iterable[str], *, allow_expanded: bool = False
    ) -> list[str]:
        """Normalized names → ``"name: why"`` for each that cannot be written as dense data
        (meta, sparse, quantized; expanded unless ``allow_expanded``), see ``tensor_problem``."""
        found = self.metadata.get("unconvertible") or {}
        out = []
        for n in names:
            why = found.get(self.original_name(n)) if n in self._infos else None
            if why and not (allow_expanded and why.startswith("expanded")):
                out.append(f"{n}: {why}")
        return out

    def unique_names(self) -> list[str]:
        """() → names in checkpoint order, each tied group represented by its first name."""
        seconds = {n for group in self.tied for n in group[1:]}
        return [n for n in self._infos if n not in seconds]


def open_checkpoint(
    path: str | os.PathLike[str],
    *,
    trusted: bool = False,
    strip_prefixes: bool = True,
    nested_key: str | None = None,
) -> TensorTable:
    """Checkpoint path (file, index JSON or directory) → lazy TensorTable; reads headers only.

    ``trusted=True`` lets a pickle import globals outside torch's safe list (its code may
    run); use it only for files whose origin you trust. ``nested_key`` picks the dict a
    state dict is nested under (``state_dict_ema``; ``/`` separates levels); by default
    the usual keys are tried. Raises CheckpointNotFoundError, CheckpointFormatError or
    UnsafeCheckpointError.
    """
    resolved, kind = resolve_checkpoint(path)
    if kind == "index":
        raw = _read_sharded(resolved, trusted=trusted, nested_key=nested_key)
    elif kind == "safetensors":
        raw = _read_safetensors_file(resolved)
    else:
        raw = _read_pickle_file(resolved, trusted=trusted, nested_key=nested_key)
    return _build_table(resolved, raw, strip_prefixes=strip_prefixes)


def load_checkpoint_as_dict(path: str | os.PathLike[str], **kwargs: Any) -> dict[str, torch.Tensor]:
    """Checkpoint path → plain {normalized name: tensor} dict (all data read); kwargs as open_checkpoint."""
    return open_checkpoint(path, **kwargs).to_state_dict()


def strip_wrapper_prefixes(names: Iterable[str]) -> tuple[list[str], list[str]]:
    """Keys → (keys without wrapper prefixes, prefixes stripped in order).

    ``module.`` (DDP/DataParallel) and ``_orig_mod.`` (torch.compile) are removed when
    every key starts with them, repeatedly (``module._orig_mod.``); ``._orig_mod.`` inside
    keys (a compiled submodule) is removed too. Nothing is stripped where stripping would
    make two keys equal. Other shared prefixes are left alone (see ``suggest_prefix``).
    """
    names = list(names)
    stripped: list[str] = []
    changed = True
    while changed and names:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(n.startswith(prefix) and len(n) > len(prefix) for n in names):
                names = [n[len(prefix) :] for n in names]
                stripped.append(prefix)
                changed = True
    if any(map(str.__contains__, names, repeat(COMPILE_INFIX))):
        candidate = [n.replace(COMPILE_INFIX, ".") for n in names]
        if len(set(candidate)) == len(candidate):
            names = candidate
            if "_orig_mod." not in stripped:
                stripped.append("_orig_mod.")
        else:
            logger.warning("not stripping %r inside keys: it would merge keys", COMPILE_INFIX)
    return names, stripped


def suggest_prefix(names: Iterable[str]) -> str | None:
    """Keys → a first component every key shares (``model.``), or None.

    Offered (Lightning's ``model.``, a ``backbone.``), never removed automatically: the
    prefix may be part of the target's names too. Not offered when the keys are the leaves
    of a single module (``fc.weight``, ``fc.bias``).
    """
    names = list(names)
    if not names:
        return None
    # one first component and a dot in every key: every key starts with the first key's
    prefix = names[0].split(".", 1)[0] + "."
    if not all(n.startswith(prefix) for n in names):
        return None
    if not any("." in n[len(prefix) :] for n in names):
        return None
    return prefix


def resolve_checkpoint(path: str | os.PathLike[str]) -> tuple[Path, str]:
    """User path → (checkpoint file or index, kind: ``index``, ``safetensors`` or ``pickle``).

    A directory is searched for the usual names (``model.safetensors.index.json``,
    ``model.safetensors``, ``pytorch_model.bin[.index.json]``), then for a single
    checkpoint-like file. The kind comes from the file's first bytes, not its extension.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(
            f"checkpoint {p} does not exist. Expected a checkpoint file, a shard index JSON or "
            "a directory holding one; check the path."
        )
    if p.is_dir():
        p = _find_in_directory(p)
    return p, _sniff(p)


_SHARD_NAME = re.compile(r"-(\d{5})-of-(\d{5})\.[A-Za-z]+$")
"""``model-00001-of-00003.safetensors``: the shard naming of HF and of our own output."""


def _find_in_directory(d: Path) -> Path:
    for name in _DEFAULT_NAMES:
        if (d / name).is_file():
            return d / name
    for patterns in _CANDIDATE_GLOBS:
        found = sorted({f for pat in patterns for f in d.glob(pat) if f.is_file()})
        if len(found) == 1:
            shard = _SHARD_NAME.search(found[0].name)
            if shard and int(shard.group(2)) > 1:
                # One shard of several and no index: an unfinished write (the index comes
                # last), never a whole checkpoint.
                raise CheckpointFormatError(
                    f"{d} holds only {found[0].name}, shard {int(shard.group(1))} of "
                    f"{int(shard.group(2))}, and no index: the checkpoint is incomplete (a "
                    "conversion that did not finish?). Rerun the conversion, or pass the "
                    "shard file itself to read just that shard."
                )
            return found[0]
        if len(found) > 1:
            listed = ", ".join(f.name for f in found[:8])
            raise CheckpointFormatError(
                f"{d} holds several checkpoint files ({listed}) and no index naming them. "
                "Expected one checkpoint or a *.index.json; pass the file or index to use."
            )
    raise CheckpointNotFoundError(
        f"no checkpoint found in directory {d}: expected model.safetensors, a *.index.json, "
        "or one .safetensors/.bin/.pt/.pth/.ckpt file. Pass the checkpoint file itself."
    )


def _sniff(p: Path) -> str:
    _require_regular(p, "the checkpoint")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise CheckpointNotFoundError(
            f"cannot read {p}: {e.strerror or e}; check permissions."
        ) from e
    if size == 0:
        raise CheckpointFormatError(
            f"{p} is empty (0 bytes); expected a checkpoint. Re-download or re-save it."
        )
    # safetensors first: its 8-byte header length may itself start with 0x80.
    if len(head) >= 9 and head[8:9] == b"{" and head[:4] != b"PK\x03\x04":
        (n,) = struct.unpack("<Q", head[:8])
        if n <= min(size - 8, MAX_HEADER_BYTES):
            return "safetensors"
        raise CheckpointFormatError(
            f"{p} looks like safetensors but its header claims {n} bytes in a {size}-byte file: "
            "the file is truncated or corrupt. Re-download or re-save it."
        )
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "pickle"
    if head.lstrip()[:1] == b"{":
        return "index"
    raise CheckpointFormatError(
        f"{p} is not a checkpoint format weightmapper reads: it starts with {head[:8]!r}. "
        "Expected safetensors, a torch.save file (.pt/.pth/.bin/.ckpt) or a shard index JSON."
    )


# ---------------------------------------------------------------------------------------
# Readers: one per file, each loads stored keys on demand.


class _Reader(Protocol):
    """Reads tensors of one file by their stored keys."""

    def load(self, keys: list[str]) -> dict[str, torch.Tensor]: ...


class _SafetensorsReader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, keys: list[str]) -> dict[str, torch.Tensor]:
        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as f:
                return {k: f.get_tensor(k) for k in keys}
        except Exception as e:  # SafetensorError, OSError, a dtype torch lacks, ...
            raise CheckpointFormatError(
                f"reading tensors from {self.path} failed ({e}); the file changed or is "
                "corrupt. Re-download or re-save it."
            ) from e


class _DictReader:
    """Tensors already unpickled (memory-mapped for zip files, so data is read when touched)."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        self.tensors = tensors

    def load(self, keys: list[str]) -> dict[str, torch.Tensor]:
        return {k: self.tensors[k] for k in keys}


@dataclass
class _RawCheckpoint:
    """What a format reader hands to _build_table: stored keys, not yet normalized."""

    format: str
    files: list[Path]
    names: list[str]
    """Keys as written in the file(s), in file order (a safetensors alias after the rest)."""
    infos: list[TensorInfo]
    """Each key's TensorInfo, named as in the file."""
    stored: list[str]
    """Each key's key to read the data under (the kept tensor's, for an alias)."""
    where: list[Path]
    """Each key's file."""
    readers: dict[Path, _Reader]
    metadata: dict[str, Any]
    tied: list[tuple[str, ...]]
    index: Path | None = None


def _read_safetensors_file(path: Path) -> _RawCheckpoint:
    header = read_header(path)
    names, infos, stored = header.names, header.tensor_infos(), header.names
    groups: dict[str, list[str]] = {}
    aliases = header.aliases()
    if aliases:  # tied names listed after the stored ones, each read as the tensor it names
        position = {name: i for i, name in enumerate(names)}
        infos += [_renamed(infos[position[kept]], alias) for alias, kept in aliases.items()]
        names = [*names, *aliases]
        stored = [*stored, *aliases.values()]
        for alias, kept in aliases.items():
            groups.setdefault(kept, [kept]).append(alias)
    return _RawCheckpoint(
        format="safetensors",
        files=[path],
        names=names,
        infos=infos,
        stored=stored,
        where=[path] * len(names),
        readers={path: _SafetensorsReader(path)},
        metadata={"safetensors": dict(header.metadata)} if header.metadata else {},
        tied=[tuple(g) for g in groups.values()],
    )


def _read_pickle_file(
    path: Path, *, trusted: bool, nested_key: str | None, scan: PickleScan | None = None
) -> _RawCheckpoint:
    obj, scan = load_torch_file(path, trusted=trusted, scan=scan)
    state, fmt, metadata = extract_state_dict(obj, nested_key=nested_key, source=path)
    _note_scan(metadata, [scan])
    problems = {k: why for k, t in state.items() if (why := tensor_problem(t))}
    if problems:
        metadata["unconvertible"] = problems
    names = list(state)
    return _RawCheckpoint(
        format=fmt,
        files=[path],
        names=names,
        infos=[_info_from_tensor(k, t, path) for k, t in state.items()],
        stored=names,
        where=[path] * len(names),
        readers={path: _DictReader(state)},
        metadata=metadata,
        tied=_shared_storage_groups(state),
    )


def _read_sharded(index: Path, *, trusted: bool, nested_key: str | None) -> _RawCheckpoint:
    weight_map, index_meta = read_shard_index(index)
    if not weight_map:
        raise CheckpointFormatError(
            f"{index} lists no tensors in its 'weight_map'; expected at least one. The index is "
            "empty or was not written completely."
        )
    shards = sorted(set(weight_map.values()))
    files = _checked_shards(index, weight_map)
    kinds = {f: _sniff(f) for f in files}
    if set(kinds.values()) == {"safetensors"}:
        raws = [_read_safetensors_file(f) for f in files]
        fmt = "safetensors-sharded"
    elif set(kinds.values()) == {"pickle"}:
        scans = [scan_file(f) for f in files]
        if not trusted and any(s.unsafe for s in scans):
            raise unsafe_error(scans)  # every offending shard named before any is loaded
        raws = [
            _read_pickle_file(f, trusted=trusted, nested_key=nested_key, scan=scan)
            for f, scan in zip(files, scans, strict=True)
        ]
        fmt = "pickle-sharded"
    else:
        listed = ", ".join(f"{f.name}: {k}" for f, k in kinds.items())
        raise CheckpointFormatError(
            f"{index} mixes shard formats ({listed}); expected all safetensors or all pickles."
        )
    names = [key for raw in raws for key in raw.names]
    where = [file for raw in raws for file in raw.where]
    seen_in: dict[str, Path] = {}
    for key, file in zip(names, where, strict=True):
        if key in seen_in:
            raise CheckpointFormatError(
                f"tensor {key!r} is stored in two shards, {seen_in[key].name} and "
                f"{file.name}; expected each tensor in exactly one shard. The checkpoint "
                "is inconsistent: re-save it."
            )
        seen_in[key] = file
    shard_path = {shard: index.parent / shard for shard in shards}
    absent = [k for k, shard in weight_map.items() if seen_in.get(k) != shard_path[shard]]
    if absent:
        listed = ", ".join(f"{k} (in {weight_map[k]})" for k in absent[:10])
        raise CheckpointFormatError(
            f"{index} lists {len(absent)} tensor(s) its shards do not hold where it says: {listed}. "
            "Expected every indexed tensor in its shard; the index and shards do not match."
        )
    extra = sorted(set(names) - set(weight_map))
    metadata: dict[str, Any] = {"index": index_meta} if index_meta else {}
    if extra:
        logger.warning("%s: %d tensor(s) in shards but not in the index", index, len(extra))
        metadata["not_in_index"] = extra
    for raw in raws:
        for k, v in raw.metadata.items():
            if k == "unconvertible":
                metadata.setdefault(k, {}).update(v)
            else:
                metadata.setdefault(k, v)
    readers = {f: r for raw in raws for f, r in raw.readers.items()}
    return _RawCheckpoint(
        format=fmt,
        files=files,
        names=names,
        infos=[info for raw in raws for info in raw.infos],
        stored=[key for raw in raws for key in raw.stored],
        where=where,
        readers=readers,
        metadata=metadata,
        tied=[g for raw in raws for g in raw.tied],
        index=index,
    )


def read_shard_index(index: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """Shard index JSON → ({tensor name: shard file}, index metadata); shard paths checked."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [k for k, _ in pairs]
        dups = sorted(k for k, c in Counter(keys).items() if c > 1)
        if dups:
            raise CheckpointFormatError(
                f"{index} lists {', '.join(dups[:10])} more than once (a tensor in two shards); "
                "expected each tensor once. Fix or regenerate the index."
            )
        return dict(pairs)

    try:
        if index.stat().st_size > MAX_INDEX_BYTES:
            raise CheckpointFormatError(
                f"{index} is {index.stat().st_size:,} bytes, more than the {MAX_INDEX_BYTES:,} a "
                "shard index may take; expected a small JSON listing tensors and shards."
            )
        data = loads_bounded(index.read_bytes(), object_pairs_hook=no_duplicates)
    except (ValueError, OSError) as e:
        if isinstance(e, CheckpointFormatError):
            raise
        raise CheckpointFormatError(
            f"{index} is not a readable shard index ({e}); expected JSON with a 'weight_map'."
        ) from e
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise CheckpointFormatError(
            f"{index} has no valid 'weight_map' (tensor name → shard file); expected an index "
            "like model.safetensors.index.json."
        )
    for shard in set(weight_map.values()):
        _check_shard_path(index, shard)
    meta = data.get("metadata")
    return weight_map, meta if isinstance(meta, dict) else {}


def shard_files(index: str | os.PathLike[str]) -> list[Path]:
    """Shard index JSON → its shard files in name order, each checked to be a regular file
    inside the index's folder (symlinks to regular files allowed) before anything reads or
    hashes it. Raises CheckpointNotFoundError or CheckpointFormatError."""
    index = Path(index)
    weight_map, _meta = read_shard_index(index)
    return _checked_shards(index, weight_map)


def _checked_shards(index: Path, weight_map: Mapping[str, str]) -> list[Path]:
    files = [index.parent / s for s in sorted(set(weight_map.values()))]
    missing = [f for f in files if not f.exists()]
    if missing:
        counts = Counter(weight_map.values())
        listed = ", ".join(f"{f.name} ({counts[f.name]} tensors)" for f in missing[:10])
        raise CheckpointNotFoundError(
            f"{index} names shard(s) that do not exist: {listed}. Expected every shard next to "
            "the index; download the missing files or fix the index."
        )
    for f in files:
        _require_regular(f, f"shard {f.name} named by {index}")
    return files


def _require_regular(p: Path, what: str) -> None:
    """Path → None when it is (a symlink to) a regular file; else CheckpointFormatError.

    Devices, FIFOs and sockets are refused before they are opened: reading ``/dev/zero``
    never ends and opening a FIFO blocks.
    """
    try:
        mode = p.stat().st_mode
    except OSError as e:
        raise CheckpointNotFoundError(f"cannot read {what} ({p}): {e.strerror or e}") from e
    if not stat.S_ISREG(mode):
        kind = (
            "a folder" if stat.S_ISDIR(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode)
            else "a socket" if stat.S_ISSOCK(mode)
            else "not a regular file"
        )  # fmt: skip
        raise CheckpointFormatError(
            f"{what} is {kind} ({p}); expected a regular checkpoint file. Pass the checkpoint "
            "file itself, or fix the index."
        )


def _check_shard_path(index: Path, shard: str) -> None:
    # Checked on the text, not resolved: hub caches symlink shards to blobs elsewhere.
    pure = PurePosixPath(shard.replace("\\", "/"))
    if not shard or pure.is_absolute() or ".." in pure.parts or ":" in shard:
        raise CheckpointFormatError(
            f"{index} names shard {shard!r}, which points outside the index's directory; "
            "expected a file name next to the index. Refusing to read it."
        )


def extract_state_dict(
    obj: Any, *, nested_key: str | None = None, source: Path | str = "<object>"
) -> tuple[dict[str, torch.Tensor], str, dict[str, Any]]:
    """Unpickled checkpoint object → (flat tensor dict, format, JSON-ready metadata).

    Handles a bare state dict, Lightning checkpoints (``state_dict`` plus extras kept as
    metadata), dicts nesting the state dict under a usual key, and (trusted loads only)
    whole ``nn.Module`` or TorchScript objects.
    """
    if isinstance(obj, torch.jit.ScriptModule):
        return dict(obj.state_dict()), "torchscript", {}
    if isinstance(obj, torch.nn.Module):
        return dict(obj.state_dict()), "pickle", {"module_class": type(obj).__qualname__}
    if not isinstance(obj, Mapping):
        raise CheckpointFormatError(
            f"{source} holds a {type(obj).__name__}, expected a dict of tensors (a state dict) "
            "or a checkpoint dict containing one."
        )
    metadata: dict[str, Any] = {}
    ema = [k for k in EMA_KEYS if isinstance(obj.get(k), Mapping)]
    if ema:
        metadata["ema_keys"] = ema
    fmt = "pickle"
    if nested_key is not None:
        inner: Any = obj
        for part in nested_key.split("/"):
            if not isinstance(inner, Mapping) or part not in inner:
                avail = sorted(str(k) for k in inner) if isinstance(inner, Mapping) else []
                raise CheckpointFormatError(
                    f"{source} has no nested key {nested_key!r} (missing {part!r}); available: "
                    f"{', '.join(avail[:20]) or 'none'}. Pass one of those."
                )
            inner = inner[part]
        chosen, key = inner, nested_key
    elif "state_dict" in obj and any(m in obj for m in LIGHTNING_MARKERS):
        chosen, key, fmt = obj["state_dict"], "state_dict", "lightning"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        chosen, key = obj, None
    else:
        chosen, key = _find_nested(obj)
    if key is not None:
        metadata["nested_key"] = key
        extras = {str(k): v for k, v in obj.items() if k != key.split("/")[0]}
        if extras:
            metadata["lightning" if fmt == "lightning" else "extras"] = summarize(extras)
    if isinstance(chosen, torch.nn.Module):  # a whole module under a key (trusted loads only)
        chosen = chosen.state_dict()
    if not isinstance(chosen, Mapping):
        raise CheckpointFormatError(
            f"{source}: {key!r} holds a {type(chosen).__name__}, expected a dict of tensors."
        )
    tensors = {str(k): v for k, v in chosen.items() if isinstance(v, torch.Tensor)}
    skipped = sorted(str(k) for k, v in chosen.items() if not isinstance(v, torch.Tensor))
    if skipped:
        metadata["non_tensor_keys"] = skipped
    if not tensors:
        top = ", ".join(f"{k} ({type(v).__name__})" for k, v in list(obj.items())[:20])
        raise CheckpointFormatError(
            f"{source} holds no tensors where a state dict was expected (top-level keys: "
            f"{top or 'none'}). Name the dict that holds the weights: in Python, "
            "open_checkpoint(path, nested_key='KEY'); on the command line, save that dict as "
            "its own file first (torch.save(ckpt['KEY'], 'weights.pt'))."
        )
    return tensors, fmt, metadata


def _find_nested(obj: Mapping[Any, Any]) -> tuple[Any, str | None]:
    for k in STATE_DICT_KEYS:
        inner = obj.get(k)
        if isinstance(inner, torch.nn.Module):  # a whole module (trusted loads only)
            return inner.state_dict(), k
        if isinstance(inner, Mapping) and inner:
            if any(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner, k
            deeper, sub = _find_nested(inner)
            if sub is not None:
                return deeper, f"{k}/{sub}"
    if any(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None  # tensors mixed with plain values (epoch, step): keep the tensors
    return obj, None


def summarize(value: Any, depth: int = 0) -> Any:
    """Any unpickled value → JSON-ready summary; tensors become ``Tensor(shape, dtype)`` strings."""
    if isinstance(value, torch.Tensor):
        return f"Tensor(shape={list(value.shape)}, dtype={dtype_name(value.dtype)})"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if depth >= 6:
        return f"<{type(value).__name__}>"
    if isinstance(value, Mapping):
        if len(value) > 100:
            return f"<{type(value).__name__} with {len(value)} entries>"
        return {str(k): summarize(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        if len(value) > 100:
            return f"<{type(value).__name__} of {len(value)} items>"
        return [summarize(v, depth + 1) for v in value]
    return repr(value)[:200]


EXPANSION_ALLOWANCE = 16 << 20
"""Bytes a stored tensor's logical size may exceed its storage by (a broadcast position-id
buffer) before converting it needs ``allow_expanded``."""


def tensor_problem(t: torch.Tensor) -> str | None:
    """Unpickled tensor → why it cannot be converted as stored data, or None.

    Meta tensors hold no data; sparse, nested and quantized tensors have no dense bytes to
    write; an expanded tensor (stride 0, a view wider than its storage) would be written at
    its logical size, many times what the file holds: that is allowed only when asked for.
    """
    if t.device.type == "meta":
        return "on the meta device: it holds no data"
    if t.layout != torch.strided:
        return f"{str(t.layout).removeprefix('torch.')} (not a dense tensor)"
    if t.is_quantized:
        return "quantized (no plain dense bytes)"
    logical = t.numel() * t.element_size()
    try:
        stored = t.untyped_storage().nbytes()
    except (RuntimeError, NotImplementedError):
        return None
    if logical > stored + EXPANSION_ALLOWANCE:
        return f"expanded: {logical:,} bytes of data from {stored:,} stored (a stride-0 view)"
    return None


def _info_from_tensor(key: str, t: torch.Tensor, file: Path) -> TensorInfo:
    return TensorInfo(
        name=key,
        shape=tuple(int(d) for d in t.shape),
        dtype=dtype_name(t.dtype),
        nbytes=t.numel() * t.element_size(),
        file=str(file),
    )


def _shared_storage_groups(state: Mapping[str, torch.Tensor]) -> list[tuple[str, ...]]:
    """State dict → groups of keys that are the same view of one storage (tied weights)."""
    groups: dict[tuple[Any, ...], list[str]] = {}
    for k, t in state.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        try:
            ptr = t.untyped_storage().data_ptr()
        except (RuntimeError, NotImplementedError):
            continue
        if ptr == 0:
            continue
        ident = (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        groups.setdefault(ident, []).append(k)
    return [tuple(g) for g in groups.values() if len(g) > 1]


def _note_scan(metadata: dict[str, Any], scans: list[PickleScan]) -> None:
    unsafe = sorted({g for s in scans for g in s.unsafe})
    if unsafe:  # only reachable with trusted=True
        metadata["unsafe_globals"] = unsafe


def _renamed(info: TensorInfo, name: str) -> TensorInfo:
    return TensorInfo(
        name=name,
        shape=info.shape,
        dtype=info.dtype,
        nbytes=info.nbytes,
        file=info.file,
        is_buffer=info.is_buffer,
    )


def _check_names(path: Path, names: Iterable[str]) -> None:
    """Tensor names → None, or CheckpointFormatError for one that is empty, too long or too
    deeply dotted."""
    names = list(names)
    if "" in names:
        raise CheckpointFormatError(
            f"{path} holds a tensor with an empty name; expected every tensor to have a name "
            "(as state_dict keys do), since a tensor without one can be neither mapped nor "
            "loaded. Re-save the checkpoint from its model, or give that tensor a name."
        )
    too_long = max(map(len, names), default=0) > MAX_NAME_CHARS
    too_deep = max(map(str.count, names, repeat(".")), default=0) >= MAX_NAME_PARTS
    if not (too_long or too_deep):
        return  # the usual case, checked in C; else the loop names the first offending name
    for name in names:
        if len(name) > MAX_NAME_CHARS or name.count(".") >= MAX_NAME_PARTS:
            raise CheckpointFormatError(
                f"{path} holds a tensor name of {len(name):,} characters and "
                f"{name.count('.') + 1:,} dotted parts ({name[:60]!r}…); expected at most "
                f"{MAX_NAME_CHARS} characters and {MAX_NAME_PARTS} parts (module nesting). The "
                "file is corrupt or hostile; re-save the checkpoint from its model."
            )


def _build_table(path: Path, raw: _RawCheckpoint, *, strip_prefixes: bool) -> TensorTable:
    originals = raw.names
    _check_names(path, originals)
    if strip_prefixes:
        names, stripped = strip_wrapper_prefixes(originals)
    else:
        names, stripped = originals, []
    infos = raw.infos
    tied = [tuple(g) for g in raw.tied if len(g) > 1]
    if stripped:  # names changed: each info is renamed, and so is every tied name
        logger.info("%s: stripped wrapper prefixes %s", path, stripped)
        infos = [
            info if info.name == name else _renamed(info, name)
            for info, name in zip(infos, names, strict=True)
        ]
        rename = dict(zip(originals, names, strict=True))
        tied = [tuple(rename[n] for n in g) for g in tied]
    return TensorTable(
        path=path,
        format=raw.format,
        files=raw.files,
        names=names,
        infos=infos,
        originals=originals,
        stored=raw.stored,
        where=raw.where,
        readers=raw.readers,
        metadata=raw.metadata,
        stripped_prefixes=stripped,
        suggested_prefix=suggest_prefix(names),
        tied=sorted(tuple(sorted(g)) for g in tied),
        index=raw.index,
    )
