"""Options several subcommands share, declared once."""

from __future__ import annotations

import argparse


def add_trust_pickle(parser: argparse.ArgumentParser) -> None:
    """Parser → the same parser with ``--trust-pickle`` (unrestricted pickle loading)."""
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickles to import any global (runs their code): trusted files only",
    )
