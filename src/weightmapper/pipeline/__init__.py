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

from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import JobConfig, load_job, parse_job
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary

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
