"""`weightmapper migrate JOB.yaml`: run a batch migration job, print a summary table or JSON."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from weightmapper.cli._console import print_json, stdout_console
from weightmapper.errors import ConfigError, OutputError
from weightmapper.sanitize import visible

if TYPE_CHECKING:  # imported when the command runs: --help loads neither yaml nor torch
    from weightmapper.pipeline.config import JobConfig
    from weightmapper.pipeline.summary import BatchSummary

HELP = "run a YAML batch job: many checkpoints → one target, cached stages, a summary"
DESCRIPTION = """\
Run a migration job described in YAML (see configs/ and docs/pipeline.md): every source
checkpoint is mapped onto the target, converted to safetensors, validated by loading it
into the target and, when the job names the source architecture, checked for equal
outputs. Every stage is cached by content: a rerun only redoes what changed.

The batch runs as a Prefect flow with an embedded, project-local Prefect home (no server
to start); --no-prefect runs the same stages in plain Python.

examples:
  weightmapper migrate configs/example.yaml
  weightmapper migrate configs/example.yaml --json > summary.json
  weightmapper migrate configs/example.yaml --threshold 0.7 --no-prefect
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the migrate command's arguments on its parser."""
    parser.add_argument("job", type=Path, help="YAML job file")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as JSON instead of a table"
    )
    parser.add_argument(
        "--no-prefect", action="store_true", help="run in plain Python, without Prefect"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="override every migration's threshold"
    )
    parser.add_argument(
        "--max-workers", type=int, default=None, help="checkpoints processed at once (threads)"
    )
    parser.add_argument(
        "--verify-store",
        action="store_true",
        help="reread every artifact of the job's store and check its recorded sha256; "
        "remove the bad ones (the next run recomputes them) and exit without running",
    )


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code: 0 all checkpoints ok, 1 one failed or failed a check.

    Reading the job loads no torch: under Prefect the temporary server starts first and
    comes up while the stages' modules are imported.
    """
    from weightmapper.pipeline.config import load_job, with_threshold

    job = load_job(args.job)
    if args.verify_store:
        return verify_store(job, as_json=args.json)
    if args.threshold is not None:
        job = with_threshold(job, args.threshold)
    if args.max_workers is not None:
        if args.max_workers < 1:
            raise ConfigError(f"--max-workers must be a positive integer, found {args.max_workers}")
        runner = dataclasses.replace(job.runner, max_workers=args.max_workers)
        job = dataclasses.replace(job, runner=runner)
    if args.no_prefect:
        from weightmapper.pipeline.batch import run_batch

        summary = run_batch(job)
    else:
        # Imported late: flows configures Prefect's environment before importing it.
        from flows.embedded import run_job

        summary = run_job(job)
    if args.json:
        print_json(summary.to_dict())
    else:
        render_summary(summary)
    return 0 if summary.ok else 1


def verify_store(job: JobConfig, *, as_json: bool) -> int:
    """Job → exit code: 0 when every artifact of its store matches its record, 1 otherwise."""
    from rich.markup import escape

    from weightmapper.pipeline.store import ArtifactStore

    store = ArtifactStore(job.store)
    if not store.root.is_dir():
        raise OutputError(f"store {store.root} does not exist; run the job first")
    checked, bad = store.verify_all()
    if as_json:
        print_json({"store": str(store.root), "checked": checked, "bad": bad})
    else:
        console = stdout_console()
        for line in bad:
            console.print(f"[red]bad[/red] {escape(line)}", highlight=False)
        console.print(
            f"{checked} artifact(s) checked in {store.root}, {len(bad)} bad"
            + ("; removed, the next run recomputes them" if bad else "")
        )
    return 1 if bad else 0


def _rel(path: str | None) -> str:
    if not path:
        return "-"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _name(source: str) -> str:
    """Source path → its file name on one line: a newline in a name would draw a second row."""
    return visible(Path(source).name)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


_EXPORT_MARK = {"kept": "\n[yellow](previous kept)[/]", "withheld": "\n[yellow](not placed)[/]"}

_STYLE = {"passed": "green", "ok": "green", "failed": "red", "check_failed": "red"}


def render_summary(summary: BatchSummary) -> None:
    """BatchSummary → a rich table on stdout, one row per checkpoint, and a closing line."""
    from rich.markup import escape
    from rich.table import Table

    console = stdout_console()
    if not console.is_terminal:
        console.width = max(console.width, 140)  # pipes and CI logs: do not fold paths
    table = Table(title=f"weightmapper migrate: {summary.job} ({summary.runner})")
    table.add_column("migration")
    table.add_column("checkpoint", overflow="fold")
    table.add_column("status")
    table.add_column("coverage\nsrc / tgt", justify="right")
    table.add_column("confident\nsrc / tgt", justify="right")
    table.add_column("valid")
    table.add_column("equal\noutputs")
    table.add_column("output", overflow="fold")
    table.add_column("stages cached", overflow="fold")
    failures = [f"migration {name}: {error}" for name, error in summary.errors.items()]
    notes = []
    differs: list[str] = []
    searched: list[str] = []
    for item in summary.items:
        n = len(item.stages)
        cached = item.cached_stages
        if item.status == "failed":
            stages = f"[red]failed at {item.failed_stage}[/red]"
            if item.migration not in summary.errors:  # said once above
                failures.append(f"{_name(item.source)}: {item.error}")
        elif len(cached) == n:
            stages = f"[green]all {n}[/green]"
        else:
            stages = f"{len(cached)}/{n} (ran {', '.join(item.computed_stages)})"
        table.add_row(
            escape(visible(item.migration)),
            escape(_name(item.source)),
            f"[{_STYLE.get(item.status, 'white')}]{item.status}[/]",
            f"{_pct(item.coverage.get('source'))} / {_pct(item.coverage.get('target'))}",
            f"{_pct(item.coverage.get('source_confident'))} / "
            f"{_pct(item.coverage.get('target_confident'))}",
            f"[{_STYLE.get(item.validation, 'white')}]{item.validation}[/]",
            f"[{_STYLE.get(item.functional, 'white')}]{item.functional}[/]",
            escape(visible(_rel(item.output))) + _EXPORT_MARK.get(item.export or "", ""),
            stages,
        )
        if item.export_note:
            notes.append(f"{_name(item.source)}: {item.export_note}")
        if item.mapping_status and item.functional == "failed":
            differs.append(f"{_name(item.source)}: {item.mapping_status}")
        elif item.search_fixes and item.functional == "passed":
            searched.append(
                f"{_name(item.source)}: the search fixed {item.search_fixes} place(s) of "
                "the first mapping (see the report's mapping.metadata.proof)"
            )
    console.print(table)
    for line in failures:
        console.print(f"[red]failed[/red] {escape(line)}", highlight=False)
    for line in differs:
        console.print(f"[red]outputs differ[/red] {escape(line)}", highlight=False)
    for line in searched:
        console.print(f"[green]proven[/green] {escape(line)}", highlight=False)
    for line in notes:
        console.print(f"[yellow]not placed[/yellow] {escape(line)}", highlight=False)
    counts = summary.counts()
    recomputed = sum(summary.recomputed().values())
    console.print(
        f"{counts['ok']}/{counts['total']} ok, {counts['check_failed']} failed a check, "
        f"{counts['failed']} failed; {recomputed} stage run(s) computed, the rest cached; "
        f"{summary.seconds:.1f} s"
    )
    sys.stdout.flush()
