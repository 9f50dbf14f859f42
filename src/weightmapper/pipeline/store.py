"""A content-addressed artifact store: stage + key → one verified file, written atomically.

Layout under the store root::

    artifacts/<stage>/<key>.<ext>        the artifact (JSON, or safetensors for tensors)
    artifacts/<stage>/<key>.meta.json    commit record: size, sha256 digest, small info dict
    locks/<stage>/<key>.lock             fcntl lock held while one process computes the key
    memo/hashes.json                     file digests by file identity (weightmapper.hashing)

The meta record is written last, so an artifact without one was never committed. A read
verifies the record parses, the size matches, the file opens (JSON parses, safetensors
header reads) and its sha256 is the one recorded at write; anything else is a miss: the
artifact is removed and the stage recomputes. The record also keeps the file's identity
(device, inode, size, mtime, ctime) when its digest was last checked, so an artifact
nothing wrote to is not reread and any write to it (through an output hard link too) is
noticed; :meth:`ArtifactStore.verify_all` rereads every byte.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from weightmapper.atomic import atomic_path, atomic_write_text, file_lock, sweep_orphans
from weightmapper.errors import OutputError, WeightMapperError
from weightmapper.hashing import HashCache, checkpoint_sha256
from weightmapper.pipeline.keys import digest_file

log = logging.getLogger(__name__)


class CorruptArtifactError(WeightMapperError):
    """A store artifact's bytes no longer match the digest recorded when it was written."""


@dataclass(frozen=True)
class ArtifactRef:
    """A committed artifact: where it is, what it holds (digest) and whether it was reused.

    Stages pass these small references to each other, never tensors or modules.
    """

    stage: str
    key: str
    """The stage's cache key (content-derived)."""
    path: str
    """Absolute path of the artifact file."""
    digest: str
    """sha256 of the artifact's bytes; later stages build their keys from it."""
    info: dict[str, Any] = field(default_factory=dict, compare=False)
    """Small JSON-ready facts about the artifact (counts, coverage, status)."""
    cached: bool = field(default=False, compare=False)
    """True when this run found the artifact already committed instead of computing it."""


