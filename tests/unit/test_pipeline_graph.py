"""The stage graph: one declaration of every stage, walked in order by the plain runner."""

from __future__ import annotations

from pathlib import Path

from pipeline_jobs import cnn_job_data
from weightmapper.pipeline import graph
from weightmapper.pipeline.batch import run_batch
from weightmapper.pipeline.config import parse_job


def test_every_node_reads_only_nodes_declared_before_it() -> None:
    seen: set[str] = set()
    for node in graph.GRAPH:
        assert set(node.inputs) <= seen, (node.name, set(node.inputs) - seen)
        assert node.scope in (graph.MIGRATION, graph.CHECKPOINT)
        seen.add(node.name)
    assert len(seen) == len(graph.GRAPH)  # names are unique


def test_migration_nodes_come_before_checkpoint_nodes() -> None:
    scopes = [n.scope for n in graph.GRAPH]
    assert scopes == sorted(scopes, key=lambda s: s != graph.MIGRATION)


def test_the_plain_runner_walks_the_graph_in_its_order(tmp_path: Path) -> None:
    data = cnn_job_data(
        sources=["ckpts/cnn/old_cnn_seed0.pt"], dummy_input={"shape": [1, 3, 16, 16]}, output="out"
    )
    job = parse_job(data, base_dir=tmp_path)
    summary = run_batch(job)
    (item,) = summary.items
    m = job.migrations[0]
    assert [s.name for s in item.stages] == [n.name for n in graph.nodes(m, graph.CHECKPOINT)]
    assert [s.name for s in summary.batch_stages[m.name]] == [
        n.name for n in graph.nodes(m, graph.MIGRATION)
    ]


def test_optional_nodes_follow_the_job(tmp_path: Path) -> None:
    job = parse_job(
        {
            "sources": ["x.pt"],
            "target": {"module": "weightmapper.examples.cnn:RefactoredCNN"},
            "checks": {"validate": False, "require": "none"},
            "output": "out",
        },
        base_dir=tmp_path,
    )
    m = job.migrations[0]
    assert [n.name for n in graph.nodes(m, graph.MIGRATION)] == ["target"]
    assert [n.name for n in graph.nodes(m, graph.CHECKPOINT)] == [
        "load",
        "inventory",
        "score",
        "assign",
        "convert",
        "report",
        "export",
    ]
