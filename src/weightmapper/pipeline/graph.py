"""The stage graph: every stage of a migration declared once, in the order they run.

A :class:`Node` names a stage (as summaries and the Prefect UI show it), says whether it
runs once per migration or once per checkpoint, which earlier nodes it reads, when it
applies, and how its frozen input is built from the job and those earlier results. The
plain runner (:mod:`weightmapper.pipeline.batch`) and the Prefect flows (``flows/``) both
walk :data:`GRAPH`: the plain runner passes results, the flows pass futures of them, and
neither knows the order itself.

Per migration: ``target`` → ``trace_target``; ``source_arch`` → ``trace_source`` (when the
source architecture is given). Per checkpoint: load → inventory → score → assign → prove
(when the job names the source architecture and an input) → convert → validate → verify →
report → export. Convert, verify and report read the prove stage's mapping when it ran, so
the file checked and exported is the proven one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from weightmapper.pipeline import stages as st
from weightmapper.pipeline.config import Migration, TargetSpec
from weightmapper.pipeline.export import Exported, ExportStage
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.pipeline.summary import StageRecord

MIGRATION, CHECKPOINT = "migration", "checkpoint"


@dataclass(frozen=True)
class WorkItem:
    """One checkpoint of one migration, with where its output goes."""

    migration: Migration
    source: Path
    index: int
    output: Path
    problem: str | None = None
    """Set when the item cannot run at all (no file behind a pattern, output clash)."""


Binder = Callable[[Migration, WorkItem | None, Mapping[str, Any]], st.Stage]


def _always(m: Migration) -> bool:
    return True


@dataclass(frozen=True)
class Node:
    """One stage in the graph: its name, scope, inputs, when it applies and how it is built."""

    name: str
    scope: str
    """``migration`` (once for all checkpoints of a migration) or ``checkpoint``."""
    stage: type[st.Stage]
    inputs: tuple[str, ...]
    """Earlier nodes whose results (or futures) its binder reads; absent optional ones are
    left out."""
    bind: Binder
    """(migration, work item or None, {input name: result}) → the stage's frozen input."""
    when: Callable[[Migration], bool] = _always

    @property
    def version(self) -> int:
        """The stage's version (part of its key)."""
        return self.stage.version

    def build(self, m: Migration, item: WorkItem | None, results: Mapping[str, Any]) -> st.Stage:
        """Migration, item and every earlier result → this node's stage input."""
        return self.bind(m, item, {n: results[n] for n in self.inputs if n in results})


def functional_enabled(m: Migration) -> bool:
    """Migration → True when it can and should run the functional check."""
    return bool(m.functional and m.source_module and m.target.module and m.dummy_input is not None)


def _mapping(r: Mapping[str, Any]) -> Any:
    """Earlier results → the mapping to convert: the proven one when the prove stage ran."""
    return r.get("prove") or r["assign"]


def _path(item: WorkItem | None) -> str:
    assert item is not None  # checkpoint nodes are always built with their item
    return str(item.source)


