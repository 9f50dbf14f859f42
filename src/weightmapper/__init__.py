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
    ForwardError,
    KeyCollisionError,
    MappingError,
    OutputError,
    SettingsError,
    TransformError,
    UnsafeCheckpointError,
    ValidationFailed,
    WeightMapperError,
)

# public name → module that defines it
_LAZY: dict[str, str] = {
    "TensorInfo": "weightmapper.tensor_info",
    # checkpoints
    "TensorTable": "weightmapper.checkpoint",
    "open_checkpoint": "weightmapper.checkpoint",
    "load_checkpoint_as_dict": "weightmapper.checkpoint",
    "strip_wrapper_prefixes": "weightmapper.checkpoint",
    "inspect_checkpoint": "weightmapper.doctor",
    "WeightRenamer": "weightmapper.renamer",
    # mapping
    "WeightMapper": "weightmapper.mapper",
    "Inventory": "weightmapper.inventory",
    "ParameterGroup": "weightmapper.inventory",
    "map_inventories": "weightmapper.engine",
    "score_inventories": "weightmapper.engine",
    "assign": "weightmapper.engine",
    "Candidates": "weightmapper.engine",
    "ScoreSettings": "weightmapper.settings",
    "AssignSettings": "weightmapper.settings",
    "MapperSettings": "weightmapper.settings",
    "MappingResult": "weightmapper.result",
    "MatchedPair": "weightmapper.result",
    "MultiPair": "weightmapper.result",
    "UnmatchedKey": "weightmapper.result",
    "UnmatchedReason": "weightmapper.result",
    # transforms and conversion
    "TransformSpec": "weightmapper.transforms",
    "register_transform": "weightmapper.transforms",
    "apply_transform": "weightmapper.transforms",
    "invert": "weightmapper.transforms",
    "chain": "weightmapper.transforms",
    "propose_multi": "weightmapper.engine",
    "convert_checkpoint": "weightmapper.convert",
    "ConvertReport": "weightmapper.convert",
    "load_converted": "weightmapper.safetensors_io",
    # proof
    "validate_state_dict": "weightmapper.validate",
    "ValidationResult": "weightmapper.validate",
    "check_outputs": "weightmapper.verify",
    "FunctionalCheck": "weightmapper.verify",
    "settle_ambiguous": "weightmapper.verify",
    "prove": "weightmapper.proof",
    "Proof": "weightmapper.proof",
    "MappingStatus": "weightmapper.result",
    "ModelCall": "weightmapper.calls",
    "token_ids": "weightmapper.calls",
    "images": "weightmapper.calls",
    "encoder_decoder": "weightmapper.calls",
    "keywords": "weightmapper.calls",
    # reports
    "build_report": "weightmapper.report",
    "write_report": "weightmapper.report",
    "load_report": "weightmapper.report",
    "render_markdown": "weightmapper.report",
    "render_html": "weightmapper.html_report",
    "visualize_mapping": "weightmapper.visualize",
    "visualize_hierarchies": "weightmapper.visualize",
    "visualize_score_breakdown": "weightmapper.visualize",
    "compress_mapping": "weightmapper.rules",
    "format_rules": "weightmapper.rules",
    # pipeline
    "load_job": "weightmapper.pipeline",
    "run_batch": "weightmapper.pipeline",
    "ArtifactStore": "weightmapper.pipeline",
}

__all__ = [
    "CheckpointFormatError",
    "CheckpointNotFoundError",
    "ConfigError",
    "ForwardError",
    "KeyCollisionError",
    "MappingError",
    "OutputError",
    "SettingsError",
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
