"""Options several subcommands share, declared once."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_trust_pickle(parser: argparse.ArgumentParser) -> None:
    """Parser → the same parser with ``--trust-pickle`` (unrestricted pickle loading)."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickles to import any global (runs their code): trusted files only",
    )


def output_path(text: str) -> Path:
    """``report.html`` → Path; ArgumentTypeError for an empty path (an unset shell variable),
    which would otherwise name the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError(
            "expected a file or folder name, got an empty path (an unset shell variable?)"
        )
    return Path(text)


def count(text: str) -> int:
    """``30`` → 30; ArgumentTypeError unless a whole number ≥ 0 (a row or depth limit)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 0, got {text!r}")
    return value
