"""Prefect flows: one checkpoint's migration, and a batch that fans out over checkpoints.

The flows only walk the stage graph (:mod:`weightmapper.pipeline.graph`); every behaviour
lives in ``weightmapper.pipeline`` and runs without Prefect too (``weightmapper migrate
--no-prefect``). A node whose result the store already holds is reused in the flow itself
(:func:`weightmapper.pipeline.graph.reuse`: the key looked up, the artifact verified) and
recorded ``Cached``; a task is submitted only for a node that must run, or whose inputs are
still being computed. A rerun that finds everything stored therefore costs no task runs,
only the flow run and its artifacts. Call :func:`flows.embedded.configure_prefect`
before importing this module (``run_job`` in ``flows/embedded.py`` does both).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    temporary_settings,
)
from prefect.states import Completed, Failed, State
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.artifacts import publish_batch, publish_checkpoint
from flows.tasks import make_tasks
from weightmapper.pipeline import graph
from weightmapper.pipeline.batch import plan_items, prepare_examples
from weightmapper.pipeline.config import JobConfig, Migration, RunnerSpec
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
Futures = dict[str, PrefectFuture[Any]]
"""Node name → the future of its task, or its result when it was reused from the store."""
# Task-pool threads per checkpoint in flight: a submitted task waits in its thread for
# the tasks it depends on, so a checkpoint's chain holds up to this many threads.
_THREADS_PER_CHECKPOINT = 10


def task_runner_for(spec: RunnerSpec) -> TaskRunner:
    """RunnerSpec → Prefect task runner (threads by default; Dask at an address or local)."""
    if spec.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if spec.address:
            return DaskTaskRunner(address=spec.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": spec.n_workers, "threads_per_worker": 2})
    at_once = 1 if spec.kind == "sequential" else (spec.max_workers or 4)
    return ThreadPoolTaskRunner(max_workers=at_once * _THREADS_PER_CHECKPOINT)


def submit_nodes(
    tasks: Mapping[str, Any],
    store: ArtifactStore,
    m: Migration,
    item: WorkItem | None,
    known: Mapping[str, Any],
) -> Futures:
    """The graph's nodes of one scope (migration when ``item`` is None) → their futures, or
    their results where the store already holds them."""
    scope = MIGRATION if item is None else CHECKPOINT
    results: dict[str, Any] = dict(known)
    futures: Futures = {}
    for node in graph.nodes(m, scope):
        reads = {n: results[n] for n in node.inputs if n in results}
        stored = _stored(store, node, m, item, reads)
        if stored is not None:
            futures[node.name] = results[node.name] = stored
            continue
        futures[node.name] = results[node.name] = tasks[node.name].submit(
            store=store, node=node.name, migration=m, item=item, results=reads
        )
    return futures


def _stored(
    store: ArtifactStore, node: graph.Node, m: Migration, item: WorkItem | None, reads: Any
) -> Any | None:
    """A node and its inputs → its stored result, or None when a task must run it.

    Only a node whose inputs are all known can be looked up; any problem computing its key
    (a missing or unreadable checkpoint) is left to the task, which reports it in context.
    """
    if any(isinstance(v, PrefectFuture) for v in reads.values()):
        return None
    try:
        return graph.reuse(store, node.build(m, item, reads))
    except Exception as e:  # the task raises the same error, recorded with its stage
        log.debug("%s is not reusable: %s", node.name, e)
        return None


def _pending(values: Iterable[Any]) -> list[PrefectFuture[Any]]:
    """Futures and reused results → the futures alone (what there is to wait for)."""
    return [v for v in values if isinstance(v, PrefectFuture)]


def _record(name: str, fut: PrefectFuture[Any] | Any) -> tuple[StageRecord | None, Any, Any]:
    """Finished future or reused result → (its StageRecord, its value, or the exception it
    failed with)."""
    if not isinstance(fut, PrefectFuture):
        return graph.record(name, fut, state="Cached"), fut, None
    state = fut.state
    if state.is_completed():
        value = state.result()
        # Durations live in Prefect's UI; the summary keeps the cache facts.
        return graph.record(name, value, state=state.name), value, None
    if state.is_failed() or state.is_crashed():
        return None, None, state.result(raise_on_failure=False)
    return None, None, None  # never ran: an upstream stage failed


def collect_migration(futs: Futures) -> tuple[dict[str, Any], list[StageRecord], str | None]:
    """Once-per-migration futures → (results, records, the error message if one failed)."""
    results: dict[str, Any] = {}
    records: list[StageRecord] = []
    for name, fut in futs.items():
        rec, value, err = _record(name, fut)
        if rec is None:
            return results, records, f"preparing the target failed at {name}: {err}"
        results[name] = value
        records.append(rec)
    return results, records, None


def collect_item(item: WorkItem, futs: Futures) -> CheckpointSummary:
    """A checkpoint's finished futures → its CheckpointSummary."""
    summary = CheckpointSummary(migration=item.migration.name, source=str(item.source))
    for name, fut in futs.items():
        rec, value, err = _record(name, fut)
        if rec is None:
            record_failure(summary, name, err or RuntimeError("an earlier stage failed"))
            return summary
        summary.stages.append(rec)
        note_stage(summary, name, value)
    finish(summary)
    return summary


