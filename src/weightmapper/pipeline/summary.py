"""Batch summaries: per checkpoint, what each stage did (cached or computed) and how it ended.

The same JSON form comes out of the plain-Python runner and the Prefect flows, so
schedulers and scripts read one shape (``weightmapper migrate --json``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from weightmapper.errors import WeightMapperError

log = logging.getLogger(__name__)

# Stages each checkpoint goes through, in order; batch-level stages run once per target.
CHECKPOINT_STAGES: tuple[str, ...] = (
    "load",
    "inventory",
    "score",
    "assign",
    "prove",
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
    mapping_status: str | None = None
    """The mapping's status from the verify stage: ``proven equal`` or ``differs at …``."""
    search_fixes: int | None = None
    """How many fixes the prove stage's search kept (None when it did not run)."""
    output: str | None = None
    """The file at the output path: placed now, already there, or kept (see ``export``)."""
    report: str | None = None
    export: str | None = None
    """``placed``, ``current``, ``kept`` (checks failed: the previous output stays),
    ``withheld`` (checks failed, nothing placed) or None (export did not run)."""
    export_note: str | None = None
    """Why the output was not placed."""
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
            "mapping_status": self.mapping_status,
            "search_fixes": self.search_fixes,
            "output": self.output,
            "report": self.report,
            "export": self.export,
            "export_note": self.export_note,
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
    errors: dict[str, str] = field(default_factory=dict)
    """Migration name → why its once-per-migration stages failed (its checkpoints then
    fail at stage ``target`` without repeating the message)."""
    seconds: float = 0.0
    """Wall time of the whole batch, orchestrator start-up included."""

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
            "errors": dict(self.errors),
            "checkpoints": [i.to_dict() for i in self.items],
        }


def note_stage(summary: CheckpointSummary, stage: str, value: Any) -> None:
    """A stage's result → the summary fields it settles (coverage, checks, output)."""
    if stage == "assign":
        summary.coverage = {
            "source": value.info.get("source_coverage"),
            "target": value.info.get("target_coverage"),
        }
        if value.info.get("target_confident_coverage") is not None:
            # by pairs labelled high and scored ≥ 0.9, beside all pairs
            summary.coverage["source_confident"] = value.info.get("source_confident_coverage")
            summary.coverage["target_confident"] = value.info.get("target_confident_coverage")
    elif stage == "prove":
        summary.search_fixes = value.info.get("fixes")
    elif stage == "validate":
        summary.validation = "passed" if value.info.get("ok") else "failed"
    elif stage == "verify":
        summary.functional = "passed" if value.info.get("ok") else "failed"
        summary.max_abs_diff = value.info.get("max_abs_diff")
        summary.mapping_status = value.info.get("status")
    elif stage == "export":
        summary.output, summary.report = value.output, value.report
        summary.export, summary.export_note = value.state, value.note


def finish(summary: CheckpointSummary) -> None:
    """Summary of a checkpoint that ran every stage → status ``ok`` or ``check_failed``."""
    if summary.status != "failed" and "failed" in (summary.validation, summary.functional):
        summary.status = "check_failed"


def record_failure(summary: CheckpointSummary, stage: str, error: BaseException) -> None:
    """Summary + failing stage + exception → the summary marked failed with a short reason."""
    summary.status = "failed"
    summary.failed_stage = stage
    summary.error = (
        str(error) if isinstance(error, WeightMapperError) else (f"{type(error).__name__}: {error}")
    )
    log.warning("%s failed at stage %s: %s", summary.source, stage, summary.error)
    if not isinstance(error, WeightMapperError):
        log.debug("traceback", exc_info=error)


def failed_item(migration: str, source: str, stage: str, message: str) -> CheckpointSummary:
    """A checkpoint that could not run → its failed summary."""
    return CheckpointSummary(
        migration=migration, source=source, status="failed", failed_stage=stage, error=message
    )


def not_prepared(migration: str, source: str) -> CheckpointSummary:
    """A checkpoint of a migration whose target failed → failed at ``target``, pointing at
    the one message in ``BatchSummary.errors``."""
    return failed_item(
        migration,
        source,
        "target",
        f"not run: migration {migration!r} could not prepare its target",
    )
