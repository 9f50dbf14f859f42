"""Cache keys: stage name + versions + input digests + settings → a sha256 hex key.

A key is derived from content only (checkpoint bytes, architecture signatures, settings,
stage and library versions), never from paths or object identity, so a moved or copied
checkpoint hits the same artifacts and an edited one misses them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

from weightmapper._version import __version__
from weightmapper.hashing import sha256_file

# Bump when the on-disk layout of every artifact changes; each stage also has its own version.
KEY_SCHEMA = 1


def canonical_json(obj: Any) -> bytes:
    """JSON-ready object → canonical UTF-8 bytes (sorted keys, no spaces) for hashing."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_default).encode()


def _default(obj: Any) -> Any:
    # tuples become lists through json itself; paths and sets need a stable spelling.
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not allowed in a cache key; pass plain data")


def stage_key(
    stage: str,
    version: int,
    *,
    inputs: Mapping[str, str] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> str:
    """Stage name, stage version, input digests and settings → sha256 hex cache key.

    The library version is part of every key: a new release never reads artifacts an
    older one wrote, because stage code may have changed in between.
    """
    payload = {
        "schema": KEY_SCHEMA,
        "library": __version__,
        "stage": stage,
        "stage_version": int(version),
        "inputs": dict(inputs or {}),
        "settings": dict(settings or {}),
    }
    return hashlib.sha256(canonical_json(payload)).hexdigest()


def digest_bytes(data: bytes) -> str:
    """Bytes → sha256 hex digest."""
    return hashlib.sha256(data).hexdigest()


def digest_json(obj: Any) -> str:
    """JSON-ready object → sha256 hex digest of its canonical form."""
    return digest_bytes(canonical_json(obj))


def digest_file(path: str | os.PathLike[str]) -> str:
    """File path → sha256 hex digest of its bytes (the same hasher as checkpoints use)."""
    return sha256_file(path)
