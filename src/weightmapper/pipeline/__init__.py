"""The migration pipeline: cached stages over a content-addressed store, YAML batch jobs.

- :mod:`~weightmapper.pipeline.store`: ``ArtifactStore`` (atomic, verified, locked artifacts)
- :mod:`~weightmapper.pipeline.keys`: content-derived cache keys
- :mod:`~weightmapper.pipeline.stages`: one frozen input per stage, with ``key`` and ``run``
- :mod:`~weightmapper.pipeline.export`: the export stage (only checked outputs are placed)
- :mod:`~weightmapper.pipeline.policy`: ``checks.require``, what an output must pass
- :mod:`~weightmapper.pipeline.graph`: every stage declared once, in order; both runners walk it
- :mod:`~weightmapper.pipeline.config`: YAML jobs → ``JobConfig``
- :mod:`~weightmapper.pipeline.batch`: the plain-Python batch runner
- :mod:`~weightmapper.pipeline.summary`: per-checkpoint and per-batch summaries

Nothing here imports Prefect; ``flows/`` wraps these stages as Prefect tasks.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives. Imported on first use (PEP 562), so that reading a job
# (``pipeline.config``) or opening the store loads no torch: a run that finds every stage
# cached, and the command's --help, never wait for it.
_HOMES = {
    "run_batch": "batch",
    "JobConfig": "config",
    "load_job": "config",
    "parse_job": "config",
    "ArtifactRef": "store",
    "ArtifactStore": "store",
    "BatchSummary": "summary",
    "CheckpointSummary": "summary",
}

if TYPE_CHECKING:
    from weightmapper.pipeline.batch import run_batch
    from weightmapper.pipeline.config import JobConfig, load_job, parse_job
    from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
    from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary


def __getattr__(name: str) -> Any:
    """Public name → the object, imported from its module when first asked for."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "ArtifactRef",
    "ArtifactStore",
    "BatchSummary",
    "CheckpointSummary",
    "JobConfig",
    "load_job",
    "parse_job",
    "run_batch",
]
