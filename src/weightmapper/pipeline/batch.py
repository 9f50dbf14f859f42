"""The plain-Python batch runner: JobConfig → BatchSummary, no Prefect needed.

Plans the work items (patterns expanded, outputs checked against every input before
anything is written), then walks the stage graph (:mod:`weightmapper.pipeline.graph`):
once per migration for its target, then per checkpoint, several checkpoints at once on
threads. A checkpoint that fails is recorded with its error and failing stage; the rest of
the batch completes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from weightmapper.atomic import name_problem
from weightmapper.errors import ConfigError, OutputError, WeightMapperError
from weightmapper.pipeline import graph
from weightmapper.pipeline.config import JobConfig, Migration
from weightmapper.pipeline.export import report_path_for
from weightmapper.pipeline.graph import CHECKPOINT, MIGRATION, WorkItem
from weightmapper.pipeline.store import ArtifactStore
from weightmapper.pipeline.summary import (
    BatchSummary,
    CheckpointSummary,
    StageRecord,
    failed_item,
    finish,
    not_prepared,
    note_stage,
    record_failure,
)

log = logging.getLogger(__name__)


def prepare_examples(job: JobConfig) -> None:
    """Job → generates the bundled example checkpoints it asks for, when missing."""
    if job.examples is not None:
        from weightmapper.examples.generate import ensure_example_checkpoints

        ensure_example_checkpoints(job.examples)


def plan_items(job: JobConfig) -> list[WorkItem]:
    """Job → one WorkItem per source checkpoint (patterns expanded, output clashes flagged).

    Raises OutputError, before anything is written, when an output or its report would
    land on an input (a source or target checkpoint file, through any link or folder).
    """
    items: list[WorkItem] = []
    claimed: dict[Path, Path] = {}
    for m in job.migrations:
        found, empty = m.expand_sources()
        for pattern in empty:
            problem = f"no checkpoint matches {pattern}; check the path or pattern in 'sources'"
            items.append(WorkItem(m, Path(pattern), -1, Path(), problem))
        for i, src in enumerate(found):
            out = m.output_path(src, i)
            problem = None
            if out in claimed:
                problem = (
                    f"output {out} is also the output of {claimed[out]}; make output.naming "
                    "unique (add {index} or {migration})"
                )
            if problem is None:
                # Said now, not after converting: the output (or its report) cannot be named.
                problem = name_problem(out) or name_problem(report_path_for(out))
            if problem is None and not out.resolve().is_relative_to(m.output.dir.resolve()):
                problem = (
                    f"output {out} would be written outside output.dir {m.output.dir} (the "
                    f"source name {src.name!r} climbs out); use {{index}} in output.naming"
                )
            claimed.setdefault(out, src)
            items.append(WorkItem(m, src, i, out, problem))
    ensure_outputs_spare_inputs(job, items)
    ensure_output_folders(items)
    return items


def ensure_output_folders(items: list[WorkItem]) -> None:
    """Planned items → None, or OutputError when a file stands where an output's folder goes.

    Said once for the job (exit 2), before anything runs, as for a store that is a file:
    otherwise every checkpoint would be converted and then fail to export.
    """
    for item in items:
        if item.problem is not None:
            continue
        folder = item.output.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder.exists() and not folder.is_dir():
            raise OutputError(
                f"output {item.output} cannot be written: {folder} is a file, not a folder. "
                "Expected output.dir (and any folder output.naming adds) to be a folder or "
                "missing: point output.dir elsewhere or move the file."
            )


def ensure_outputs_spare_inputs(job: JobConfig, items: list[WorkItem]) -> None:
    """Job + its planned items → None, or OutputError naming an output that is an input."""
    from weightmapper.io_safety import ensure_outputs_safe, input_files, spec_files

    inputs: set[Path] = set()
    for item in items:
        if item.index >= 0:
            inputs |= input_files(item.source)
    for m in job.migrations:
        if m.target.checkpoint is not None:
            inputs |= input_files(m.target.checkpoint)
        # A module spec reads files too: its .py file, its config, a model folder (whose
        # weights are the user's even when only its config.json is used).
        for spec in (m.target.module, m.source_module):
            if spec is not None:
                inputs |= spec_files(spec.spec, spec.config)
    outputs: dict[str, Path] = {}
    for item in items:
        if item.problem is None:
            outputs[f"output of {item.source.name}"] = item.output
            outputs[f"report of {item.source.name}"] = report_path_for(item.output)
    ensure_outputs_safe(outputs, inputs)


def _timed(records: list[StageRecord], node: graph.Node, stage: Any, store: ArtifactStore) -> Any:
    t0 = time.perf_counter()
    out = graph.run(store, stage)
    records.append(graph.record(node.name, out, time.perf_counter() - t0))
    return out


def prepare_migration(
    store: ArtifactStore, m: Migration
) -> tuple[dict[str, Any], list[StageRecord]]:
    """Migration → the results of its once-per-migration nodes, and their records."""
    results: dict[str, Any] = {}
    records: list[StageRecord] = []
    for node in graph.nodes(m, MIGRATION):
        results[node.name] = _timed(records, node, node.build(m, None, results), store)
    return results, records


def migrate_checkpoint(
    store: ArtifactStore, item: WorkItem, prepared: dict[str, Any]
) -> CheckpointSummary:
    """One checkpoint through every per-checkpoint node → its summary (errors recorded)."""
    m = item.migration
    summary = CheckpointSummary(migration=m.name, source=str(item.source))
    results = dict(prepared)
    name = "load"
    try:
        for node in graph.nodes(m, CHECKPOINT):
            name = node.name
            results[name] = _timed(summary.stages, node, node.build(m, item, results), store)
            note_stage(summary, name, results[name])
    except Exception as e:  # one bad checkpoint must not stop the batch; it is reported
        record_failure(summary, name, e)
        return summary
    finish(summary)
    return summary


def _describe(e: BaseException) -> str:
    return str(e) if isinstance(e, WeightMapperError) else f"{type(e).__name__}: {e}"


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
    store.ensure_writable()
    store.sweep_orphans()  # what killed runs left under keys never written again
    prepare_examples(job)
    items = plan_items(job)
    if not items:
        raise ConfigError(
            f"job {job.name!r} found no source checkpoints; check its 'sources' patterns."
        )
    kind = job.runner.kind
    if kind == "dask":
        log.warning("runner 'dask' needs the Prefect flows; running on local threads instead")
        kind = "threads"
    workers = 1 if kind == "sequential" else (max_workers or job.runner.max_workers or 4)
    batch = BatchSummary(job=job.name, runner=kind)

    prepared: dict[str, dict[str, Any]] = {}
    for m in job.migrations:
        try:
            prepared[m.name], batch.batch_stages[m.name] = prepare_migration(store, m)
        except Exception as e:  # a user's target module may raise anything while building
            batch.errors[m.name] = f"preparing the target failed: {_describe(e)}"
            log.warning("migration %s: %s", m.name, batch.errors[m.name])

    def run_one(item: WorkItem) -> CheckpointSummary:
        name, source = item.migration.name, str(item.source)
        if item.problem:
            result = failed_item(name, source, "plan", item.problem)
        elif name in batch.errors:
            result = not_prepared(name, source)
        else:
            result = migrate_checkpoint(store, item, prepared[name])
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
