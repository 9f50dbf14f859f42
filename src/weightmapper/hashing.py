"""A file's and a checkpoint's sha256, computed once per version of each file.

The sha256 of a checkpoint is its identity everywhere: the ``source_sha256`` of a converted
output, the ``sha256`` of a report's inputs, the pipeline's cache keys. Hashing reads every
byte (about 1.6 GB/s per core), so each file's digest is kept in a small persistent cache
keyed by the file's identity: resolved path, device, inode, size, mtime and ctime. ctime
matters: nothing but the kernel sets it (``os.utime`` sets it to now), so a rewrite of the
file changes the identity even when its size and mtime are put back.

A file whose mtime or ctime is within :data:`RACY_SECONDS` of the moment hashing started
is hashed but not remembered: it may still be being written within one timestamp tick,
and would then change without changing its identity (git's "racily clean" problem).

The cache lives at ``$WEIGHTMAPPER_CACHE_DIR/hashes.json``, else
``$XDG_CACHE_HOME/weightmapper/hashes.json``, else ``~/.cache/weightmapper/hashes.json``;
``WEIGHTMAPPER_HASH_CACHE=0`` (or ``off``) turns it off (digests are then remembered only
within the process). It holds digests only, never tensor data, and at most
:data:`MAX_ENTRIES` of them; when it grows past that, entries of files that no longer
exist go first, then the oldest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weightmapper.atomic import atomic_path, file_lock, sweep_stale_temps
from weightmapper.errors import CheckpointNotFoundError, WeightMapperError

log = logging.getLogger(__name__)

CACHE_DIR_ENV = "WEIGHTMAPPER_CACHE_DIR"
SWITCH_ENV = "WEIGHTMAPPER_HASH_CACHE"
RACY_SECONDS = 2.0
MAX_ENTRIES = 10_000
_CHUNK = 1 << 22


def sha256_file(path: str | os.PathLike[str]) -> str:
    """File path → sha256 hex digest of its bytes (what ``sha256sum`` prints); no cache."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def files_sha256(files: Sequence[str | os.PathLike[str]]) -> str:
    """Checkpoint data files → one sha256 hex digest: the one definition of a checkpoint's hash.

    A single file's hash is the plain sha256 of its bytes (what ``sha256sum`` prints), so a
    renamed or copied checkpoint keeps it; shards hash as the sha256 of the canonical JSON
    of their sorted (file name, sha256) pairs, named by file name (as the index names them),
    never by directory. Uncached; :func:`checkpoint_sha256` is the same digest, cached.
    """
    paths = [Path(f) for f in files]
    return _combine(paths, [sha256_file(p) for p in paths])


