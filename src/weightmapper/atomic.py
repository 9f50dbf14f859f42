"""Atomic file output: write to a temporary file beside the destination, then os.replace.

A crash, kill or full disk never leaves a partial file under the final name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from weightmapper.errors import OutputError


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
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
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
    except OSError as e:
        raise OutputError(f"cannot create a file in {dest.parent}: {e.strerror or e}") from e
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, OSError) and not isinstance(e, OutputError):
            hint = (
                "the disk is full; free space or write elsewhere"
                if e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
                else "check the path and permissions"
            )
            raise OutputError(
                f"writing {dest} failed ({e.strerror or e}); nothing was written under that "
                f"name: {hint}."
            ) from e
        raise


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    """Bytes → file at dest, atomically; returns dest."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Text → UTF-8 file at dest, atomically; returns dest."""
    return atomic_write_bytes(dest, text.encode("utf-8"))


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
