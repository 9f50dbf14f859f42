"""The plain-Python batch runner: JobConfig → BatchSummary, no Prefect needed.

Per migration the target (and the source architecture, when given) is inventoried and
traced once; then every checkpoint goes through the per-checkpoint stages, several at
once on threads. A checkpoint that fails is recorded with its error and failing stage;
the rest of the batch completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from weightmapper.errors import ConfigError, WeightMapperError
from weightmapper.pipeline import stages
from weightmapper.pipeline.config import JobConfig, Migration
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary, StageRecord

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Prepared:
    """What a migration computes once for all its checkpoints: architectures and traces."""

    target_arch: ArtifactRef
    target_trace: ArtifactRef | None = None
    source_arch: ArtifactRef | None = None
    source_trace: ArtifactRef | None = None
    records: list[StageRecord] = field(default_factory=list)


@dataclass(frozen=True)
class WorkItem:
    """One checkpoint of one migration, with where its output goes."""

    migration: Migration
    source: Path
    index: int
    output: Path
    problem: str | None = None
    """Set when the item cannot run at all (no file behind a pattern, output clash)."""


def _timed(records: list[StageRecord], name: str, fn: Callable[..., T], *args: Any) -> T:
    t0 = time.perf_counter()
    out = fn(*args)
    ref = out if isinstance(out, ArtifactRef) else None
    cached = ref.cached if ref is not None else bool(out[2])  # export: (out, report, present)
    records.append(StageRecord(name, cached, time.perf_counter() - t0, ref.key if ref else ""))
    return out


def prepare_examples(job: JobConfig) -> None:
    """Job → generates the bundled example checkpoints it asks for, when missing."""
    if job.examples is not None:
        from weightmapper.examples.generate import ensure_example_checkpoints

        ensure_example_checkpoints(job.examples)


def plan_items(job: JobConfig) -> list[WorkItem]:
    """Job → one WorkItem per source checkpoint (patterns expanded, output clashes flagged)."""
    items: list[WorkItem] = []
    claimed: dict[Path, Path] = {}
    for m in job.migrations:
        found, empty = m.expand_sources()
        for pattern in empty:
            items.append(
                WorkItem(
                    m,
                    Path(pattern),
                    -1,
                    Path(),
                    f"no checkpoint matches {pattern}; check the path or pattern in 'sources'",
                )
            )
        for i, src in enumerate(found):
            out = m.output_path(src, i)
            problem = None
            if out in claimed:
                problem = (
                    f"output {out} is also the output of {claimed[out]}; make output.naming "
                    "unique (add {index} or {migration})"
                )
            if problem is None and not out.resolve().is_relative_to(m.output.dir.resolve()):
                problem = (
                    f"output {out} would be written outside output.dir {m.output.dir} (the "
                    f"source name {src.name!r} climbs out); use {{index}} in output.naming"
                )
            claimed.setdefault(out, src)
            items.append(WorkItem(m, src, i, out, problem))
    return items


def prepare_migration(store: ArtifactStore, m: Migration) -> Prepared:
    """Migration → its target (and source architecture) inventoried and traced, once."""
    rec: list[StageRecord] = []
    target_arch = _timed(rec, "target", stages.architecture, store, m.target)
    prepared = Prepared(target_arch, records=rec)
    if m.dummy_input is not None and m.target.module is not None:
        prepared.target_trace = _timed(
            rec, "trace_target", stages.trace, store, target_arch, m.target.module, m.dummy_input
        )
    if m.source_module is not None:
        from weightmapper.pipeline.config import TargetSpec

        src = TargetSpec(module=m.source_module)
        prepared.source_arch = _timed(rec, "source_arch", stages.architecture, store, src)
        if m.dummy_input is not None:
            prepared.source_trace = _timed(
                rec,
                "trace_source",
                stages.trace,
                store,
                prepared.source_arch,
                m.source_module,
                m.dummy_input,
            )
    return prepared


def migrate_checkpoint(store: ArtifactStore, item: WorkItem, prep: Prepared) -> CheckpointSummary:
    """One checkpoint through every per-checkpoint stage → its summary (errors recorded)."""
    m = item.migration
    summary = CheckpointSummary(migration=m.name, source=str(item.source))
    rec = summary.stages
    path = str(item.source)
    stage = "load"

    def run(name: str, fn: Callable[..., T], *args: Any) -> T:
        nonlocal stage
        stage = name
        out = _timed(rec, name, fn, *args)
        note_stage(summary, name, out)
        return out

    try:
        load_ref = run("load", stages.load, store, path, m.trusted)
        inv_ref = run("inventory", stages.inventory, store, load_ref)
        score_ref = run(
            "score",
            stages.score,
            store,
            inv_ref,
            prep.target_arch,
            prep.source_trace,
            prep.target_trace,
            m.mapper,
        )
        assign_ref = run("assign", stages.assign, store, score_ref, m.mapper)
        conv_ref = run("convert", stages.convert, store, path, load_ref, assign_ref)
        val_ref = ver_ref = None
        if m.validate:
            val_ref = run("validate", stages.validate, store, conv_ref, m.target, prep.target_arch)
        if functional_enabled(m) and prep.source_arch is not None:
            assert m.source_module and m.target.module and m.dummy_input
            ver_ref = run(
                "verify",
                stages.verify,
                store,
                path,
                load_ref,
                conv_ref,
                assign_ref,
                m.source_module,
                m.target.module,
                prep.source_arch,
                prep.target_arch,
                m.dummy_input,
                m.trusted,
            )
        rep_ref = run(
            "report",
            stages.report,
            store,
            load_ref,
            inv_ref,
            prep.target_arch,
            assign_ref,
            val_ref,
            ver_ref,
        )
        run("export", stages.export, store, conv_ref, rep_ref, str(item.output))
    except Exception as e:  # one bad checkpoint must not stop the batch; it is reported
        record_failure(summary, stage, e)
        return summary
    finish(summary)
    return summary


def note_stage(summary: CheckpointSummary, stage: str, value: Any) -> None:
    """A stage's result → the summary fields it settles (coverage, checks, output)."""
    if stage == "assign":
        summary.coverage = {
            "source": value.info.get("source_coverage"),
            "target": value.info.get("target_coverage"),
        }
    elif stage == "validate":
        summary.validation = "passed" if value.info.get("ok") else "failed"
    elif stage == "verify":
        summary.functional = "passed" if value.info.get("ok") else "failed"
        summary.max_abs_diff = value.info.get("max_abs_diff")
    elif stage == "export":
        summary.output, summary.report = value[0], value[1]


