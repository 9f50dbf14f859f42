"""Content of the Prefect artifacts: keys Prefect accepts, inert Markdown, every row of a report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from flows import artifacts
from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary, StageRecord

KEY = re.compile(r"^[a-z0-9-]+$")  # what Prefect accepts as an artifact key


def _report() -> dict[str, Any]:
    return {
        "mapping": {
            "coverage": {"mapped_pairs": 1, "multi_pairs": 1, "source_unmatched": 1},
            "pairs": [
                {
                    "source": "features.0.weight",
                    "target": "stem.conv.weight",
                    "score": 0.93,
                    "transform": {"name": "identity", "params": {}},
                    "confidence": "high",
                }
            ],
            "multi": [
                {
                    "kind": "merge",
                    "sources": ["q.weight", "k.weight", "v.weight"],
                    "targets": ["qkv.weight"],
                    "score": 0.8,
                    "transform": {"name": "concat", "params": {"dim": 0}},
                }
            ],
            "unmatched": {
                "source": [{"name": "aux.weight", "reason": "no_shape_partner", "detail": ""}],
                "target": [{"name": "head.bias", "reason": "below_threshold", "detail": "0.41"}],
            },
        }
    }


def test_keys_are_valid_stable_and_distinct() -> None:
    a = artifacts.artifact_key("Demo Job", "cnn", "/data/run1/Old_CNN seed0.pt")
    b = artifacts.artifact_key("Demo Job", "cnn", "/data/run2/Old_CNN seed0.pt")
    assert KEY.match(a) and KEY.match(b)
    assert a == artifacts.artifact_key("Demo Job", "cnn", "/data/run1/Old_CNN seed0.pt")
    assert a != b  # one file name in two folders
    long = artifacts.artifact_key("j" * 300, "ünïcode/ → 名前", "/x/" + "y" * 500 + ".pt")
    assert KEY.match(long) and len(long + "-summary") <= 100
    assert KEY.match(artifacts.artifact_key("!!!", "???"))


def test_markdown_escapes_names_from_checkpoints() -> None:
    hostile = "x`](javascript:alert(1)) <img src=x onerror=alert(1)> | *bold*\nnext"
    item = CheckpointSummary(
        migration="cnn",
        source=f"/ckpts/{hostile}.pt",
        status="failed",
        failed_stage="load",
        error=hostile,
    )
    md = artifacts.checkpoint_markdown("demo", item, None)
    assert "<img" not in md and "&lt;img" in md
    assert "`" not in md.replace("\\`", "")  # every backtick escaped
    assert "\\|" in md and "\\*bold\\*" in md
    assert "failed at | load" in md
    # One line per table row: the newline in the name did not break the table.
    rows = [line for line in md.splitlines() if line.startswith("|")]
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 3 for line in rows), rows


def test_markdown_states_checks_paths_and_stages() -> None:
    item = CheckpointSummary(
        migration="cnn",
        source="/ckpts/a.pt",
        coverage={"source": 1.0, "target": 0.5},
        validation="passed",
        functional="passed",
        max_abs_diff=0.0,
        output="/out/a.safetensors",
        report="/out/a.report.json",
        stages=[StageRecord("load", True), StageRecord("convert", False)],
    )
    md = artifacts.checkpoint_markdown("demo", item, _report())
    assert "100.0% / 50.0%" in md
    assert "/out/a\\.report\\.json" in md and "/out/a\\.safetensors" in md
    assert "1 cached, 1 computed (convert)" in md
    assert "1 pairs, 1 splits/merges, 1 source" in md
    batch = BatchSummary(job="demo", runner="threads", items=[item])
    assert "1/1 ok" in artifacts.batch_markdown(batch)


def test_table_rows_cover_pairs_merges_and_unmatched_keys() -> None:
    rows = artifacts.mapping_rows(_report())
    assert [r["kind"] for r in rows] == ["pair", "merge", "unmatched source", "unmatched target"]
    assert rows[0]["source"] == "features.0.weight" and rows[0]["target"] == "stem.conv.weight"
    assert rows[1]["source"] == "q.weight, k.weight, v.weight"
    assert rows[1]["transform"] == 'concat {"dim": 0}'
    assert rows[3] == {
        "kind": "unmatched target",
        "source": "",
        "target": "head.bias",
        "score": None,
        "transform": "",
        "reason": "below_threshold: 0.41",
    }
    json.dumps(rows)  # what Prefect stores


def test_table_is_capped_with_a_note(tmp_path: Path) -> None:
    report = _report()
    pair = report["mapping"]["pairs"][0]
    report["mapping"]["pairs"] = [pair] * (artifacts.MAX_TABLE_ROWS + 10)
    rows = artifacts.mapping_rows(report)
    assert len(rows) == artifacts.MAX_TABLE_ROWS + 1
    assert rows[-1]["source"] == "13 more rows in the report"


def test_report_is_read_from_the_summary_path(tmp_path: Path) -> None:
    path = tmp_path / "a.report.json"
    path.write_text(json.dumps(_report()))
    item = CheckpointSummary(migration="m", source="a.pt", report=str(path))
    assert artifacts.read_report(item) == _report()
    path.write_text("{not json")
    assert artifacts.read_report(item) is None
    assert artifacts.read_report(CheckpointSummary(migration="m", source="a.pt")) is None
