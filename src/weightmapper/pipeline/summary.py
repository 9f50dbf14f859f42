"""Batch summaries: per checkpoint, what each stage did (cached or computed) and how it ended.

The same JSON form comes out of the plain-Python runner and the Prefect flows, so
schedulers and scripts read one shape (``weightmapper migrate --json``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Stages each checkpoint goes through, in order; batch-level stages run once per target.
CHECKPOINT_STAGES: tuple[str, ...] = (
    "load",
    "inventory",
    "score",
    "assign",
    "convert",
    "validate",
    "verify",
    "report",
    "export",
)
BATCH_STAGES: tuple[str, ...] = ("target", "trace_target", "source_arch", "trace_source")


@dataclass
class StageRecord:
    """One stage of one checkpoint (or of a migration's target): cached or computed, and when."""

    name: str
    cached: bool
    seconds: float = 0.0
    key: str = ""
    state: str | None = None
    """The orchestrator's state name (Prefect: ``Cached``, ``Completed``), None in plain Python."""

    def to_dict(self) -> dict[str, Any]:
        """StageRecord → JSON-ready dict."""
        return {
            "name": self.name,
            "cached": self.cached,
            "seconds": round(self.seconds, 4),
            "key": self.key,
            "state": self.state,
        }


@dataclass
class CheckpointSummary:
    """How one checkpoint's migration ended: status, coverage, checks, output, stages."""

    migration: str
    source: str
    """The source checkpoint path as found by the job's patterns."""
    status: str = "ok"
    """``ok``, ``check_failed`` (converted but a check failed) or ``failed`` (an error)."""
    error: str | None = None
    failed_stage: str | None = None
    coverage: dict[str, float] = field(default_factory=dict)
    """``source`` and ``target``: fraction of tensors mapped."""
    validation: str = "skipped"
    """``passed``, ``failed`` or ``skipped``."""
    functional: str = "skipped"
    """``passed``, ``failed`` or ``skipped`` (no source architecture given)."""
    max_abs_diff: float | None = None
    output: str | None = None
    report: str | None = None
    stages: list[StageRecord] = field(default_factory=list)

    @property
    def cached_stages(self) -> list[str]:
        """Names of the stages that reused an artifact."""
        return [s.name for s in self.stages if s.cached]

    @property
    def computed_stages(self) -> list[str]:
        """Names of the stages that computed their artifact in this run."""
        return [s.name for s in self.stages if not s.cached]

    def to_dict(self) -> dict[str, Any]:
        """CheckpointSummary → JSON-ready dict."""
        return {
            "migration": self.migration,
            "source": self.source,
            "status": self.status,
            "error": self.error,
            "failed_stage": self.failed_stage,
            "coverage": self.coverage,
            "validation": self.validation,
            "functional": self.functional,
            "max_abs_diff": self.max_abs_diff,
            "output": self.output,
            "report": self.report,
            "stages": [s.to_dict() for s in self.stages],
        }


@dataclass
class BatchSummary:
    """A whole batch: the job, its checkpoints, the per-target stages and the time taken."""

    job: str
    runner: str
    items: list[CheckpointSummary] = field(default_factory=list)
    batch_stages: dict[str, list[StageRecord]] = field(default_factory=dict)
    """Migration name → the stages run once for it (target inventory, traces)."""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when every checkpoint converted and passed every check it ran."""
        return bool(self.items) and all(i.status == "ok" for i in self.items)

    def counts(self) -> dict[str, int]:
        """BatchSummary → number of checkpoints per status, and in all."""
        out = {"total": len(self.items), "ok": 0, "check_failed": 0, "failed": 0}
        for i in self.items:
            out[i.status] = out.get(i.status, 0) + 1
        return out

    def recomputed(self) -> dict[str, int]:
        """BatchSummary → stage name → how many times it computed (did not reuse) its artifact."""
        out: dict[str, int] = {}
        records = [s for i in self.items for s in i.stages]
        records += [s for recs in self.batch_stages.values() for s in recs]
        for s in records:
            out.setdefault(s.name, 0)
            if not s.cached:
                out[s.name] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """BatchSummary → JSON-ready dict (what ``migrate --json`` prints)."""
        return {
            "job": self.job,
            "runner": self.runner,
            "ok": self.ok,
            "counts": self.counts(),
            "seconds": round(self.seconds, 3),
            "batch_stages": {
                m: [s.to_dict() for s in recs] for m, recs in self.batch_stages.items()
            },
            "checkpoints": [i.to_dict() for i in self.items],
        }
