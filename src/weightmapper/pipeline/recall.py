"""Architecture identities remembered by the code that builds them, so a rerun builds nothing.

An architecture's identity (the architecture stage's key input) is a digest of its
inventory: names, shapes, dtypes, module types and order, computed by building the module
on the meta device. Building means importing the model's library (transformers takes
seconds) and running its constructor, on every run, only to find the key of an artifact
that is already stored. So each identity is remembered, under ``<store>/memo/
architectures/``, beside everything that could change what the build produces:

- the spec itself (callable, keyword arguments, the config's content), the library version
  and the Python version: the record's name is a digest of them;
- every module imported from outside the interpreter's and the installed packages' folders
  when the build ran (the project's own code, the user's model files, editable installs):
  each file's sha256, memoised by file identity, as checkpoints are;
- the installed distributions: the names of the ``*.dist-info``, ``*.egg-info`` and
  ``*.pth`` entries of every site-packages folder (an install or an upgrade renames one).

A remembered identity is used only while all of these still hold; otherwise the module is
built and the record rewritten. A file edited inside an installed package without a new
version is not noticed (reinstall it, or delete the memo folder).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import site
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from weightmapper.atomic import atomic_write_text
from weightmapper.errors import WeightMapperError
from weightmapper.pipeline.keys import digest_json

if TYPE_CHECKING:
    from weightmapper.pipeline.config import ModuleSpec
    from weightmapper.pipeline.store import ArtifactStore

log = logging.getLogger(__name__)

_RECORD_VERSION = 1
_PACKAGE_SUFFIXES = (".dist-info", ".egg-info", ".pth", ".egg-link")


def recall(store: ArtifactStore, spec: ModuleSpec) -> str | None:
    """Store + module spec → the identity remembered for it, or None when it must be built."""
    path = _record_path(store, spec)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        files = record["files"]
        if record.get("version") != _RECORD_VERSION or record["site"] != _site_fingerprint():
            return None
        paths = sorted(files)
        if store.file_digests(paths) != [files[p] for p in paths]:
            return None
        return str(record["identity"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, WeightMapperError) as e:
        log.debug("architecture record %s not used: %s", path, e)
        return None


def remember(store: ArtifactStore, spec: ModuleSpec, identity: str) -> None:
    """Store + module spec + the identity its build just gave → recorded with the code and
    packages it depended on (a failure to record only costs a build next time)."""
    path = _record_path(store, spec)
    with contextlib.suppress(OSError, ValueError, WeightMapperError):
        files = sorted(_local_sources())
        digests = store.file_digests(files)
        record = {
            "version": _RECORD_VERSION,
            "identity": identity,
            "spec": spec.spec,
            "files": dict(zip(files, digests, strict=True)),
            "site": _site_fingerprint(),
        }
        atomic_write_text(path, json.dumps(record, sort_keys=True))


def _record_path(store: ArtifactStore, spec: ModuleSpec) -> Path:
    from weightmapper._version import __version__

    name = digest_json(
        {"spec": spec.to_dict(), "library": __version__, "python": sys.version},
    )
    return store.root / "memo" / "architectures" / f"{name}.json"


def _package_roots() -> list[str]:
    """Folders installed packages live in (site-packages, the user's site folder)."""
    paths = sysconfig.get_paths()
    roots = {paths["purelib"], paths["platlib"], *site.getsitepackages()}
    with contextlib.suppress(AttributeError):
        roots.add(site.getusersitepackages())
    return sorted(os.path.realpath(r) for r in roots if r)


def _installed_roots() -> tuple[str, ...]:
    """Folders of the interpreter's own modules and of installed packages (with a slash)."""
    paths = sysconfig.get_paths()
    roots = {
        *_package_roots(),
        os.path.realpath(paths["stdlib"]),
        os.path.realpath(paths["platstdlib"]),
    }
    return tuple(sorted(r.rstrip(os.sep) + os.sep for r in roots))


def _local_sources() -> set[str]:
    """Files of every imported module that lives outside the installed folders."""
    roots = _installed_roots()
    out: set[str] = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not file:
            continue
        real = os.path.realpath(file)
        if not real.startswith(roots) and os.path.isfile(real):
            out.add(real)
    return out


def _site_fingerprint() -> str:
    """Digest of the installed distributions' names and versions, across site folders."""
    entries: list[str] = []
    for root in _package_roots():
        with contextlib.suppress(OSError):
            entries += [f"{root}/{n}" for n in os.listdir(root) if n.endswith(_PACKAGE_SUFFIXES)]
    return digest_json(sorted(entries))
