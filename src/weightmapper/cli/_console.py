"""Console helpers shared by the subcommands: one rich Console on stdout, JSON printing."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich loads when a command prints, not when its parser is built
    from rich.console import Console


def stdout_console() -> Console:
    """() → a rich Console on stdout; plain text when stdout is not a terminal. Text from
    files never writes control sequences through it (see ``visualize.SafeConsole``)."""
    from weightmapper.visualize import SafeConsole

    return SafeConsole(file=sys.stdout, soft_wrap=False, highlight=False)


def print_json(data: Any) -> None:
    """JSON-ready data → stable, indented JSON on stdout."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
