"""`weightmapper inspect`: a checkpoint doctor; renders ``doctor.inspect_checkpoint``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from weightmapper.cli._console import print_json, stdout_console
from weightmapper.cli._options import add_trust_pickle, count

if TYPE_CHECKING:  # torch and rich load when the command runs, not for --help
    from rich.console import Console
    from rich.text import Text
    from rich.tree import Tree

HELP = "describe a checkpoint: format, shards, tensors, dtypes, prefixes, tied and unsafe content"
DESCRIPTION = """\
Describe a checkpoint without loading its tensor data: format, files and shards, tensor
count, total bytes, dtypes, wrapper prefixes found, tied tensors, unsafe pickle globals,
and a module tree with parameter counts.

Exit codes: 0 ok, 1 the pickle would be refused as unsafe, 2 bad input.

examples:
  weightmapper inspect model.safetensors
  weightmapper inspect checkpoints/epoch=9.ckpt --depth 2
  weightmapper inspect ./hf-model/ --json > report.json
"""

_RUN_COLLAPSE = 6  # numbered children (layers.0 … layers.47) beyond this are elided


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with inspect's arguments added."""
    parser.add_argument("path", help="checkpoint file, shard index JSON, or directory")
    parser.add_argument("--json", action="store_true", help="print a stable JSON report")
    parser.add_argument(
        "--depth", type=count, default=3, help="module tree depth (default: 3; 0 hides it)"
    )
    add_trust_pickle(parser)


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (1 when the checkpoint would be refused as unsafe)."""
    from weightmapper.doctor import inspect_checkpoint

    report = inspect_checkpoint(args.path, trusted=args.trust_pickle, max_depth=args.depth)
    if args.json:
        print_json(report)
    else:
        render(report, stdout_console(), depth=args.depth)
    return 0 if report["safe"] else 1


def render(report: dict[str, Any], console: Console, *, depth: int = 3) -> None:
    """Doctor report → rich tables and a module tree on the console."""
    from rich.table import Table
    from rich.text import Text
    from rich.tree import Tree

    from weightmapper.visualize import safe_text

    summary = Table(
        title=safe_text(f"checkpoint {report['path']}"), show_header=False, title_justify="left"
    )
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("format", str(report["format"] or "unknown (not loaded)"))
    summary.add_row("files", str(len(report["files"])))
    if report["safe"]:
        summary.add_row("tensors", f"{report['tensor_count']:,}")
        summary.add_row("parameters", f"{report['parameter_count']:,}")
        summary.add_row("tensor bytes", _bytes(report["total_bytes"]))
        summary.add_row("dtypes", ", ".join(f"{k} ×{v}" for k, v in report["dtypes"].items()))
        summary.add_row(
            "wrapper prefixes stripped", safe_text(", ".join(report["stripped_prefixes"]) or "-")
        )
        summary.add_row(
            "shared prefix (not stripped)", safe_text(report["suggested_prefix"] or "-")
        )
        summary.add_row("tied groups", str(len(report["tied"])))
        nested = report["metadata"].get("nested_key")
        if nested:
            summary.add_row("state dict found under", safe_text(nested))
        if report["metadata"].get("ema_keys"):
            summary.add_row("EMA copies", safe_text(", ".join(report["metadata"]["ema_keys"])))
    console.print(summary)

    if report["unsafe_globals"]:
        unsafe = Table(title="unsafe pickle globals", title_style="bold red")
        unsafe.add_column("global", style="red")
        for g in report["unsafe_globals"]:
            unsafe.add_row(safe_text(g))
        console.print(unsafe)
        if not report["safe"]:
            console.print(
                "[red]Refused: loading this file could run its code.[/red] Re-run with "
                "--trust-pickle only if you trust where the file came from."
            )

    if len(report["files"]) > 1:
        files = Table(title="files")
        files.add_column("file")
        files.add_column("bytes", justify="right")
        files.add_column("tensors" if report["safe"] else "unsafe globals", justify="right")
        for f in report["files"][:30]:
            extra = str(f["tensors"]) if report["safe"] else ", ".join(f["unsafe_globals"]) or "-"
            files.add_row(safe_text(f["name"]), _bytes(f["bytes"]), safe_text(extra))
        if len(report["files"]) > 30:
            files.add_row(f"… {len(report['files']) - 30} more", "", "")
        console.print(files)

    if report["tied"]:
        tied = Table(title="tied tensors (one storage, several names)")
        tied.add_column("names")
        for group in report["tied"][:20]:
            tied.add_row(safe_text(", ".join(group)))
        console.print(tied)

    if report["tree"] is not None and depth > 0:
        root = report["tree"]
        tree = Tree(Text("model", style="bold") + Text(" ") + _counts(root))
        _add_children(tree, root["children"])
        console.print(tree)


def _add_children(parent: Tree, children: list[dict[str, Any]]) -> None:
    from rich.text import Text

    from weightmapper.visualize import safe_text

    numbered = [c for c in children if c["name"].isdigit()]
    hidden: set[int] = set()
    if len(numbered) > _RUN_COLLAPSE:
        hidden = {id(c) for c in numbered[2:-1]}
    shown_gap = False
    for child in children:
        if id(child) in hidden:
            if not shown_gap:
                parent.add(Text(f"… {len(hidden)} more numbered children", style="dim"))
                shown_gap = True
            continue
        branch = parent.add(safe_text(child["name"]) + Text(" ") + _counts(child))
        _add_children(branch, child["children"])


def _counts(node: dict[str, Any]) -> Text:
    from rich.text import Text

    n = node["tensors"]
    return Text(f"({n:,} tensor{'' if n == 1 else 's'}, {_params(node['params'])} params)", "dim")


def _params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"
