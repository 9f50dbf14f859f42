"""Prefect flows: one checkpoint's migration, and a batch that fans out over checkpoints.

The flows only order tasks; every behaviour lives in ``weightmapper.pipeline`` and runs
without Prefect too (``weightmapper migrate --no-prefect``). Call
:func:`flows.embedded.configure_prefect` before importing this module (``run_job`` in
``flows/embedded.py`` does both).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.futures import PrefectFuture, wait
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.tasks import make_tasks
from weightmapper.pipeline.batch import (
    WorkItem,
    failed_item,
    finish,
    functional_enabled,
    note_stage,
    plan_items,
    prepare_examples,
    record_failure,
)
from weightmapper.pipeline.config import JobConfig, Migration, RunnerSpec, TargetSpec
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary, StageRecord

Futures = dict[str, PrefectFuture[Any]]
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


def submit_prepare(tasks: Mapping[str, Any], store: ArtifactStore, m: Migration) -> Futures:
    """Migration → futures of its once-per-batch stages (architectures and traces)."""
    f: Futures = {"target": tasks["architecture"].submit(store=store, target=m.target)}
    if m.dummy_input is not None and m.target.module is not None:
        f["trace_target"] = tasks["trace"].submit(
            store=store, arch_ref=f["target"], spec=m.target.module, dummy=m.dummy_input
        )
    if m.source_module is not None:
        f["source_arch"] = tasks["architecture"].submit(
            store=store, target=TargetSpec(module=m.source_module)
        )
        if m.dummy_input is not None:
            f["trace_source"] = tasks["trace"].submit(
                store=store, arch_ref=f["source_arch"], spec=m.source_module, dummy=m.dummy_input
            )
    return f


def submit_item(
    tasks: Mapping[str, Any], store: ArtifactStore, item: WorkItem, prep: Futures
) -> Futures:
    """One checkpoint → futures of its stages, each depending on the ones it reads."""
    m, path = item.migration, str(item.source)
    f: Futures = {}
    f["load"] = tasks["load"].submit(store=store, path=path, trusted=m.trusted)
    f["inventory"] = tasks["inventory"].submit(store=store, load_ref=f["load"])
    f["score"] = tasks["score"].submit(
        store=store,
        source_inv=f["inventory"],
        target_inv=prep["target"],
        source_trace=prep.get("trace_source"),
        target_trace=prep.get("trace_target"),
        settings=m.mapper,
    )
    f["assign"] = tasks["assign"].submit(store=store, score_ref=f["score"], settings=m.mapper)
    f["convert"] = tasks["convert"].submit(
        store=store, path=path, load_ref=f["load"], assign_ref=f["assign"]
    )
    if m.validate:
        f["validate"] = tasks["validate"].submit(
            store=store, convert_ref=f["convert"], target=m.target, arch_ref=prep["target"]
        )
    if functional_enabled(m):
        f["verify"] = tasks["verify"].submit(
            store=store,
            path=path,
            load_ref=f["load"],
            convert_ref=f["convert"],
            assign_ref=f["assign"],
            source=m.source_module,
            target=m.target.module,
            source_arch=prep["source_arch"],
            target_arch=prep["target"],
            dummy=m.dummy_input,
            trusted=m.trusted,
        )
    f["report"] = tasks["report"].submit(
        store=store,
        load_ref=f["load"],
        source_inv=f["inventory"],
        target_arch=prep["target"],
        assign_ref=f["assign"],
        validate_ref=f.get("validate"),
        verify_ref=f.get("verify"),
    )
    f["export"] = tasks["export"].submit(
        store=store, convert_ref=f["convert"], report_ref=f["report"], output=str(item.output)
    )
    return f


def _record(name: str, fut: PrefectFuture[Any]) -> tuple[StageRecord | None, Any, Any]:
    """Finished future → (its StageRecord, its value, or the exception it failed with)."""
    state = fut.state
    if state.is_completed():
        value = state.result()
        ref = value if isinstance(value, ArtifactRef) else None
        cached = state.name == "Cached" or (ref.cached if ref else bool(value[2]))
        # Durations live in Prefect's UI; the summary keeps the cache facts.
        return StageRecord(name, cached, 0.0, ref.key if ref else "", state.name), value, None
    if state.is_failed() or state.is_crashed():
        return None, None, state.result(raise_on_failure=False)
    return None, None, None  # never ran: an upstream stage failed


def collect_prepare(futs: Futures) -> tuple[list[StageRecord], str | None]:
    """Once-per-batch futures → their records, and the error message if one failed."""
    records: list[StageRecord] = []
    for name, fut in futs.items():
        rec, _, err = _record(name, fut)
        if rec is None:
            return records, f"preparing the target failed at {name}: {err}"
        records.append(rec)
    return records, None


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


@flow(name="weightmapper-migrate-checkpoint", validate_parameters=False, persist_result=False)
def migrate_checkpoint_flow(
    migration: Migration, source: str, output: str, store_root: str
) -> CheckpointSummary:
    """One checkpoint of one migration → its CheckpointSummary (each stage a cached task)."""
    store = ArtifactStore(store_root)
    tasks = make_tasks(store)
    prep = submit_prepare(tasks, store, migration)
    item = WorkItem(migration, Path(source), 0, Path(output))
    futs = submit_item(tasks, store, item, prep)
    wait([*prep.values(), *futs.values()])
    _, error = collect_prepare(prep)
    if error:
        return failed_item(item, "target", error)
    return collect_item(item, futs)


@flow(name="weightmapper-migrate-batch", validate_parameters=False, persist_result=False)
def migrate_batch_flow(job: JobConfig) -> BatchSummary:
    """Job → BatchSummary: targets prepared once, then every checkpoint's stages fanned out."""
    t0 = time.perf_counter()
    store = ArtifactStore(job.store)
    tasks = make_tasks(store)
    prepare_examples(job)
    prep = {m.name: submit_prepare(tasks, store, m) for m in job.migrations}
    items = plan_items(job)
    submitted = [
        (item, None if item.problem else submit_item(tasks, store, item, prep[item.migration.name]))
        for item in items
    ]
    wait(
        [f for p in prep.values() for f in p.values()]
        + [f for _, futs in submitted if futs for f in futs.values()]
    )
    batch = BatchSummary(job=job.name, runner=job.runner.kind)
    errors: dict[str, str | None] = {}
    for name, futs in prep.items():
        batch.batch_stages[name], errors[name] = collect_prepare(futs)
    for item, futs in submitted:
        if futs is None:
            batch.items.append(failed_item(item, "plan", item.problem or ""))
        elif errors[item.migration.name]:
            batch.items.append(failed_item(item, "target", errors[item.migration.name] or ""))
        else:
            batch.items.append(collect_item(item, futs))
    batch.seconds = time.perf_counter() - t0
    return batch


def run_batch_flow(job: JobConfig) -> BatchSummary:
    """Job → BatchSummary from the batch flow, on the job's runner, heartbeat off.

    The heartbeat thread costs about a second per flow run and only serves crash
    detection by a server, which an embedded run does not have.
    """
    flow_fn = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        return flow_fn(job)


@flow(name="weightmapper-migrate-job", validate_parameters=True, persist_result=False)
def migrate_job_file(job_path: str, threshold: float | None = None) -> dict[str, Any]:
    """YAML job path (+ optional threshold override) → the batch summary as JSON-ready dict.

    The entry point for deployments and schedules (``migrate_job_file.serve(cron=...)``):
    its parameters are plain JSON.
    """
    from weightmapper.pipeline.config import load_job, with_threshold

    job = load_job(job_path)
    if threshold is not None:
        job = with_threshold(job, threshold)
    batch = migrate_batch_flow.with_options(task_runner=task_runner_for(job.runner))
    return batch(job).to_dict()
