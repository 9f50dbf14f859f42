"""`weightmapper report`: re-render a saved JSON report in the terminal, as HTML or Markdown."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightmapper.cli._options import count, output_path

HELP = "re-render a saved mapping report (terminal views, HTML, Markdown)"
DESCRIPTION = """\
Read a JSON report written by `weightmapper map --report` (or a mapping file from --out),
check it against the report schema, and render it again: rendering never recomputes, so
the same report gives the same page. Without --html/--markdown it prints the terminal
views: summary and mapping table (--view mapping, the default), both module trees
(--view hierarchy), or both (--view all); --breakdown KEY shows one pair's scores.

Exit codes: 0 ok, 2 bad input (missing file, not a report, newer schema).

examples:
  weightmapper report report.json
  weightmapper report report.json --html report.html
  weightmapper report report.json --markdown report.md --quiet
  weightmapper report report.json --view hierarchy --max-depth 3
  weightmapper report mapping.json --breakdown encoder.layers.0.attn.q_proj.weight
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with report's arguments added."""
    parser.add_argument("report", type=Path, help="JSON report (or mapping file)")
    parser.add_argument("--html", type=output_path, help="write a self-contained HTML page here")
    parser.add_argument("--markdown", type=output_path, help="write Markdown here")
    parser.add_argument(
        "--view",
        choices=("mapping", "hierarchy", "all"),
        default="mapping",
        help="terminal view when no file output is asked for (default: mapping)",
    )
    parser.add_argument("--breakdown", metavar="KEY", help="show one pair's score breakdown")
    parser.add_argument(
        "--max-rows", type=count, default=30, help="pairs shown in the table (default 30)"
    )
    parser.add_argument(
        "--max-depth", type=count, default=5, help="module tree depth shown (default 5)"
    )
    parser.add_argument("--json", action="store_true", help="print the validated report as JSON")
    parser.add_argument("--quiet", action="store_true", help="print nothing")


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (0 once every requested rendering is written)."""
    # Imported here, not at the top: --help must not wait for torch and rich.
    from weightmapper.html_report import write_html
    from weightmapper.io_safety import ensure_outputs_distinct, ensure_outputs_safe, input_files
    from weightmapper.report import dumps_report, load_report, write_markdown
    from weightmapper.visualize import (
        default_console,
        visualize_hierarchies,
        visualize_mapping,
        visualize_score_breakdown,
    )

    outputs = {"--html": args.html, "--markdown": args.markdown}
    ensure_outputs_distinct(outputs)
    ensure_outputs_safe(outputs, input_files(args.report))
    report = load_report(args.report)
    if args.html:
        write_html(report, args.html)
    if args.markdown:
        write_markdown(report, args.markdown)
    if args.json:
        sys.stdout.write(dumps_report(report))
        return 0
    if args.quiet:
        return 0
    console = default_console()
    if args.breakdown:
        visualize_score_breakdown(report, args.breakdown, console=console)
    elif args.html or args.markdown:
        for out in (args.html, args.markdown):
            if out is not None:
                console.print(f"wrote {out}", markup=False, highlight=False)
    else:
        if args.view in ("mapping", "all"):
            visualize_mapping(report, max_matches=args.max_rows, console=console)
        if args.view in ("hierarchy", "all"):
            visualize_hierarchies(
                report, show_matches=True, max_depth=args.max_depth, console=console
            )
    return 0