class HashCache:
    """A JSON file of {file identity: sha256}; a miss hashes the file and remembers it.

    ``path=None`` keeps the entries in this process only. Safe to share between threads;
    processes sharing one file merge their entries under a lock file, and a cache file that
    cannot be read or written is ignored (hashing never fails because of it).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = None if path is None else Path(path)
        self._entries: dict[str, dict[str, float | str]] | None = None
        self._lock = threading.Lock()

    def digests(self, files: Sequence[str | os.PathLike[str]]) -> list[str]:
        """Files → their sha256 digests, hashing (in parallel) only those not remembered."""
        paths = [Path(f) for f in files]
        ids = [_identity_or_raise(p) for p in paths]
        entries = self._load()
        out: list[str | None] = []
        with self._lock:
            for i in ids:
                hit = entries.get(i)
                out.append(str(hit["sha256"]) if hit else None)
        missing = [k for k, d in enumerate(out) if d is None]
        if not missing:
            return [str(d) for d in out]
        started = time.time()
        workers = min(len(missing), os.cpu_count() or 1, 4)
        try:
            if workers > 1:
                # hashlib releases the GIL on large buffers: files hash on several cores at once
                with ThreadPoolExecutor(workers) as pool:
                    computed = list(pool.map(sha256_file, [paths[k] for k in missing]))
            else:
                computed = [sha256_file(paths[k]) for k in missing]
        except OSError as e:
            raise _unreadable(Path(e.filename or paths[missing[0]]), e) from e
        fresh: dict[str, dict[str, float | str]] = {}
        for k, digest in zip(missing, computed, strict=True):
            out[k] = digest
            if _settled(paths[k], ids[k], started):
                fresh[ids[k]] = {"sha256": digest, "t": started}
        if fresh:
            with self._lock:
                entries.update(fresh)
            self._save(fresh)
        return [str(d) for d in out]

    def _load(self) -> dict[str, dict[str, float | str]]:
        with self._lock:
            if self._entries is None:
                self._entries = _read_entries(self.path) if self.path else {}
            return self._entries

    def _save(self, fresh: dict[str, dict[str, float | str]]) -> None:
        """New entries → merged into the cache file with what other processes wrote."""
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(self.path.with_name(self.path.name + ".lock")):
                sweep_stale_temps(self.path)  # left by a writer killed mid-write
                on_disk = _read_entries(self.path)
                on_disk.update(fresh)
                on_disk = _bounded(on_disk)
                # A cache: fsync would cost more than the rehash it might save.
                with atomic_path(self.path, durable=False) as tmp:
                    tmp.write_text(json.dumps(on_disk, sort_keys=True), encoding="utf-8")
        except (OSError, WeightMapperError) as e:  # read-only home, full disk: still hashes
            log.debug("hash cache %s not written: %s", self.path, e)
            return
        with self._lock:  # what other processes remembered is now known here too
            known = self._entries if self._entries is not None else {}
            for k, v in on_disk.items():
                known.setdefault(k, v)


_DEFAULT: dict[str, HashCache] = {}
_DEFAULT_LOCK = threading.Lock()
_IN_PROCESS = HashCache(None)
"""Used when the persistent cache is switched off: digests remembered within the process."""


def default_cache() -> HashCache | None:
    """Environment → the persistent cache it names (see the module docs); None when off.

    One HashCache per location per process, so its entries are read from disk once.
    """
    path = _default_path()
    if path is None:
        return None
    with _DEFAULT_LOCK:
        if str(path) not in _DEFAULT:
            _DEFAULT[str(path)] = HashCache(path)
        return _DEFAULT[str(path)]


def file_sha256(path: str | os.PathLike[str], *, cache: HashCache | None = None) -> str:
    """File path → sha256 hex digest of its bytes, from the cache when this version is known.

    ``cache=None`` uses :func:`default_cache` (or an in-process memo when that is off).
    Raises CheckpointNotFoundError when the file is missing or unreadable.
    """
    return _cache(cache).digests([path])[0]


def checkpoint_sha256(
    files: Sequence[str | os.PathLike[str]], *, cache: HashCache | None = None
) -> str:
    """Checkpoint data files → :func:`files_sha256` of them, each file's digest cached.

    ``cache`` as in :func:`file_sha256`; files not remembered are hashed in parallel.
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise CheckpointNotFoundError(
            "no files to hash: a checkpoint needs at least one data file. Pass the files "
            "that hold its tensors (TensorTable.files)."
        )
    return _combine(paths, _cache(cache).digests(paths))


def _cache(cache: HashCache | None) -> HashCache:
    return cache or default_cache() or _IN_PROCESS


def _combine(paths: list[Path], digests: list[str]) -> str:
    if len(paths) == 1:
        return digests[0]
    parts = sorted([p.name, d] for p, d in zip(paths, digests, strict=True))
    text = json.dumps(parts, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _default_path() -> Path | None:
    if os.environ.get(SWITCH_ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]) / "hashes.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "weightmapper" / "hashes.json"


def _identity_or_raise(path: Path) -> str:
    try:
        return _identity(path)
    except OSError as e:
        raise _unreadable(path, e) from e


def _unreadable(path: Path, e: OSError) -> CheckpointNotFoundError:
    return CheckpointNotFoundError(
        f"cannot hash {path}: {e.strerror or e}. Expected a readable checkpoint file; check "
        "that it exists (a shard named by an index may be missing) and its permissions."
    )


def _bounded(entries: dict[str, dict[str, float | str]]) -> dict[str, dict[str, float | str]]:
    """Entries → at most MAX_ENTRIES of them: those of vanished files first, then the oldest."""
    if len(entries) <= MAX_ENTRIES:
        return entries
    alive = {k: v for k, v in entries.items() if os.path.exists(k.rsplit("|", 5)[0])}
    newest = sorted(alive.items(), key=lambda kv: -float(kv[1]["t"]))
    return dict(newest[:MAX_ENTRIES])


def _identity(path: Path, st: os.stat_result | None = None) -> str:
    st = st or path.stat()
    return (
        f"{path.resolve()}|{st.st_dev}|{st.st_ino}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}"
    )


def _settled(path: Path, identity: str, started: float) -> bool:
    """True when the file did not change while hashed and was last written well before."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (
        _identity(path, st) == identity and max(st.st_mtime, st.st_ctime) < started - RACY_SECONDS
    )


def _read_entries(path: Path | None) -> dict[str, dict[str, float | str]]:
    if path is None:
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        log.debug("hash cache %s unreadable (%s); starting afresh", path, e)
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        k: v
        for k, v in raw.items()
        if isinstance(v, dict)
        and isinstance(v.get("sha256"), str)
        and len(v["sha256"]) == 64
        and isinstance(v.get("t"), (int, float))
    }