class ArtifactStore:
    """Root directory → a store of stage artifacts keyed by content."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self._hashes = HashCache(self.root / "memo" / "hashes.json")

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"

    def ensure_writable(self) -> None:
        """None when the store's folder exists (or can be made) and takes files, else OutputError."""
        if self.root.exists() and not self.root.is_dir():
            raise OutputError(
                f"store {self.root} is a file; expected a folder for the artifact store. "
                "Point 'store:' in the job at a folder (it is created when missing)."
            )
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe."):
                pass
        except OSError as e:
            raise OutputError(
                f"store {self.root} is not writable ({e.strerror or e}); expected a folder "
                "this user can write. Fix its permissions or point 'store:' elsewhere."
            ) from e

    def sweep_orphans(self) -> list[Path]:
        """Remove the temp files and work folders that killed runs left in the store."""
        return sweep_orphans(self.root / "artifacts")

    def __reduce__(self) -> tuple[Any, ...]:
        # Travels to other processes (Dask workers) as its root; locks and memo are local.
        return (ArtifactStore, (str(self.root),))

    # --- paths -----------------------------------------------------------------------------
    def artifact_path(self, stage: str, key: str, ext: str) -> Path:
        """Stage, key, extension → where that artifact lives."""
        return self.root / "artifacts" / stage / f"{key}.{ext}"

    def _meta_path(self, stage: str, key: str) -> Path:
        return self.root / "artifacts" / stage / f"{key}.meta.json"

    # --- reading ---------------------------------------------------------------------------
    def lookup(self, stage: str, key: str) -> ArtifactRef | None:
        """Stage + key → the committed artifact's reference, or None (missing or corrupt).

        A corrupt artifact (unparsable record, wrong size, unreadable content) is logged,
        removed and reported as a miss so the caller recomputes it.
        """
        meta_path = self._meta_path(stage, key)
        try:
            meta = json.loads(meta_path.read_text())
            path = self.artifact_path(stage, key, meta["ext"])
            size = int(meta["size"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("artifact record %s is unreadable (%s); recomputing", meta_path, e)
            self._discard(meta_path)
            return None
        problem = _check_file(path, size) or self._digest_problem(path, meta, meta_path)
        if problem:
            log.warning("artifact %s is %s; recomputing", path, problem)
            self._discard(meta_path, path)
            return None
        return ArtifactRef(stage, key, str(path), meta["digest"], meta.get("info") or {})

    def _digest_problem(
        self, path: Path, meta: dict[str, Any], meta_path: Path, *, reread: bool = False
    ) -> str | None:
        """Artifact file + its commit record → None when its bytes have the recorded digest.

        The record keeps the file's identity (device, inode, size, mtime, ctime) as of the
        last time its digest was checked; while the file still has it, nothing wrote to it
        and it is not reread (``reread`` forces it). A file that was touched is rehashed, and
        its new identity recorded when the digest still matches.
        """
        try:
            now = _identity(path)
            if not reread and meta.get("identity") == now:
                return None
            actual = digest_file(path)
        except OSError as e:
            return f"unreadable ({e})"
        if actual != meta.get("digest"):
            return (
                f"altered since it was written (sha256 {actual[:12]}, recorded "
                f"{str(meta.get('digest'))[:12]})"
            )
        if meta.get("identity") != now:
            self._write_meta(meta_path, {**meta, "identity": now})
        return None

    def _write_meta(self, meta_path: Path, meta: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, WeightMapperError):  # only a cache of a check
            atomic_write_text(meta_path, json.dumps(meta, sort_keys=True))

    def _meta(self, ref: ArtifactRef) -> tuple[dict[str, Any], Path]:
        meta_path = self._meta_path(ref.stage, ref.key)
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        if not isinstance(meta, dict) or meta.get("digest") != ref.digest:
            meta = {"digest": ref.digest}  # a record replaced since: check the bytes alone
        return meta, meta_path

    def verify(self, ref: ArtifactRef) -> None:
        """Artifact reference → None when its file still has the recorded digest.

        Otherwise the artifact is removed (the next run recomputes it) and
        CorruptArtifactError is raised: its bytes must not be used or delivered.
        """
        meta, meta_path = self._meta(ref)
        problem = self._digest_problem(Path(ref.path), meta, meta_path)
        if problem:
            self._discard(meta_path, Path(ref.path))
            raise CorruptArtifactError(
                f"artifact {ref.path} is {problem}; it was removed. Rerun the job to "
                "recompute it (nothing was delivered from it)."
            )

    def linked(self, ref: ArtifactRef) -> None:
        """Artifact reference whose file was just verified and then linked → its record
        updated to the file's new identity (a new link changes the ctime, not the bytes)."""
        meta, meta_path = self._meta(ref)
        if "stage" in meta:
            with contextlib.suppress(OSError):
                self._write_meta(meta_path, {**meta, "identity": _identity(Path(ref.path))})

    def verify_all(self) -> tuple[int, list[str]]:
        """Store → (artifacts checked, problems found); every byte reread, bad ones removed."""
        checked, bad = 0, []
        for meta_path in sorted((self.root / "artifacts").glob("*/*.meta.json")):
            checked += 1
            try:
                meta = json.loads(meta_path.read_text())
                path = self.artifact_path(meta_path.parent.name, meta["key"], meta["ext"])
                problem = _check_file(path, int(meta["size"])) or self._digest_problem(
                    path, meta, meta_path, reread=True
                )
            except (OSError, ValueError, KeyError, TypeError) as e:
                path, problem = meta_path, f"an unreadable record ({e})"
            if problem:
                bad.append(f"{path}: {problem}")
                key = meta_path.name.removesuffix(".meta.json")
                self._discard(*meta_path.parent.glob(f"{key}.*"))
        return checked, bad

    def read_json(self, ref: ArtifactRef) -> Any:
        """Reference to a JSON artifact → its parsed content."""
        return json.loads(Path(ref.path).read_text())

    # --- writing ---------------------------------------------------------------------------
    def produce(
        self,
        stage: str,
        key: str,
        ext: str,
        write: Callable[[Path], dict[str, Any] | None],
    ) -> ArtifactRef:
        """Stage + key + writer → the artifact's reference, computed at most once.

        ``write(tmp_path)`` fills a temporary file and may return a small info dict. If the
        artifact is already committed it is returned with ``cached=True`` and ``write`` is
        not called. A per-key file lock makes concurrent producers (threads or processes)
        of the same key wait for the first one and then read its result.
        """
        hit = self.lookup(stage, key)
        if hit is not None:
            return replace(hit, cached=True)
        with self.lock(stage, key):
            hit = self.lookup(stage, key)
            if hit is not None:
                return replace(hit, cached=True)
            path = self.artifact_path(stage, key, ext)
            with atomic_path(path) as tmp:
                info = write(tmp) or {}
                digest = digest_file(tmp)
                size = tmp.stat().st_size
            meta = {
                "stage": stage,
                "key": key,
                "ext": ext,
                "path": path.name,
                "size": size,
                "digest": digest,
                "info": info,
                "identity": _identity(path),
            }
            atomic_write_text(self._meta_path(stage, key), json.dumps(meta, sort_keys=True))
            log.debug("stored %s/%s (%d bytes)", stage, key[:12], size)
            return ArtifactRef(stage, key, str(path), digest, info, cached=False)

    def produce_json(
        self,
        stage: str,
        key: str,
        compute: Callable[[], Any],
        info: Callable[[Any], dict] | None = None,
    ) -> ArtifactRef:
        """Stage + key + a function returning JSON-ready data → reference to the JSON artifact."""

        def write(tmp: Path) -> dict[str, Any]:
            data = compute()
            tmp.write_text(json.dumps(data, sort_keys=True, indent=1))
            return info(data) if info else {}

        return self.produce(stage, key, "json", write)

    def remove(self, stage: str, key: str) -> bool:
        """Stage + key → True if an artifact was removed (its record and file)."""
        meta_path = self._meta_path(stage, key)
        found = meta_path.exists()
        files = list(meta_path.parent.glob(f"{key}.*")) if meta_path.parent.exists() else []
        self._discard(*files)
        return found

    def _discard(self, *paths: Path) -> None:
        for p in paths:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()

    # --- locking ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, stage: str, key: str) -> Iterator[None]:
        """Stage + key → an exclusive lock across threads and processes, held in the block."""
        path = self.root / "locks" / stage / f"{key}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with file_lock(path):
            yield

    # --- file digests ----------------------------------------------------------------------
    def file_digest(self, paths: list[Path]) -> str:
        """Checkpoint files → their content digest (:func:`weightmapper.hashing.files_sha256`).

        Each file's digest is remembered in the store (``memo/hashes.json``) by the file's
        identity (path, inode, size, mtime, ctime), so a rerun does not reread unchanged
        bytes; the digest itself, and every key built on it, comes from the bytes alone.
        """
        return checkpoint_sha256(paths, cache=self._hashes)

    def file_digests(self, paths: list[str]) -> list[str]:
        """Files → each one's sha256, memoised like :meth:`file_digest` (source files of
        remembered architectures: :mod:`weightmapper.pipeline.recall`)."""
        return self._hashes.digests(paths)


def _identity(path: Path) -> list[int]:
    """File → [device, inode, size, mtime ns, ctime ns]: changes whenever anything writes it."""
    st = path.stat()
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _check_file(path: Path, size: int) -> str | None:
    """Artifact file + expected size → None when it reads back, else what is wrong."""
    try:
        actual = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if actual != size:
        return f"truncated or altered ({actual} bytes, expected {size})"
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                f.keys()
    except Exception as e:  # any failure to read back means the artifact cannot be trusted
        return f"unreadable ({type(e).__name__}: {e})"
    return None
