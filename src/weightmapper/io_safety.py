"""Inputs resolved to their real files; outputs that would write over one of them refused.

Every command that writes calls :func:`ensure_outputs_safe` with the files it will create,
replace or delete, and the real files of its inputs from :func:`input_files`, before it
writes anything. A checkpoint argument is resolved the way the readers resolve it: a
folder to the checkpoint it holds (and every file directly in it), a shard index to itself
and its shards, symlinks to their targets. Files are compared by identity
(``st_dev``, ``st_ino``), so a hard link or a symlink of an input is that input too, and by
resolved path, so a file not yet written is compared by where it would land. A module spec
is an input too (:func:`spec_files`): the Python file it names or imports, its config, the
model folder it reads. Outputs of one command are distinct files (:func:`ensure_outputs_distinct`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from weightmapper.bounded_json import loads_bounded
from weightmapper.errors import OutputError
from weightmapper.targets import MODULE_SPEC

PathArg = str | os.PathLike[str]

_MAX_FOLDER_FILES = 10_000  # a folder with more entries is not a checkpoint folder
_MAX_INDEX_BYTES = 64 << 20


def input_files(path: PathArg) -> frozenset[Path]:
    """Input argument (checkpoint file, shard index, folder, symlink, any file) → its real files.

    Resolved paths of every existing regular file the argument reads or stands for: the file
    itself; for a shard index also each shard it names; for a folder every file directly in
    it plus the checkpoint it holds (index and shards). Never raises for a malformed input:
    what cannot be resolved further is still listed as itself, and the readers report it.
    A path that does not exist yields an empty set (there is nothing to overwrite).
    """
    p = Path(path)
    found: set[Path] = set()
    try:
        if p.is_dir():
            for i, child in enumerate(p.iterdir()):
                if i >= _MAX_FOLDER_FILES:
                    break
                _add_file(child, found)
        elif p.exists():
            _add_file(p, found)
    except OSError:
        pass  # unreadable folder: the reader will say so
    for f in list(found):
        if f.name.endswith(".json"):
            found |= _shards_of(f)
    return frozenset(found)


def spec_files(spec: str | None, config: PathArg | None = None) -> frozenset[Path]:
    """Module spec (+ its config) → the real files it reads, without importing anything.

    ``path/to/file.py:callable`` gives the file; ``pkg.module:callable`` the module's source
    file where the importer would find it (the current folder, then ``sys.path``); a model
    folder or checkpoint path its files as :func:`input_files` lists them; a config its file
    (or its folder's files). Library specs (``transformers:X``, ``timm:X``) read nothing of
    the user's. Never raises: what cannot be found is not listed.
    """
    found: set[Path] = set()
    if config is not None and str(config):
        found |= input_files(config)
    if not spec:
        return frozenset(found)
    head, sep, _ = spec.rpartition(":")
    if sep and head.endswith(".py"):
        _add_file(Path(head), found)
        return frozenset(found)
    if MODULE_SPEC.match(spec) and not Path(spec).exists():
        module_file = _module_file(spec.partition(":")[0])
        if module_file is not None:
            found.add(module_file)
        return frozenset(found)
    return frozenset(found | input_files(spec))


def ensure_outputs_distinct(outputs: Mapping[str, PathArg | None]) -> None:
    """``{label: path}`` of one command's outputs (None skipped) → None, or OutputError.

    Two outputs that land on one file (the same path, a symlink or hard link of the other)
    would leave only the last one written while both were reported: refused before writing.
    An empty path is refused too: it would silently name the current folder.
    """
    seen: dict[object, str] = {}
    for label, raw in outputs.items():
        if raw is None:
            continue
        if not str(raw).strip():
            raise OutputError(
                f"{label} is an empty path; expected a file name. Give the output a name "
                "(an unset shell variable?)."
            )
        out = Path(raw)
        keys: list[object] = [_resolved(out)]
        try:
            st = out.stat()
            keys.append((st.st_dev, st.st_ino))
        except OSError:
            pass
        for key in keys:
            if key in seen:
                raise OutputError(
                    f"{label} {out} is the same file as {seen[key]}; both cannot be written "
                    "there (the second would replace the first). Expected a distinct path for "
                    "each output: choose another name for one of them."
                )
        for key in keys:
            seen[key] = f"{label} {out}"


def ensure_outputs_safe(
    outputs: Mapping[str, PathArg | None] | Iterable[PathArg | None],
    inputs: Iterable[PathArg],
    *,
    replace_folders: bool = False,
) -> None:
    """Outputs (``{label: path}`` or paths; None skipped) + input files → None, or OutputError.

    An output is refused when it is an input file (same resolved path) or a hard link or a
    symlink to one (same ``st_dev``/``st_ino``). Pass every file a writer creates, replaces
    or deletes; for an output folder, the files it will write into it (a writer that
    replaces a folder whole passes ``replace_folders=True`` with the folder: it is then
    refused when it holds an input). ``inputs`` are real files as :func:`input_files`
    returns them (several arguments' sets may be joined).
    """
    labelled = (
        list(outputs.items()) if isinstance(outputs, Mapping) else [("output", p) for p in outputs]  # type: ignore[union-attr]
    )
    known = _identities(inputs)
    if not known:
        return
    by_path = {p: p for p in known.values()}
    for label, raw in labelled:
        if raw is None:
            continue
        out = Path(raw)
        victim, how = _collision(out, known, by_path, replace_folders)
        if victim is not None:
            shown = f"{label} {out}" if label != "output" else f"output {out}"
            raise OutputError(
                f"{shown} {how} input file {victim}; writing it would destroy an input. "
                "Expected an output path that is none of the input files (nor a link to one, "
                "nor a folder holding one): choose another output path."
            )


def _resolved(out: Path) -> Path:
    try:
        return out.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare the path as written
        return out.absolute()


def _module_file(name: str) -> Path | None:
    """Dotted module name → its source file on the current folder or ``sys.path``; None."""
    parts = name.split(".")
    for base in [os.getcwd(), *sys.path]:
        folder = Path(base or os.getcwd())
        for candidate in (
            folder.joinpath(*parts).with_suffix(".py"),
            folder.joinpath(*parts, "__init__.py"),
        ):
            try:
                if candidate.is_file():
                    return candidate.resolve()
            except OSError:
                continue
    return None


def _add_file(p: Path, found: set[Path]) -> None:
    try:
        if p.is_file():  # follows symlinks; sockets, fifos and devices are not inputs we read
            found.add(p.resolve())
    except OSError:
        pass


def _shards_of(index: Path) -> set[Path]:
    """A JSON file → resolved shard files its ``weight_map`` names inside its folder."""
    try:
        if index.stat().st_size > _MAX_INDEX_BYTES:
            return set()
        data = loads_bounded(index.read_bytes())
    except (OSError, ValueError):
        return set()
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict):
        return set()
    shards: set[Path] = set()
    for name in set(weight_map.values()):
        if not isinstance(name, str) or not name:
            continue
        pure = PurePosixPath(name.replace("\\", "/"))
        if pure.is_absolute() or ".." in pure.parts:
            continue  # the reader refuses such an index; nothing of ours lives there
        _add_file(index.parent / pure, shards)
    return shards


def _identities(inputs: Iterable[PathArg]) -> dict[tuple[int, int], Path]:
    ids: dict[tuple[int, int], Path] = {}
    for raw in inputs:
        p = Path(raw)
        try:
            st = p.stat()
        except OSError:
            continue
        ids[(st.st_dev, st.st_ino)] = p.resolve()
    return ids


def _collision(
    out: Path,
    known: dict[tuple[int, int], Path],
    by_path: dict[Path, Path],
    replace_folders: bool,
) -> tuple[Path | None, str]:
    """Output path → (the input it would destroy, how) or (None, "")."""
    resolved = _resolved(out)
    if resolved in by_path:
        return by_path[resolved], "is a symlink to" if out.is_symlink() else "is"
    try:
        st = out.stat()
    except OSError:
        return None, ""
    if (st.st_dev, st.st_ino) in known:
        how = "is a symlink to" if out.is_symlink() else "is a hard link of"
        return known[(st.st_dev, st.st_ino)], how
    if replace_folders and out.is_dir():
        for p in sorted(by_path):
            if p.is_relative_to(resolved):
                return p, "is a folder holding"
    return None, ""