def _final(batch: BatchSummary) -> State:
    """BatchSummary → the flow run's final state: Failed unless every checkpoint is ok."""
    if batch.ok:
        return Completed(data=batch)
    counts = batch.counts()
    return Failed(
        message=f"{counts['total'] - counts['ok']} of {counts['total']} checkpoint(s) did not "
        "pass (failed, or failed a check)",
        data=batch,
    )


@flow(name="weightmapper-migrate-checkpoint", validate_parameters=False, persist_result=False)
def migrate_checkpoint_flow(
    migration: Migration, source: str, output: str, store_root: str
) -> State:
    """One checkpoint of one migration → its CheckpointSummary (each stage a cached task)."""
    store = ArtifactStore(store_root)
    tasks = make_tasks(store)
    item = WorkItem(migration, Path(source), 0, Path(output))
    prep = submit_nodes(tasks, store, migration, None, {})
    wait(_pending(prep.values()))
    results, _, error = collect_migration(prep)
    if error:
        summary = failed_item(migration.name, source, "target", error)
    else:
        futs = submit_nodes(tasks, store, migration, item, results)
        wait(_pending(futs.values()))
        summary = collect_item(item, futs)
    publish_checkpoint(migration.name, summary)
    ok = summary.status == "ok"
    return Completed(data=summary) if ok else Failed(message=summary.status, data=summary)


@flow(name="weightmapper-migrate-batch", validate_parameters=False, persist_result=False)
def migrate_batch_flow(job: JobConfig) -> State:
    """Job → BatchSummary: targets prepared once, then every checkpoint's stages fanned out.

    The run ends ``Failed`` when a checkpoint failed or failed a check; the summary is the
    state's data either way (:func:`summary_of`).
    """
    t0 = time.perf_counter()
    store = ArtifactStore(job.store)
    store.ensure_writable()
    store.sweep_orphans()  # what killed runs left under keys never written again
    tasks = make_tasks(store)
    prepare_examples(job)
    items = plan_items(job)
    batch = BatchSummary(job=job.name, runner=job.runner.kind)
    prep = {m.name: submit_nodes(tasks, store, m, None, {}) for m in job.migrations}
    wait(_pending(f for futs in prep.values() for f in futs.values()))
    prepared: dict[str, dict[str, Any]] = {}
    for name, futs in prep.items():
        prepared[name], batch.batch_stages[name], error = collect_migration(futs)
        if error:
            batch.errors[name] = error
    submitted = [
        (item, submit_nodes(tasks, store, item.migration, item, prepared[item.migration.name]))
        for item in items
        if item.problem is None and item.migration.name not in batch.errors
    ]
    wait(_pending(f for _, futs in submitted for f in futs.values()))
    done = {id(item): collect_item(item, futs) for item, futs in submitted}
    for item in items:
        name, source = item.migration.name, str(item.source)
        if item.problem:
            batch.items.append(failed_item(name, source, "plan", item.problem))
        elif name in batch.errors:
            batch.items.append(not_prepared(name, source))
        else:
            batch.items.append(done[id(item)])
    publish_batch(batch)
    batch.seconds = time.perf_counter() - t0
    return _final(batch)


def summary_of(state: State) -> Any:
    """Final state of a migrate flow run → the summary it carries (Completed or Failed).

    A run that raised before it had a summary (a job whose outputs would overwrite an
    input, an output folder that is a file) carries the exception: it is raised here, so
    callers get our error (exit 2 on the CLI), never the exception object as a summary.
    """
    result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        raise result
    return result


def run_batch_flow(job: JobConfig, api_url: str | None = None) -> BatchSummary:
    """Job (+ the API URL to run against) → BatchSummary from the batch flow, on the job's
    runner, heartbeat off.

    The heartbeat thread costs about a second per flow run and only serves crash
    detection by a server, which an embedded run does not have. Both settings go into one
    ``temporary_settings``: each one rebuilds Prefect's settings (a tenth of a second).
    """
    flow_fn = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    updates: dict[Any, Any] = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    if api_url is not None:
        updates[PREFECT_API_URL] = api_url
    with temporary_settings(updates):
        return summary_of(flow_fn(job, return_state=True))


@flow(name="weightmapper-migrate-job", validate_parameters=True, persist_result=False)
def migrate_job_file(job_path: str, threshold: float | None = None) -> State:
    """YAML job path (+ optional threshold override) → the batch summary as JSON-ready dict.

    The entry point for deployments and schedules (``migrate_job_file.serve(cron=...)``):
    its parameters are plain JSON. Ends ``Failed`` when a checkpoint did not pass.
    """
    from weightmapper.pipeline.config import load_job, with_threshold

    job = load_job(job_path)
    if threshold is not None:
        job = with_threshold(job, threshold)
    batch_flow = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    batch: BatchSummary = summary_of(batch_flow(job, return_state=True))
    summary = batch.to_dict()
    if batch.ok:
        return Completed(data=summary)
    return Failed(message=f"job {job.name!r}: not every checkpoint passed", data=summary)
