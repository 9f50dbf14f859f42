"""Atomic file output: write to temporary files beside the destinations, then os.replace.

A crash, kill or full disk never leaves a partial file under a final name. Temporary files
are named ``.{dest name}.{pid}-{host}.{random}.tmp`` so that a later writer can tell the
leftovers of a killed process on this host (:func:`sweep_stale_temps`) from a write still
in progress.

Durability: by default each file is fsynced before its rename and the directory after it,
so the output survives a power cut as well as a kill. ``durable=False`` skips both: the
rename still makes the output all-or-nothing for a killed process (what ``cp`` promises),
and the page cache is flushed by the kernel in its own time.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from weightmapper.errors import OutputError

log = logging.getLogger(__name__)

_HOST = hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:6]
_WORKDIR_RE = re.compile(r"^\.(?P<label>[^.]+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[^.]+\.work$")
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-(?P<host>[0-9a-f]{6})\.[^.]+\.tmp$")


NAME_MAX = 255
"""Bytes in one file name on common file systems (ext4, XFS, btrfs, APFS)."""
_RANDOM = 8
"""Characters ``tempfile.mkstemp`` puts between a temporary name's prefix and suffix."""


def name_problem(dest: str | os.PathLike[str]) -> str | None:
    """Destination path → None when its name, with the temporary name written beside it, and
    every folder name above it fit in a file name; else what is too long and what to do."""
    dest = Path(dest)
    temp = len(os.fsencode(_temp_prefix(dest))) + _RANDOM + len(".tmp")
    if temp > NAME_MAX:
        return (
            f"the file name {dest.name[:60]!r}... is {len(os.fsencode(dest.name))} bytes, and "
            f"the temporary file written beside it {temp}; a file name holds at most {NAME_MAX} "
            "bytes: choose a shorter output name"
        )
    for part in dest.parent.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            return (
                f"the folder name {part[:60]!r}... is {len(os.fsencode(part))} bytes; a file "
                f"name holds at most {NAME_MAX} bytes: choose a shorter output folder"
            )
    return None


class AtomicFiles:
    """Destinations → temporary paths beside them, all renamed into place by :meth:`commit`.

    Used as a context manager: leaving the block with an exception, or without commit,
    removes every temporary file and leaves the destinations untouched. ``commit`` fsyncs
    every file first (when durable), so no rename happens before all data is on disk, then
    renames in the order the paths were requested, the last one last: callers request an
    index after the files it names, so an index never names a file that is not there yet.
    """

    def __init__(self, *, durable: bool = True) -> None:
        self.durable = durable
        self._pairs: list[tuple[Path, Path]] = []
        self._done = False

    def path(self, dest: str | os.PathLike[str]) -> Path:
        """Destination → a new, empty temporary file in its directory (created now)."""
        dest = Path(dest)
        too_long = name_problem(dest)
        if too_long is not None:
            raise OutputError(f"cannot write in {dest.parent}: {too_long}.")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=_temp_prefix(dest), suffix=".tmp", dir=dest.parent)
            os.close(fd)
            # mkstemp creates 0600 files; an output is as shareable as any file made here.
            os.chmod(name, 0o666 & ~_umask())
        except OSError as e:
            # Name the path in the way: an output folder that exists as a file is the usual one.
            blocker = next(
                (p for p in (dest.parent, *dest.parent.parents) if p.exists() and not p.is_dir()),
                None,
            )
            found = f"{blocker} is a file, not a folder" if blocker else e.strerror or str(e)
            raise OutputError(
                f"cannot create a file in {dest.parent}: {found}. Expected a folder that can be "
                "created and written there; choose another output path."
            ) from e
        tmp = Path(name)
        self._pairs.append((tmp, dest))
        return tmp

    def sync_now(self) -> None:
        """Fsync every temp file now, when durable: the disk then works while the caller
        waits on something else, and :meth:`commit` only flushes what changed since."""
        if self.durable:
            for tmp, _ in self._pairs:
                _fsync_file(tmp)

    def commit(self, *, remove_first: Iterable[Path] = ()) -> None:
        """Fsync all temp files, delete ``remove_first`` (stale files that must not outlive
        the old output, e.g. an old index), then rename every temp file onto its destination.
        """
        try:
            if self.durable:
                for tmp, _ in self._pairs:
                    _fsync_file(tmp)
            for stale in remove_first:
                with contextlib.suppress(FileNotFoundError):
                    stale.unlink()
            for tmp, dest in self._pairs:
                os.replace(tmp, dest)
            if self.durable:
                for folder in dict.fromkeys(dest.parent for _, dest in self._pairs):
                    _fsync_dir(folder)
        except OSError as e:
            raise _output_error(self._first_dest(), e) from e
        self._done = True

    def abort(self) -> None:
        """Remove every temporary file not yet renamed."""
        for tmp, _ in self._pairs:
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._pairs.clear()

    def _first_dest(self) -> Path:
        """→ the destination error messages name (the first requested)."""
        return self._pairs[0][1] if self._pairs else Path(".")

    def __enter__(self) -> AtomicFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        dest = self._first_dest()
        if not self._done:
            self.abort()
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _output_error(dest, exc) from exc