def finish(summary: CheckpointSummary) -> None:
    """Summary of a checkpoint that ran every stage → status ``ok`` or ``check_failed``."""
    if summary.status != "failed" and "failed" in (summary.validation, summary.functional):
        summary.status = "check_failed"


def functional_enabled(m: Migration) -> bool:
    """Migration → True when it can and should run the functional check."""
    return bool(m.functional and m.source_module and m.target.module and m.dummy_input is not None)


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


def failed_item(item: WorkItem, stage: str, message: str) -> CheckpointSummary:
    """WorkItem that could not run → its failed summary."""
    return CheckpointSummary(
        migration=item.migration.name,
        source=str(item.source),
        status="failed",
        failed_stage=stage,
        error=message,
    )


def run_batch(
    job: JobConfig,
    *,
    store: ArtifactStore | None = None,
    max_workers: int | None = None,
    on_item: Callable[[CheckpointSummary], None] | None = None,
) -> BatchSummary:
    """Job → BatchSummary, running every stage in this process (threads, or sequentially).

    ``runner.kind: dask`` jobs run here on threads too: Dask needs the Prefect flows.
    ``on_item`` is called with each checkpoint's summary as it finishes.
    """
    t0 = time.perf_counter()
    store = store or ArtifactStore(job.store)
    prepare_examples(job)
    kind = job.runner.kind
    if kind == "dask":
        log.warning("runner 'dask' needs the Prefect flows; running on local threads instead")
        kind = "threads"
    workers = 1 if kind == "sequential" else (max_workers or job.runner.max_workers or 4)
    batch = BatchSummary(job=job.name, runner=kind)

    prepared: dict[str, Prepared | str] = {}
    for m in job.migrations:
        try:
            prepared[m.name] = prep = prepare_migration(store, m)
            batch.batch_stages[m.name] = prep.records
        except WeightMapperError as e:
            prepared[m.name] = f"preparing the target failed: {e}"
        except Exception as e:  # a user's target module may raise anything while building
            prepared[m.name] = f"preparing the target failed: {type(e).__name__}: {e}"

    items = plan_items(job)
    if not items:
        raise ConfigError(
            f"job {job.name!r} found no source checkpoints; check its 'sources' patterns."
        )

    def run_one(item: WorkItem) -> CheckpointSummary:
        prep = prepared[item.migration.name]
        if item.problem:
            result = failed_item(item, "plan", item.problem)
        elif isinstance(prep, str):
            result = failed_item(item, "target", prep)
        else:
            result = migrate_checkpoint(store, item, prep)
        if on_item is not None:
            on_item(result)
        return result

    if workers == 1:
        batch.items = [run_one(i) for i in items]
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="weightmapper") as ex:
            batch.items = list(ex.map(run_one, items))
    batch.seconds = time.perf_counter() - t0
    return batch
