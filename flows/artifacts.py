"""Prefect artifacts of a migration: what the Prefect UI shows beside the task states.

Per checkpoint, two artifacts under one key prefix (``weightmapper-<job>-<migration>-
<stem>-<hash>``): a Markdown summary (status, coverage, checks, output and report paths,
which stages ran) and a table of its pairs, splits/merges and unmatched keys read from
its report. Per batch, a Markdown table of every checkpoint. Keys are stable across runs,
so the UI shows each checkpoint's history under one name.

The content builders are plain functions (tested without Prefect); :func:`publish_batch`
sends them. Names in Markdown are escaped: tensor names come from checkpoints, which
anyone may have written.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from weightmapper.pipeline.summary import BatchSummary, CheckpointSummary

# Rows of one table artifact at most: the UI pages them, the database stores them as one
# JSON document; the full list is in the report file.
MAX_TABLE_ROWS = 5000
_KEY_MAX = 80
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def md_text(value: Any) -> str:
    """Any value → Markdown-inert text: punctuation escaped, HTML and line breaks neutralised."""
    text = " ".join(str(value).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def artifact_key(job: str, migration: str, source: str = "") -> str:
    """Job, migration (and source path) → a Prefect artifact key (``[a-z0-9-]``), stable.

    A short hash of the full source path keeps two checkpoints with one file name apart.
    """
    parts = ["weightmapper", _slug(job), _slug(migration)]
    if source:
        digest = hashlib.sha256(source.encode()).hexdigest()[:8]
        stem = _slug(Path(source).stem)[: _KEY_MAX - 40]
        parts += [stem, digest]
    key = "-".join(parts)
    return key if len(key) <= _KEY_MAX else key[: _KEY_MAX - 9] + "-" + key[-8:]


def read_report(item: CheckpointSummary) -> dict[str, Any] | None:
    """A checkpoint's summary → its report (a dict), or None when there is none to read."""
    if not item.report:
        return None
    try:
        data = json.loads(Path(item.report).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def checkpoint_markdown(job: str, item: CheckpointSummary, report: dict[str, Any] | None) -> str:
    """Job name + checkpoint summary (+ its report) → the Markdown of its summary artifact."""
    ok = item.status == "ok"
    lines = [
        f"# {'✓' if ok else '✗'} {md_text(Path(item.source).name)}: {md_text(item.status)}",
        "",
        f"Job **{md_text(job)}**, migration **{md_text(item.migration)}**.",
        "",
        "| | |",
        "|---|---|",
        f"| source | {md_text(item.source)} |",
        f"| coverage (source / target) | {_pct(item.coverage.get('source'))} / "
        f"{_pct(item.coverage.get('target'))} |",
        f"| confident pairs' coverage (source / target) | "
        f"{_pct(item.coverage.get('source_confident'))} / "
        f"{_pct(item.coverage.get('target_confident'))} |",
        f"| strict load into the target | {md_text(item.validation)} |",
        f"| equal outputs | {md_text(item.functional)}"
        + (f" (max abs diff {item.max_abs_diff:.3g})" if item.max_abs_diff is not None else "")
        + " |",
        f"| output | {md_text(item.output or '-')} |",
        f"| report | {md_text(item.report or '-')} |",
    ]
    if item.failed_stage or item.error:
        lines.append(
            f"| failed at | {md_text(item.failed_stage or '-')}: {md_text(item.error or '')} |"
        )
    computed = item.computed_stages
    lines += [
        "",
        f"Stages: {len(item.stages) - len(computed)} cached, {len(computed)} computed"
        + (f" ({md_text(', '.join(computed))})" if computed else "")
        + ".",
    ]
    if report:
        cov = report.get("mapping", {}).get("coverage", {})
        lines += [
            "",
            f"{cov.get('mapped_pairs', 0)} pairs, {cov.get('multi_pairs', 0)} splits/merges, "
            f"{cov.get('source_unmatched', 0)} source and {cov.get('target_unmatched', 0)} "
            "target keys unmatched: see the table artifact with the same key prefix.",
        ]
    return "\n".join(lines) + "\n"


def _transform(t: Any) -> str:
    if not isinstance(t, dict):
        return "identity"
    params = t.get("params") or {}
    return str(t.get("name", "?")) + (f" {json.dumps(params, sort_keys=True)}" if params else "")


def mapping_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Report → table rows: every pair, split/merge and unmatched key (capped, then a note)."""
    mapping = report.get("mapping", {})
    rows: list[dict[str, Any]] = []
    for p in mapping.get("pairs", []):
        rows.append(
            {
                "kind": "pair",
                "source": p.get("source"),
                "target": p.get("target"),
                "score": p.get("score"),
                "transform": _transform(p.get("transform")),
                "reason": p.get("confidence") or p.get("stage") or "",
            }
        )
    for m in mapping.get("multi", []):
        rows.append(
            {
                "kind": m.get("kind", "multi"),
                "source": ", ".join(m.get("sources", [])),
                "target": ", ".join(m.get("targets", [])),
                "score": m.get("score"),
                "transform": _transform(m.get("transform")),
                "reason": "",
            }
        )
    for side in ("source", "target"):
        for u in mapping.get("unmatched", {}).get(side, []):
            detail = u.get("detail") or ""
            rows.append(
                {
                    "kind": f"unmatched {side}",
                    "source": u.get("name") if side == "source" else "",
                    "target": u.get("name") if side == "target" else "",
                    "score": None,
                    "transform": "",
                    "reason": f"{u.get('reason', '')}{': ' + detail if detail else ''}",
                }
            )
    if len(rows) > MAX_TABLE_ROWS:
        left = len(rows) - MAX_TABLE_ROWS
        rows = rows[:MAX_TABLE_ROWS]
        rows.append(
            {
                "kind": "…",
                "source": f"{left} more rows in the report",
                "target": "",
                "score": None,
                "transform": "",
                "reason": "",
            }
        )
    return rows


def batch_markdown(batch: BatchSummary) -> str:
    """BatchSummary → the Markdown of the batch artifact: counts and one row per checkpoint."""
    c = batch.counts()
    lines = [
        f"# {'✓' if batch.ok else '✗'} weightmapper job {md_text(batch.job)}",
        "",
        f"{c['ok']}/{c['total']} ok, {c['check_failed']} failed a check, {c['failed']} failed "
        f"({md_text(batch.runner)} runner).",
        "",
        "| migration | checkpoint | status | coverage src / tgt | confident src / tgt | valid "
        "| equal outputs | report |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i in batch.items:
        lines.append(
            f"| {md_text(i.migration)} | {md_text(Path(i.source).name)} | {md_text(i.status)} | "
            f"{_pct(i.coverage.get('source'))} / {_pct(i.coverage.get('target'))} | "
            f"{_pct(i.coverage.get('source_confident'))} / "
            f"{_pct(i.coverage.get('target_confident'))} | "
            f"{md_text(i.validation)} | {md_text(i.functional)} | {md_text(i.report or '-')} |"
        )
    return "\n".join(lines) + "\n"


def publish_checkpoint(job: str, item: CheckpointSummary) -> None:
    """Job name + checkpoint summary → its two Prefect artifacts (call inside a flow run)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    key = artifact_key(job, item.migration, item.source)
    report = read_report(item)
    where = f"report: {item.report}" if item.report else "no report"
    create_markdown_artifact(
        checkpoint_markdown(job, item, report),
        key=f"{key}-summary",
        description=f"{Path(item.source).name} ({item.migration}): {item.status}; {where}",
    )
    if report is not None:
        create_table_artifact(
            mapping_rows(report),
            key=f"{key}-mapping",
            description=f"pairs and unmatched keys of {Path(item.source).name}; {where}",
        )


def publish_batch(batch: BatchSummary) -> None:
    """BatchSummary → its Prefect artifacts: the batch table, then each checkpoint's two."""
    from prefect.artifacts import create_markdown_artifact

    create_markdown_artifact(
        batch_markdown(batch),
        key=artifact_key(batch.job, "batch"),
        description=f"weightmapper job {batch.job}: every checkpoint",
    )
    for item in batch.items:
        publish_checkpoint(batch.job, item)