GRAPH: tuple[Node, ...] = (
    Node(
        "target", MIGRATION, st.ArchitectureStage, (),
        lambda m, i, r: st.ArchitectureStage(m.target),
    ),
    Node(
        "trace_target", MIGRATION, st.TraceStage, ("target",),
        lambda m, i, r: st.TraceStage(r["target"], m.target.module, m.dummy_input),
        when=lambda m: m.dummy_input is not None and m.target.module is not None,
    ),
    Node(
        "source_arch", MIGRATION, st.ArchitectureStage, (),
        lambda m, i, r: st.ArchitectureStage(TargetSpec(module=m.source_module)),
        when=lambda m: m.source_module is not None,
    ),
    Node(
        "trace_source", MIGRATION, st.TraceStage, ("source_arch",),
        lambda m, i, r: st.TraceStage(r["source_arch"], m.source_module, m.dummy_input),
        when=lambda m: m.source_module is not None and m.dummy_input is not None,
    ),
    Node(
        "load", CHECKPOINT, st.LoadStage, (),
        lambda m, i, r: st.LoadStage(_path(i), m.trusted),
    ),
    Node(
        "inventory", CHECKPOINT, st.InventoryStage, ("load",),
        lambda m, i, r: st.InventoryStage(r["load"]),
    ),
    Node(
        "score", CHECKPOINT, st.ScoreStage,
        ("inventory", "target", "trace_source", "trace_target"),
        lambda m, i, r: st.ScoreStage(
            r["inventory"], r["target"], r.get("trace_source"), r.get("trace_target"), m.mapper
        ),
    ),
    Node(
        "assign", CHECKPOINT, st.AssignStage, ("score",),
        lambda m, i, r: st.AssignStage(r["score"], m.mapper),
    ),
    Node(
        "prove", CHECKPOINT, st.ProveStage,
        ("load", "assign", "source_arch", "target"),
        lambda m, i, r: st.ProveStage(
            _path(i), r["load"], r["assign"], r["source_arch"], r["target"],
            m.source_module, m.target.module, m.dummy_input, m.trusted,
        ),
        when=functional_enabled,
    ),
    Node(
        "convert", CHECKPOINT, st.ConvertStage, ("load", "assign", "prove"),
        lambda m, i, r: st.ConvertStage(_path(i), r["load"], _mapping(r)),
    ),
    Node(
        "validate", CHECKPOINT, st.ValidateStage, ("convert", "target"),
        lambda m, i, r: st.ValidateStage(r["convert"], m.target, r["target"]),
        when=lambda m: m.validate,
    ),
    Node(
        "verify", CHECKPOINT, st.VerifyStage,
        ("load", "convert", "assign", "prove", "source_arch", "target"),
        lambda m, i, r: st.VerifyStage(
            _path(i), r["load"], _mapping(r), r["source_arch"], r["target"],
            m.source_module, m.target.module, m.dummy_input, m.trusted, convert=r["convert"],
        ),
        when=functional_enabled,
    ),
    Node(
        "report", CHECKPOINT, st.ReportStage,
        ("load", "inventory", "target", "assign", "prove", "validate", "verify"),
        lambda m, i, r: st.ReportStage(
            r["load"], r["inventory"], r["target"], _mapping(r), r.get("validate"),
            r.get("verify"),
        ),
    ),
    Node(
        "export", CHECKPOINT, ExportStage, ("convert", "report", "validate", "verify"),
        lambda m, i, r: ExportStage(
            r["convert"], r["report"], str(i.output if i else ""), m.require, r.get("validate"),
            r.get("verify"),
        ),
    ),
)  # fmt: skip

NODES: dict[str, Node] = {n.name: n for n in GRAPH}


def nodes(m: Migration, scope: str) -> Iterator[Node]:
    """Migration + scope → the nodes that apply to it, in the order they run."""
    return (n for n in GRAPH if n.scope == scope and n.when(m))


def record(name: str, value: Any, seconds: float = 0.0, state: str | None = None) -> StageRecord:
    """A node's name and result (ArtifactRef or Exported) → its StageRecord."""
    if isinstance(value, ArtifactRef):
        return StageRecord(name, value.cached or state == "Cached", seconds, value.key, state)
    if isinstance(value, Exported):  # its key names the output path: not shown
        return StageRecord(name, value.cached or state == "Cached", seconds, "", state)
    raise TypeError(f"stage {name} returned {type(value).__name__}, not a stage result")


def run(store: ArtifactStore, stage: st.Stage) -> Any:
    """Store + a stage input → the stage's result (the one call both runners make)."""
    return stage.run(store)


def reuse(store: ArtifactStore, stage: st.Stage) -> Any | None:
    """Store + a stage input → its stored result (``cached``), or None when it must run.

    Computes nothing: the stage's key is looked up and the artifact verified as
    :meth:`ArtifactStore.lookup` does (record, size, content, digest), so a result is reused
    exactly when ``run`` would reuse it. The export step is current when the output and its
    report already hold the verified artifacts.
    """
    key = stage.key(store)
    if isinstance(stage, ExportStage):
        return stage.run(store) if stage.present(store, key) else None
    hit = store.lookup(stage.name, key)
    return None if hit is None else replace(hit, cached=True)
