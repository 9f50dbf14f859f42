"""Streaming conversion: source checkpoint + mapping → safetensors file(s), never half-written.

The whole output layout (names, dtypes, shapes, byte offsets, shard boundaries) is planned
from tensor headers and the mapping alone, with transforms run on the meta device. Data is
then read one tensor (or one split/merge group) at a time and written straight into the
shard being built, so peak memory stays near the largest tensor group rather than the
checkpoint. A tensor that is only renamed, with its dtype unchanged, is copied as a byte range
from a safetensors source by the kernel (``copy_file_range``) without entering Python.

Every shard is written under a temporary name, fsynced (unless ``durable=False``), and renamed
only when all shards are complete; the index (for sharded output) is renamed last, and an
earlier output's index is deleted before the first new shard lands, so a folder never pairs an
old index with new shards. A shard's header is padded so that its first byte-range copy
lines up with the source modulo 64 KiB, letting the kernel move whole page-cache folios.
The metadata records ``weightmapper_version``, ``source_sha256`` (the source's
``content_hash()``, computed in a thread beside the copy) and ``mapping_sha256``. Tied tensors
are written once; the other names are recorded both in a ``weightmapper_aliases`` JSON entry
and as plain ``{alias: stored}`` entries (the ``safetensors.torch.save_model`` convention),
which :func:`load_converted`, ``open_checkpoint`` and ``validate_state_dict`` honour.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import struct
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import torch

from weightmapper._version import __version__
from weightmapper.atomic import AtomicFiles, sweep_stale_temps
from weightmapper.bounded_json import loads_bounded
from weightmapper.errors import (
    CheckpointFormatError,
    MappingError,
    OutputError,
    TransformError,
)
from weightmapper.inventory import natural_key
from weightmapper.io_safety import ensure_outputs_safe, input_files
from weightmapper.result import MappingResult
from weightmapper.safetensors_io import (
    ALIASES_KEY,
    INDEX_SUFFIX,
    WRITABLE_CODES,
    SafetensorsHeader,
    read_header,
)
from weightmapper.safetensors_io import (  # readers of converted outputs, kept importable here
    load_converted as load_converted,
)
from weightmapper.safetensors_io import (
    output_files as output_files,
)
from weightmapper.safetensors_io import (
    read_aliases as read_aliases,
)
from weightmapper.safetensors_io import (
    read_metadata as read_metadata,
)
from weightmapper.tensor_info import TensorInfo, dtype_from_name, dtype_name
from weightmapper.transforms import TransformSpec, apply_transform, output_shapes

log = logging.getLogger(__name__)

TORCH_SUFFIXES: tuple[str, ...] = (".pt", ".pth", ".bin")
"""An output named with one of these is one torch.save file rather than safetensors."""

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


class SourceTable(Protocol):
    """What conversion needs from a checkpoint: name → TensorInfo, plus ``load(name)``."""

    def __getitem__(self, name: str) -> TensorInfo: ...
    def __iter__(self) -> Iterator[str]: ...
    def __len__(self) -> int: ...
    def __contains__(self, name: object) -> bool: ...
    def load(self, name: str) -> torch.Tensor: ...


@dataclass(frozen=True)
class ConvertReport:
    """What :func:`convert_checkpoint` wrote."""

    files: tuple[str, ...]
    """Output safetensors file(s), in shard order."""
    index_path: str | None
    """The ``*.safetensors.index.json`` written for sharded output, else None."""
    tensor_count: int
    """Target tensors in the output, aliases of tied tensors included."""
    bytes_written: int
    """Tensor data bytes written (headers excluded; each tied tensor counted once)."""
    source_sha256: str
    mapping_sha256: str
    dropped_source_keys: tuple[str, ...] = ()
    """Source keys the mapping does not use, sorted."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Tied target name → the name whose data it shares."""
    raw_copied: int = 0
    """Tensors copied as raw byte ranges (renamed only)."""

    def to_dict(self) -> dict[str, Any]:
        """ConvertReport → JSON-ready dict."""
        return {
            "files": list(self.files),
            "index_path": self.index_path,
            "tensor_count": self.tensor_count,
            "bytes_written": self.bytes_written,
            "source_sha256": self.source_sha256,
            "mapping_sha256": self.mapping_sha256,
            "dropped_source_keys": list(self.dropped_source_keys),
            "aliases": dict(sorted(self.aliases.items())),
            "raw_copied": self.raw_copied,
        }


