"""The export stage: a checkpoint's converted file and report placed at ``output.dir``.

Only outputs that passed the job's checks are placed (``checks.require``, see
:mod:`weightmapper.pipeline.policy`); a failing rerun leaves the previous output and its
report where they are and says so. Before a file is placed its artifact's digest is
verified against the store's record, so a corrupted artifact is never delivered. Outputs
are hard links into the store when both live on one file system (no extra space), copies
otherwise, and always appear atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from weightmapper.atomic import atomic_path
from weightmapper.pipeline.keys import stage_key
from weightmapper.pipeline.policy import refusal
from weightmapper.pipeline.stages import Stage
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore, CorruptArtifactError

PLACED, CURRENT, KEPT, WITHHELD = "placed", "current", "kept", "withheld"


@dataclass(frozen=True)
class Exported:
    """What the export stage did for one checkpoint."""

    state: str
    """``placed`` (written now), ``current`` (already there), ``kept`` (checks failed: the
    previous output stays) or ``withheld`` (checks failed, nothing was there)."""
    output: str | None
    """The file at the output path (None when withheld)."""
    report: str
    """The report beside the output, or the store's report when this one was not placed."""
    note: str | None = None
    """Why nothing was placed."""

    @property
    def cached(self) -> bool:
        """True when nothing had to be written."""
        return self.state == CURRENT


def report_path_for(output: Path) -> Path:
    """Converted checkpoint path → the path of its JSON report beside it."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".report.json")


@dataclass(frozen=True)
class ExportStage(Stage):
    """Converted file + report + check results + output path → :class:`Exported`."""

    name: ClassVar[str] = "export"
    convert: ArtifactRef
    report: ArtifactRef
    output: str
    require: str = "loads"
    validate: ArtifactRef | None = None
    verify: ArtifactRef | None = None

    def key(self, store: ArtifactStore) -> str:
        """Store → the export step's key; unlike every other key it names the output path."""
        return stage_key(
            self.name,
            self.version,
            inputs={"converted": self.convert.digest, "report": self.report.digest},
            settings={"output": str(self.output), "require": self.require},
        )

    def refused(self) -> str | None:
        """None when the checks allow placing the output, else why not."""
        return refusal(
            self.require,
            validation=None if self.validate is None else bool(self.validate.info.get("ok")),
            functional=None if self.verify is None else bool(self.verify.info.get("ok")),
        )

    def present(self, store: ArtifactStore, key: str) -> bool:
        """True when the output and its report already hold the artifacts' verified bytes."""
        if self.refused() is not None:
            return False
        try:
            store.verify(self.convert)
            store.verify(self.report)
        except CorruptArtifactError:
            return False
        return self._current(store)

    def _current(self, store: ArtifactStore) -> bool:
        out = Path(self.output)
        return _holds(out, self.convert) and _holds(report_path_for(out), self.report)

    def run(self, store: ArtifactStore) -> Exported:
        """Store → the output and its report placed (or left alone), and what was done."""
        out = Path(self.output)
        why = self.refused()
        if why is not None:
            there = out.exists()
            note = f"{why}; " + (
                "kept the previous output" if there else "nothing was placed at the output path"
            )
            return Exported(
                KEPT if there else WITHHELD,
                str(out) if there else None,
                self.report.path,
                note,
            )
        # Verified even when already in place: a hard-linked output shares the artifact's bytes.
        store.verify(self.convert)
        store.verify(self.report)
        rep = report_path_for(out)
        if self._current(store):
            return Exported(CURRENT, str(out), str(rep))
        for ref, dest in ((self.convert, out), (self.report, rep)):
            if _place(Path(ref.path), dest):
                store.linked(ref)
        return Exported(PLACED, str(out), str(rep))


def _holds(dest: Path, ref: ArtifactRef) -> bool:
    """True when ``dest`` is the artifact's file, or a file with its size and digest."""
    try:
        a, b = dest.stat(), Path(ref.path).stat()
    except FileNotFoundError:
        return False
    if a.st_ino == b.st_ino and a.st_dev == b.st_dev:
        return True
    from weightmapper.pipeline.keys import digest_file

    return a.st_size == b.st_size and digest_file(dest) == ref.digest


def _place(src: Path, dest: Path) -> bool:
    """Artifact file → at dest atomically: a hard link when possible (True), else a copy."""
    with contextlib.suppress(OSError):
        if os.path.samefile(src, dest):
            # Renaming a hard link onto another link of the same inode does nothing and
            # would leave the temporary name behind.
            return True
    linked = True
    with atomic_path(dest) as tmp:
        try:
            tmp.unlink()
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
            linked = False
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # still there only if dest became a link of src meanwhile
    return linked