@contextlib.contextmanager
def atomic_path(
    dest: str | os.PathLike[str], *, overwrite: bool = True, durable: bool = True
) -> Iterator[Path]:
    """Destination path → a temp path in the same directory; renamed onto dest on success.

    On any exception the temp file is removed and dest is untouched. Disk-full and
    permission errors become OutputError with the destination named.
    """
    dest = Path(dest)
    if not overwrite and dest.exists():
        raise OutputError(
            f"{dest} already exists; refusing to overwrite it. Pass overwrite=True "
            "(or --force on the CLI) or choose another output path."
        )
    with AtomicFiles(durable=durable) as files:
        tmp = files.path(dest)
        yield tmp
        files.commit()


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Bytes → file at dest, atomically; returns dest."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Text → UTF-8 file at dest, atomically; returns dest."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Lock file path → an exclusive lock across threads and processes, held in the block.

    ``flock`` locks belong to an open file description, so two threads that each open the
    lock file exclude each other just as two processes do. The file is created if needed.
    """
    with open(path, "a+b") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def sweep_stale_temps(dest: str | os.PathLike[str]) -> list[Path]:
    """Destination → the temp files of earlier writes to it by dead processes, removed.

    Only files this module named for ``dest`` on this host are considered, and only those
    whose writing process no longer exists; a write in progress (its process is alive) or
    one from another host sharing the directory is left alone.
    """
    dest = Path(dest)
    removed: list[Path] = []
    try:
        candidates = list(dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        m = _TEMP_RE.match(tmp.name)
        if not m or m["name"] != dest.name or not _orphaned(m):
            continue
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write", len(removed))
    return removed


def sweep_orphans(root: str | os.PathLike[str]) -> list[Path]:
    """Folder → the temp files and work folders under it left by dead processes, removed.

    :func:`sweep_stale_temps` cleans up before a destination is written again; a write
    killed for a key that is never written again would stay forever. A batch calls this on
    its store when it starts. Only names this module gave, on this host, whose process is
    gone, are removed.
    """
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            m = _TEMP_RE.match(name)
            if m and _orphaned(m):
                with contextlib.suppress(OSError):
                    (Path(dirpath) / name).unlink()
                    removed.append(Path(dirpath) / name)
        for name in list(dirnames):
            m = _WORKDIR_RE.match(name)
            if m and _orphaned(m):
                shutil.rmtree(Path(dirpath) / name, ignore_errors=True)
                removed.append(Path(dirpath) / name)
                dirnames.remove(name)
    if removed:
        log.info("removed %d temporary file(s) or folder(s) left by interrupted runs", len(removed))
    return removed


def private_workdir(parent: str | os.PathLike[str], label: str) -> Path:
    """Folder + label → a new private working directory in it, after removing the ones of
    that label left by dead processes on this host (a kill skips every ``finally``)."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    for old in parent.glob(f".{glob.escape(label)}.*.work"):
        m = _WORKDIR_RE.match(old.name)
        if m and m["label"] == label and _orphaned(m):
            shutil.rmtree(old, ignore_errors=True)
            log.info("removed %s, left by an interrupted run", old)
    prefix = f".{label}.{os.getpid()}-{_HOST}."
    return Path(tempfile.mkdtemp(prefix=prefix, suffix=".work", dir=parent))


def _umask() -> int:
    """→ this process's umask, read without changing it (os.umask would, for every thread)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no /proc: the only other way to read it is to set it
    os.umask(current)
    return current


def _temp_prefix(dest: Path) -> str:
    return f".{dest.name}.{os.getpid()}-{_HOST}."


def _orphaned(m: re.Match[str]) -> bool:
    """Parsed temp or work name → True when its process was on this host and is gone."""
    return m["host"] == _HOST and not _alive(int(m["pid"]))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _output_error(dest: Path, e: OSError) -> OutputError:
    hint = (
        "the disk is full; free space or write elsewhere"
        if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        else "check the path and permissions"
    )
    return OutputError(
        f"writing {dest} failed ({e.strerror or e}); nothing was written under that name: {hint}."
    )


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Directory → its entries made durable (the renames into it); no-op where unsupported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