@dataclass
class _Job:
    """One unit of work: source tensors → transform → target tensors."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]
    spec: TransformSpec
    out_dtypes: list[str]
    out_shapes: list[tuple[int, ...]]
    raw: tuple[str, int, int] | None = None
    """(file, absolute offset, length) when the output is a byte-identical copy."""
    locations: list[tuple[str, str, int, int] | None] = field(default_factory=list)
    """Per source: (safetensors file, key in it, offset, length), None to use table.load."""


@dataclass(frozen=True)
class _Entry:
    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    job: int


# --- public helpers ----------------------------------------------------------------------


def parse_size(size: int | str) -> int:
    """``2GB`` / ``500MiB`` / ``1e9``-style int → bytes (decimal KB/MB/GB, binary KiB/MiB/GiB)."""
    if isinstance(size, int) and not isinstance(size, bool):
        n = size
    else:
        m = _SIZE_RE.match(str(size))
        if not m:
            raise MappingError(
                f"shard size {size!r} is not a size; expected bytes or a number with a unit "
                "such as '2GB', '500MB' or '1GiB'"
            )
        n = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "B").lower()])
    if n <= 0:
        raise MappingError(f"shard size must be positive, got {size!r}; use e.g. '2GB'")
    return n


def mapping_sha256(mapping: MappingResult | Mapping[str, str]) -> str:
    """Mapping → sha256 of the canonical JSON of what it does (pairs, transforms, multi).

    Scores, settings and tool version are left out: two mappings that produce the same
    checkpoint hash the same.
    """
    result = _as_result(mapping)
    canonical = {
        "pairs": [[p.source, p.target, p.transform.to_dict()] for p in result.pairs],
        "multi": sorted(
            [list(m.sources), list(m.targets), m.transform.to_dict()] for m in result.multi
        ),
    }
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --- the conversion ----------------------------------------------------------------------


def convert_checkpoint(
    source: str | Path | SourceTable | Mapping[str, torch.Tensor],
    mapping: MappingResult | Mapping[str, str],
    out: str | Path,
    *,
    shard_size: int | str = "2GB",
    overwrite: bool = False,
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | None = None,
    source_sha256: str | None = None,
    durable: bool = True,
    protect: Iterable[str | os.PathLike[str]] = (),
    extra_files: Mapping[str, bytes] | None = None,
    allow_expanded: bool = False,
) -> ConvertReport:
    """Source checkpoint (path, TensorTable or state dict) + mapping → safetensors at ``out``.

    ``out`` ending in ``.safetensors`` names the file (shards go beside it as
    ``{stem}-00001-of-0000N.safetensors`` with ``{out}.index.json``); ending in ``.pt``,
    ``.pth`` or ``.bin`` it names one ``torch.save`` file (a state dict, tied tensors sharing
    storage; built in memory, as ``torch.load`` will read it); any other ``out`` is a
    directory receiving ``model.safetensors`` or HF-style shards and index, the names
    ``from_pretrained`` reads. ``extra_files`` ({name: bytes}, e.g. the target's
    ``config.json``) are written into the output's folder in the same all-or-nothing commit,
    before the weights. ``dtype`` casts
    floating-point tensors. ``progress(done_bytes, total_bytes)`` is called after each tensor.
    ``source_sha256`` is the source's ``content_hash()`` when the caller already has it (an
    earlier pipeline stage computed it); otherwise it is computed here, beside the copy.
    ``durable=False`` skips the fsyncs (the output is still all-or-nothing for a killed
    process, as with ``cp``, but may be lost in a power cut before the kernel flushes it).
    With ``overwrite``, files of an earlier conversion to ``out`` that the new layout does
    not reuse (shards of another count, an index beside a now single file) are removed.
    No output may be one of the source's files (see :mod:`weightmapper.io_safety`) nor of
    ``protect`` (other inputs of the caller, e.g. the mapping file): OutputError.
    A source tensor without dense data (meta, sparse, quantized) is refused, and so is an
    expanded one (a stride-0 view written at many times its stored size) unless
    ``allow_expanded``: CheckpointFormatError before anything is written.
    """
    result = _as_result(mapping)
    table = _as_table(source)
    limit = parse_size(shard_size)
    _check_sources(table, result, allow_expanded)
    jobs = _plan_jobs(table, result, dtype)
    entries, aliases = _plan_entries(table, jobs)
    if Path(out).suffix in TORCH_SUFFIXES:
        if extra_files:
            raise OutputError(
                f"{out} names one torch file, but files to write beside the weights were given "
                f"({', '.join(sorted(extra_files))}); give a folder as the output instead"
            )
        return _convert_to_torch_file(
            table,
            result,
            jobs,
            entries,
            aliases,
            Path(out),
            overwrite,
            durable,
            source_sha256,
            protect,
        )
    shards = _pack(entries, limit)
    paths, index_path = _output_paths(Path(out), len(shards))
    folder = Path(out).parent if Path(out).suffix == ".safetensors" else Path(out)
    extras = {folder / name: data for name, data in (extra_files or {}).items()}
    outputs = [*paths, *([index_path] if index_path else [])]
    previous = _previous_outputs(Path(out))
    _check_outputs([*extras, *outputs, *previous], table, overwrite, protect)

    map_hash = mapping_sha256(result)
    base_meta = {
        "format": "pt",
        "weightmapper_version": __version__,
        "source_sha256": _HASH_PLACEHOLDER,
        "mapping_sha256": map_hash,
    }
    total = sum(e.nbytes for e in entries)
    log.info(
        "converting %d tensor(s), %d byte(s), into %d shard(s) at %s",
        len(entries),
        total,
        len(shards),
        out,
    )

    writer = _Writer(table, jobs, total, progress)
    # Hashing the source reads every byte once more; doing it beside the copy hides most of
    # that time. The hash goes into each header at the end, over a fixed-width placeholder.
    hashing = _Background(_source_hash, table, source_sha256)
    for p in outputs:
        sweep_stale_temps(p)
    with AtomicFiles(durable=durable) as files:
        # Requested first, so renamed first: weights never stand without their config.
        for dest, data in extras.items():
            files.path(dest).write_bytes(data)
        try:
            tmps: list[tuple[Path, int]] = []
            weight_map: dict[str, str] = {}
            for path, shard in zip(paths, shards, strict=True):
                tmp = files.path(path)
                here = {e.name for e in shard}
                shard_aliases = {a: c for a, c in aliases.items() if c in here}
                writer.write_shard(tmp, shard, _shard_metadata(base_meta, shard_aliases))
                tmps.append((tmp, writer.placeholder_offset))
                weight_map.update({n: path.name for n in [*here, *shard_aliases]})
        finally:
            writer.close()
        # The data goes to disk while the source hash, if still running, finishes.
        files.sync_now()
        src_hash = hashing.result()
        for tmp, offset in tmps:
            _patch_placeholder(tmp, offset, src_hash)
        if index_path is not None:
            # Requested last, so renamed last: an index never names a missing shard.
            meta = {**base_meta, "source_sha256": src_hash, "total_size": total}
            if aliases:
                meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
            index = {"metadata": meta, "weight_map": dict(sorted(weight_map.items()))}
            files.path(index_path).write_text(json.dumps(index, indent=2), encoding="utf-8")
        # An earlier output's index goes before any new shard lands: while the renames run,
        # the folder must never hold an old index beside new shards of the same names.
        files.commit(remove_first=[p for p in previous if p.name.endswith(INDEX_SUFFIX)])
    for stale in previous:
        if stale not in outputs:
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
                log.info("removed %s, part of the output this conversion replaced", stale)

    return ConvertReport(
        files=tuple(str(p) for p in paths),
        index_path=str(index_path) if index_path else None,
        tensor_count=len(entries) + len(aliases),
        bytes_written=total,
        source_sha256=src_hash,
        mapping_sha256=map_hash,
        dropped_source_keys=_dropped(table, jobs),
        aliases=aliases,
        raw_copied=writer.raw_copied,
    )


def _dropped(table: Any, jobs: list[_Job]) -> tuple[str, ...]:
    """Source table + jobs → source keys no job reads, sorted (logged when any)."""
    used = {s for j in jobs for s in j.sources}
    dropped = tuple(sorted(k for k in table if k not in used))
    if dropped:
        log.info("%d source key(s) not in the mapping were dropped", len(dropped))
    return dropped


def _convert_to_torch_file(
    table: Any,
    result: MappingResult,
    jobs: list[_Job],
    entries: list[_Entry],
    aliases: dict[str, str],
    out: Path,
    overwrite: bool,
    durable: bool,
    source_sha256: str | None,
    protect: Iterable[str | os.PathLike[str]],
) -> ConvertReport:
    """Planned conversion → one ``torch.save`` state dict at ``out``, renamed into place whole.

    A pickle is written from memory in one piece, so the converted tensors are held at once
    (safetensors output streams instead); tied names share one tensor, as torch.save keeps.
    """
    _check_outputs([out], table, overwrite, protect)
    writer = _Writer(table, jobs, 0, None)
    state: dict[str, torch.Tensor] = {}
    try:
        for e in entries:
            # A one-to-one job's tensor may live in the reused read buffer: keep a copy.
            state[e.name] = writer._produce(e).clone()
    finally:
        writer.close()
    for alias, stored in aliases.items():
        state[alias] = state[stored]
    state = dict(sorted(state.items(), key=lambda kv: natural_key(kv[0])))
    src_hash = _source_hash(table, source_sha256)
    sweep_stale_temps(out)
    with AtomicFiles(durable=durable) as files:
        with files.path(out).open("wb") as f:
            # A file object, not a path: torch.save would name the archive after the temp name.
            _save_reporting_os_errors(state, f)
        files.commit()
    return ConvertReport(
        files=(str(out),),
        index_path=None,
        tensor_count=len(state),
        bytes_written=sum(e.nbytes for e in entries),
        source_sha256=src_hash,
        mapping_sha256=mapping_sha256(result),
        dropped_source_keys=_dropped(table, jobs),
        aliases=aliases,
    )


class _WriteErrors(io.RawIOBase):
    """A writable file that remembers the first OSError of its writes (torch.save turns it
    into an uninformative RuntimeError about the archive's position)."""

    def __init__(self, f: BinaryIO) -> None:
        super().__init__()
        self._f = f
        self.error: OSError | None = None

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            self.error = self.error or e
            raise


def _save_reporting_os_errors(state: dict[str, torch.Tensor], f: BinaryIO) -> None:
    """State dict + open file → torch.save into it; a failed write (a full disk) is raised
    as its OSError, which the atomic writer reports as our error, not torch's RuntimeError."""
    sink = _WriteErrors(f)
    try:
        torch.save(state, sink)
    except RuntimeError as e:
        if sink.error is not None:
            raise sink.error from e
        raise


# --- planning ----------------------------------------------------------------------------


def _as_result(mapping: MappingResult | Mapping[str, str]) -> MappingResult:
    if isinstance(mapping, MappingResult):
        return mapping
    if isinstance(mapping, Mapping):
        return MappingResult.from_simple(mapping)
    raise MappingError(
        "mapping must be a MappingResult or a {source: target} dict, got "
        f"{type(mapping).__name__}"
    )


def _as_table(source: Any) -> Any:
    if isinstance(source, (str, os.PathLike)):
        from weightmapper.checkpoint import open_checkpoint

        return open_checkpoint(source)
    if isinstance(source, Mapping) and not hasattr(source, "load"):
        return StateDictTable(source)
    if isinstance(source, Mapping):
        return source
    raise CheckpointFormatError(
        f"cannot read a checkpoint from {type(source).__name__}; pass a path, a TensorTable "
        "(weightmapper.open_checkpoint) or a state dict"
    )


class StateDictTable(Mapping[str, TensorInfo]):
    """In-memory state dict → the TensorTable interface conversion reads (name → TensorInfo)."""

    def __init__(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        bad = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointFormatError(
                f"state dict entries {bad[:5]} are not tensors; pass a flat name → tensor dict"
            )
        meta = [k for k, v in state_dict.items() if v.device.type == "meta"]
        if meta:
            raise CheckpointFormatError(
                f"state dict entries {meta[:5]} are on the meta device and hold no data; "
                "load real weights before converting"
            )
        odd = [f"{k} ({v.layout})" for k, v in state_dict.items() if v.layout != torch.strided]
        odd += [k for k, v in state_dict.items() if v.is_quantized]
        if odd:
            raise CheckpointFormatError(
                f"state dict entries {odd[:5]} are not dense tensors (sparse, nested or "
                "quantized); convert them with .to_dense() or .dequantize() first"
            )
        self._sd = dict(state_dict)
        self._infos = {k: TensorInfo.from_tensor(k, v) for k, v in self._sd.items()}
        self.files: list[str] = []
        self.format = "state_dict"

    def __getitem__(self, name: str) -> TensorInfo:
        return self._infos[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._infos)

    def __len__(self) -> int:
        return len(self._infos)

    def load(self, name: str) -> torch.Tensor:
        """Name → the tensor itself."""
        return self._sd[name]

    @property
    def tied(self) -> list[tuple[str, ...]]:
        """Groups of names that are the very same tensor view (shared storage, same layout)."""
        groups: dict[tuple[Any, ...], list[str]] = {}
        for k, t in self._sd.items():
            if t.device.type == "meta" or t.numel() == 0:
                continue
            sig = (
                t.untyped_storage().data_ptr(),
                t.storage_offset(),
                tuple(t.shape),
                t.stride(),
                t.dtype,
            )
            groups.setdefault(sig, []).append(k)
        return [tuple(g) for g in groups.values() if len(g) > 1]

    def content_hash(self) -> str:
        """State dict → sha256 over names, dtypes, shapes and bytes, in sorted name order."""
        h = hashlib.sha256()
        for k in sorted(self._sd):
            t = self._sd[k]
            h.update(f"{k}|{dtype_name(t.dtype)}|{tuple(t.shape)}\n".encode())
            if t.device.type != "meta":
                h.update(_tensor_bytes(t))
        return h.hexdigest()


def _check_sources(table: Any, result: MappingResult, allow_expanded: bool) -> None:
    """Refuse mapped source tensors that have no dense data to write (see ``tensor_problem``)."""
    check = getattr(table, "conversion_problems", None)
    if not callable(check):
        return
    names = [p.source for p in result.pairs if p.source in table]
    names += [s for m in result.multi for s in m.sources if s in table]
    problems = check(names, allow_expanded=allow_expanded)
    if problems:
        expanded = any(": expanded" in p for p in problems)
        hint = (
            "Re-save them as dense tensors (.contiguous(), .to_dense(), .dequantize())"
            + (", or pass allow_expanded=True (--allow-expanded) to write expanded tensors "
               "at their full size" if expanded else "")
        )  # fmt: skip
        raise CheckpointFormatError(
            f"{len(problems)} mapped source tensor(s) cannot be converted as stored: "
            f"{'; '.join(problems[:5])}. Expected dense tensors holding their data. {hint}."
        )


def _plan_jobs(table: Any, result: MappingResult, dtype: torch.dtype | None) -> list[_Job]:
    """Mapping + table headers → jobs with output dtypes and shapes, in target-name order."""
    missing = [p.source for p in result.pairs if p.source not in table]
    missing += [s for m in result.multi for s in m.sources if s not in table]
    if missing:
        raise CheckpointFormatError(
            f"{len(missing)} mapped source key(s) are not in the checkpoint, e.g. "
            f"{missing[:5]}. Was the mapping made for another checkpoint?"
        )
    wrong = [
        f"{p.source} {tuple(table[p.source].shape)} (mapping says {tuple(p.source_shape)})"
        for p in result.pairs
        if p.source_shape and tuple(p.source_shape) != tuple(table[p.source].shape)
    ]
    if wrong:
        raise CheckpointFormatError(
            f"{len(wrong)} source tensor(s) have another shape than the mapping recorded, e.g. "
            f"{wrong[:3]}. Was the mapping made for another checkpoint?"
        )
    units = [((p.source,), (p.target,), p.transform, p.target_shape) for p in result.pairs]
    units += [(m.sources, m.targets, m.transform, ()) for m in result.multi]
    headers: dict[str, SafetensorsHeader | None] = {}
    jobs: list[_Job] = []
    for sources, targets, spec, recorded in units:
        infos = [table[s] for s in sources]
        try:
            # identity needs no meta-device run: 100k renamed tensors plan in milliseconds
            shapes = (
                [tuple(infos[0].shape)]
                if spec.is_identity and len(infos) == 1
                else output_shapes(spec, [i.shape for i in infos])
            )
        except (TransformError, MappingError) as e:
            raise TransformError(f"mapping {list(sources)} → {list(targets)}: {e}") from e
        if len(shapes) != len(targets):
            raise TransformError(
                f"transform {spec.name} turns {list(sources)} into {len(shapes)} tensor(s) but "
                f"the mapping names {len(targets)} target(s) {list(targets)}; fix the mapping"
            )
        # A recorded target shape is what the target loads; an edited transform that misses
        # it would write a tensor no strict load accepts.
        if recorded and tuple(shapes[0]) != tuple(recorded):
            raise TransformError(
                f"mapping {sources[0]} → {targets[0]}: transform {spec.name} gives shape "
                f"{tuple(shapes[0])} but the mapping records target shape {tuple(recorded)}. "
                "Expected the transform to produce the recorded shape: was the mapping file "
                "edited? Re-create it with `weightmapper map`."
            )
        src_dtype = infos[0].dtype
        out_dtype = src_dtype
        if dtype is not None and dtype_from_name(src_dtype).is_floating_point:
            out_dtype = dtype_name(dtype)
        job = _Job(sources, targets, spec, [out_dtype] * len(targets), shapes)
        job.locations = [_locate(table, s, headers) for s in sources]
        first = job.locations[0]
        if first is not None and spec.is_identity and out_dtype == src_dtype and len(sources) == 1:
            job.raw = (first[0], first[2], first[3])
        jobs.append(job)
    # The output layout depends on the target names alone (natural order, layers.2 before
    # layers.10), never on the source's key order, so a shuffled source converts to the same
    # bytes. Reads are positional (pread / copy_file_range), so their order costs little.
    jobs.sort(key=lambda j: natural_key(j.targets[0]))
    return jobs


def _locate(
    table: Any, name: str, headers: dict[str, SafetensorsHeader | None]
) -> tuple[str, str, int, int] | None:
    """Source name → (safetensors file, key in that file, absolute data offset, length) or None.

    None when the tensor is not in a safetensors file or its header entry disagrees with the
    table (then it is read through ``table.load``).
    """
    info = table[name]
    file = info.file or ""
    if not file.endswith(".safetensors"):
        return None
    if file not in headers:
        try:
            headers[file] = read_header(file)
        except (OSError, CheckpointFormatError):
            headers[file] = None
    header = headers[file]
    if header is None:
        return None
    original_name = getattr(table, "original_name", None)
    key = original_name(name) if callable(original_name) else name
    entry = header.entries.get(key)
    if entry is None:
        return None
    same = entry.torch_dtype == info.dtype and entry.shape == tuple(info.shape)
    return (file, key, header.data_start + entry.start, entry.end - entry.start) if same else None


def _plan_entries(table: Any, jobs: list[_Job]) -> tuple[list[_Entry], dict[str, str]]:
    """Jobs → output entries in write order, plus {alias: canonical} for tied one-to-one outputs."""
    tied_group: dict[str, int] = {}
    for gi, group in enumerate(getattr(table, "tied", None) or []):
        for name in group:
            tied_group[name] = gi
    canonical: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    entries: list[_Entry] = []
    for ji, job in enumerate(jobs):
        if len(job.sources) == 1 and len(job.targets) == 1 and job.sources[0] in tied_group:
            sig = (
                tied_group[job.sources[0]],
                json.dumps(job.spec.to_dict(), sort_keys=True),
                job.out_dtypes[0],
            )
            if sig in canonical:
                aliases[job.targets[0]] = canonical[sig]
                job.targets = ()
                continue
            canonical[sig] = job.targets[0]
        for name, dt, shape in zip(job.targets, job.out_dtypes, job.out_shapes, strict=True):
            if dt not in WRITABLE_CODES:
                raise CheckpointFormatError(
                    f"tensor {name} has dtype {dt}, which safetensors cannot store; convert it "
                    "with dtype=torch.float32 or drop it from the mapping"
                )
            nbytes = _numel(shape) * dtype_from_name(dt).itemsize
            entries.append(_Entry(name, dt, tuple(shape), nbytes, ji))
    return entries, aliases


def _pack(entries: list[_Entry], limit: int) -> list[list[_Entry]]:
    """Entries in write order → shards of at most ``limit`` data bytes (a bigger tensor alone)."""
    shards: list[list[_Entry]] = [[]]
    size = 0
    for e in entries:
        if shards[-1] and size + e.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(e)
        size += e.nbytes
    return shards


def _output_paths(out: Path, n: int) -> tuple[list[Path], Path | None]:
    """Output argument + shard count → shard paths and index path (None for one file)."""
    if out.suffix == ".safetensors":
        folder, single, stem = out.parent, out, out.stem
    else:
        folder, single, stem = out, out / "model.safetensors", "model"
    if n == 1:
        return [single], None
    paths = [folder / f"{stem}-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    return paths, folder / f"{single.name}{INDEX_SUFFIX}"


def _previous_outputs(out: Path) -> list[Path]:
    """Output argument → files an earlier conversion to it left: the single file, the index
    and the shards that index names under this tool's shard naming."""
    (single,), _ = _output_paths(out, 1)
    _, index = _output_paths(out, 2)
    assert index is not None
    found = [p for p in (single, index) if p.is_file()]
    if index.is_file():
        try:
            names = set(loads_bounded(index.read_bytes())["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            names = set()
        shard = re.compile(rf"^{re.escape(single.stem)}-\d{{5}}-of-\d{{5}}\.safetensors$")
        found += sorted(
            index.parent / n
            for n in names
            if isinstance(n, str) and shard.match(n) and (index.parent / n).is_file()
        )
    return found


def _check_outputs(
    paths: list[Path], table: Any, overwrite: bool, protect: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Refuse outputs that are inputs (always) or that exist (unless overwrite)."""
    named = [*(getattr(table, "files", None) or []), getattr(table, "index", None)]
    named.append(getattr(table, "path", None))  # the file or index the user named
    named += [table[k].file for k in table if table[k].file]
    inputs: set[Path] = set()
    for f in dict.fromkeys(str(f) for f in named if f):
        inputs |= input_files(f)
    for f in protect:
        inputs |= input_files(f)
    ensure_outputs_safe(paths, inputs)
    existing = [str(p) for p in paths if p.exists()]
    if existing and not overwrite:
        raise OutputError(
            f"{existing[0]} already exists; refusing to overwrite it. Pass overwrite=True "
            "(or --force on the CLI) or choose another output path."
        )


class _Background:
    """Runs one function in a daemon thread (an abandoned conversion never waits for it)."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], *args: Any) -> None:
        try:
            self._value = fn(*args)
        except BaseException as e:  # re-raised in the caller's thread by result()
            self._error = e

    def result(self) -> Any:
        """Wait for the function; → its value, or raise its exception here."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _source_hash(table: Any, known: str | None = None) -> str:
    if known is not None:
        if not re.fullmatch(r"[0-9a-f]{64}", known):
            raise MappingError(
                f"source_sha256 {known!r} is not a sha256 hex digest (64 lowercase hex digits)"
            )
        return known
    content_hash = getattr(table, "content_hash", None)
    if callable(content_hash):
        return str(content_hash())
    return StateDictTable({k: table.load(k) for k in table}).content_hash()


# --- writing -----------------------------------------------------------------------------

_HASH_PLACEHOLDER = "0" * 64
_ALIGN = 64 << 10
"""Header padding aligns a shard's first byte-range copy with its source modulo this: the page
cache holds files in large folios, and a copy whose source and destination folios line up
moves whole folios (on ext4 here: 0.68 s instead of 0.90 s for 2.1 GB at 4 KiB alignment)."""


def _shard_metadata(base: dict[str, str], aliases: dict[str, str]) -> dict[str, str]:
    """Shared metadata + aliases whose stored tensor is in this shard → the shard's metadata.

    Aliases are written twice: as ``weightmapper_aliases`` JSON, and as plain {alias: stored}
    entries, the convention of ``safetensors.torch.save_model`` that other readers restore.
    """
    meta = dict(base)
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
        meta.update(aliases)
    return meta


def _placeholder_offset(blob: bytes) -> int:
    """Header JSON bytes → file offset of the source-hash placeholder (after the 8-byte length)."""
    needle = f'"source_sha256":"{_HASH_PLACEHOLDER}"'.encode()
    at = blob.find(needle)
    if at < 0:
        raise OutputError("internal: the header has no source-hash placeholder to fill")
    return 8 + at + len(needle) - len(_HASH_PLACEHOLDER) - 1


def _patch_placeholder(path: Path, offset: int, digest: str) -> None:
    """Written shard + placeholder offset + real source hash → the placeholder overwritten."""
    if len(digest) != len(_HASH_PLACEHOLDER):
        raise OutputError(f"{path}: source hash {digest!r} does not fit the header's placeholder")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, digest.encode("ascii"), offset)
    finally:
        os.close(fd)


class _Writer:
    """Streams planned entries into shard files; runs each job once and keeps only its outputs."""

    def __init__(
        self,
        table: Any,
        jobs: list[_Job],
        total: int,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.table = table
        self.jobs = jobs
        self.total = total
        self.progress = progress
        self.done = 0
        self.raw_copied = 0
        self.placeholder_offset = 0
        """File offset of the source-hash placeholder in the shard written last."""
        self._pending: dict[str, torch.Tensor] = {}
        self._fds: dict[str, int] = {}
        self._read_buf: bytearray | None = None

    def write_shard(self, tmp: Path, shard: list[_Entry], metadata: dict[str, str]) -> None:
        """Planned entries → one complete safetensors file at ``tmp``."""
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        for e in shard:
            header[e.name] = {
                "dtype": WRITABLE_CODES[e.dtype],
                "shape": list(e.shape),
                "data_offsets": [offset, offset + e.nbytes],
            }
            offset += e.nbytes
        blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
        blob += b" " * self._header_padding(len(blob), shard)
        self.placeholder_offset = _placeholder_offset(blob)
        # No O_TRUNC: the temp file is new and empty, and on ext4 truncate-then-write makes
        # close() start writeback (auto_da_alloc), costing time for nothing.
        fd = os.open(tmp, os.O_WRONLY)
        try:
            _write_all(fd, struct.pack("<Q", len(blob)) + blob)
            for e in shard:
                job = self.jobs[e.job]
                if job.raw is not None:
                    file, start, length = job.raw
                    _copy_range(self._source_fd(file), fd, start, length)
                    self.raw_copied += 1
                else:
                    t = self._produce(e)
                    data = _tensor_bytes(t)
                    if len(data) != e.nbytes:
                        raise TransformError(
                            f"{e.name}: produced {len(data)} bytes, planned {e.nbytes}; the "
                            "transform's output does not match its planned shape"
                        )
                    _write_all(fd, data)
                    del t, data  # freed before the next tensor is read, not after
                self.done += e.nbytes
                if self.progress is not None:
                    self.progress(self.done, self.total)
        finally:
            os.close(fd)

    def _header_padding(self, size: int, shard: list[_Entry]) -> int:
        """Header length → spaces to add so the data start is 8-aligned and, when the shard
        begins with byte-range copies, aligned with the source modulo ``_ALIGN`` (the kernel
        then copies whole page-cache folios). Costs at most 64 KiB of spaces in the header."""
        default = -size % 8
        rel = 0
        for e in shard:
            raw = self.jobs[e.job].raw
            if raw is not None:
                need = (raw[1] - rel - 8 - size) % _ALIGN
                return need if (size + need) % 8 == 0 else default
            rel += e.nbytes
        return default

    def _produce(self, e: _Entry) -> torch.Tensor:
        if e.name not in self._pending:
            job = self.jobs[e.job]
            # A one-to-one job's output is written at once, before the next job reads, so its
            # input may live in the read buffer reused from tensor to tensor (fresh memory for
            # every tensor is faulted in page by page: transposes ran 1.5× slower). Other jobs
            # keep outputs pending while other tensors are read.
            reuse = len(job.sources) == 1 and len(job.targets) == 1
            inputs = [
                self._load(s, loc, reuse=reuse)
                for s, loc in zip(job.sources, job.locations, strict=True)
            ]
            try:
                outs = apply_transform(job.spec, inputs)
            except TransformError as err:
                raise TransformError(f"mapping {list(job.sources)}: {err}") from err
            del inputs
            for name, t, dt in zip(job.targets, outs, job.out_dtypes, strict=True):
                self._pending[name] = t.to(dtype_from_name(dt)) if dtype_name(t.dtype) != dt else t
        t = self._pending.pop(e.name)
        if tuple(t.shape) != e.shape:
            raise TransformError(f"{e.name}: produced shape {tuple(t.shape)}, planned {e.shape}")
        return t

    def _load(
        self, name: str, location: tuple[str, str, int, int] | None, *, reuse: bool = False
    ) -> torch.Tensor:
        """Source name → tensor. From a safetensors file the bytes are read with pread: a
        memory map would keep every page it touched resident (and counted in RSS) until the
        file is closed, so a shard's worth of pages would pile up. With ``reuse`` they go
        into one buffer kept from tensor to tensor (the caller is done with the previous
        tensor by then), else into fresh memory."""
        if location is None:
            return self.table.load(name)
        file, _key, offset, length = location
        info = self.table[name]
        if reuse:
            if self._read_buf is None or len(self._read_buf) < length:
                self._read_buf = None
                self._read_buf = bytearray(length)
            buf = self._read_buf
        else:
            buf = bytearray(length)
        view = memoryview(buf)[:length]
        fd = self._source_fd(file)
        got = 0
        while got < length:
            n = os.preadv(fd, [view[got:]], offset + got)
            if n == 0:
                raise CheckpointFormatError(
                    f"{file} ended inside tensor {name}; the file is truncated: re-save it"
                )
            got += n
        dtype = dtype_from_name(info.dtype)
        if length == 0:
            return torch.empty(info.shape, dtype=dtype)
        count = length // dtype.itemsize
        return torch.frombuffer(buf, dtype=dtype, count=count).reshape(info.shape)

    def _source_fd(self, file: str) -> int:
        if file not in self._fds:
            self._fds[file] = os.open(file, os.O_RDONLY)
        return self._fds[file]

    def close(self) -> None:
        """Close source files opened for raw copies."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    """Tensor → its raw little-endian bytes (a view, no copy when already contiguous on CPU)."""
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous().reshape(-1)
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.view(torch.uint8).numpy()).cast("B")


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Byte range of one file → appended to another, in the kernel when it can."""
    copy = getattr(os, "copy_file_range", None)
    while length > 0:
        n = 0
        if copy is not None:
            try:
                n = copy(src_fd, dst_fd, length, offset)
            except OSError:
                copy = None  # other filesystem or kernel without support: fall back below
        if n == 0:
            chunk = os.pread(src_fd, min(length, 64 << 20), offset)
            if not chunk:
                raise CheckpointFormatError(
                    "source file ended before a tensor's data; is it truncated?"
                )
            _write_all(dst_fd, chunk)
            n = len(chunk)
        offset += n
        length -= n


def _numel(shape: Iterable[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n
