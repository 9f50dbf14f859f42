"""Target specs: ``pkg.module:callable`` (+ kwargs) builds a module; a path gives a checkpoint.

Used by the CLI and job configs wherever the user names a target architecture.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from torch import nn

from weightmapper.errors import ConfigError


def is_module_spec(spec: str) -> bool:
    """Spec string → True when it looks like ``pkg.module:callable`` rather than a file path."""
    return ":" in spec and not Path(spec).exists() and "/" not in spec.split(":", 1)[0]


def build_module(spec: str, kwargs: dict[str, Any] | str | None = None) -> nn.Module:
    """``pkg.module:callable`` + kwargs (dict or JSON text) → the nn.Module it returns.

    Imports user code named by the user, which is the point of the spec; nothing is
    imported from a checkpoint.
    """
    if isinstance(kwargs, str):
        try:
            kwargs = json.loads(kwargs) if kwargs.strip() else {}
        except json.JSONDecodeError as e:
            raise ConfigError(f"target kwargs are not valid JSON ({e}): {kwargs!r}") from e
    kwargs = dict(kwargs or {})
    if not isinstance(kwargs, dict):
        raise ConfigError(f"target kwargs must be a JSON object, got {type(kwargs).__name__}")
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not attr:
        raise ConfigError(
            f"target spec {spec!r} is not of the form 'pkg.module:callable' "
            "(e.g. 'weightmapper.examples.cnn:RefactoredCNN')"
        )
    try:
        module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import {mod_name!r} for target spec {spec!r}: {e}. Is the package "
            "installed in this environment?"
        ) from e
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{mod_name!r} has no attribute {attr!r} (target spec {spec!r})")
        obj = getattr(obj, part)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ConfigError(f"target spec {spec!r} names {type(obj).__name__}, not a callable")
    try:
        built = obj(**kwargs)
    except TypeError as e:
        raise ConfigError(f"calling {spec} with {kwargs} failed: {e}") from e
    if not isinstance(built, nn.Module):
        raise ConfigError(
            f"target spec {spec!r} returned {type(built).__name__}, expected a torch.nn.Module"
        )
    return built
