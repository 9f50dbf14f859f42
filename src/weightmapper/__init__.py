"""weightmapper: move trained PyTorch weights from one architecture to another.

The public API is the list below. Names are imported lazily so that ``import
weightmapper`` stays fast and the CLI starts quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

from weightmapper._version import __version__
from weightmapper.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    ConfigError,
    KeyCollisionError,
    MappingError,
    OutputError,
    TransformError,
    UnsafeCheckpointError,
    ValidationFailed,
    WeightMapperError,
)

# public name → module that defines it
_LAZY: dict[str, str] = {
    "TensorInfo": "weightmapper.tensor_info",
    "TransformSpec": "weightmapper.transforms",
    "register_transform": "weightmapper.transforms",
    "MappingResult": "weightmapper.result",
    "MatchedPair": "weightmapper.result",
    "MultiPair": "weightmapper.result",
    "UnmatchedKey": "weightmapper.result",
    "UnmatchedReason": "weightmapper.result",
    "TensorTable": "weightmapper.checkpoint",
    "open_checkpoint": "weightmapper.checkpoint",
    "load_checkpoint_as_dict": "weightmapper.checkpoint",
    "WeightRenamer": "weightmapper.renamer",
    "WeightMapper": "weightmapper.mapper",
    "Inventory": "weightmapper.inventory",
    "ParameterGroup": "weightmapper.inventory",
}

__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "ConfigError",
    "KeyCollisionError",
    "MappingError",
    "OutputError",
    "TransformError",
    "UnsafeCheckpointError",
    "ValidationFailed",
    "WeightMapperError",
    "__version__",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'weightmapper' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
