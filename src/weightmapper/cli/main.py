"""`weightmapper` entry point: argv → exit code (0 ok, 1 a check failed, 2 bad input or usage).

Each subcommand lives in its own module ``weightmapper.cli.<name>`` exposing ``HELP`` (one
line), ``DESCRIPTION`` (usage text with an example), ``add_arguments(parser)`` and
``run(args) -> int``. Our own errors are printed as one message on stderr, never a traceback.

Only the module of the command being run is imported: the subcommands pull in torch and
rich, which take seconds, so ``--version`` and ``--help`` would otherwise wait for them.
The top-level help lists each command from ``HELP_LINES`` instead.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from types import ModuleType

from weightmapper._version import __version__
from weightmapper.errors import WeightMapperError

# Order shown in --help; the module for each is imported only to build its parser.
COMMANDS: tuple[str, ...] = (
    "inspect",
    "map",
    "apply",
    "validate",
    "report",
    "rules",
    "migrate",
    "serve",
)

# Each command's one-line HELP, so the top-level help imports no subcommand module; a test
# keeps these equal to the modules' own HELP. A command missing here is imported for it.
HELP_LINES: dict[str, str] = {
    "inspect": "describe a checkpoint: format, shards, tensors, dtypes, prefixes, tied and "
    "unsafe content",
    "map": "suggest a source → target key mapping, explain it, and write it out",
    "apply": "convert a checkpoint with a mapping file into safetensors (streamed, atomic)",
    "validate": "check that a checkpoint loads into a target with strict=True semantics",
    "report": "re-render a saved mapping report (terminal views, HTML, Markdown)",
    "rules": "export a mapping as a short list of regex rename rules (python, regex, HF, mmengine)",
    "migrate": "run a YAML batch job: many checkpoints → one target, cached stages, a summary",
    "serve": "serve a YAML job as a Prefect deployment on a cron schedule (needs a Prefect server)",
}

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """Command to build fully (None: all) → the top-level parser with every subcommand listed.

    Commands other than ``only`` are registered with their help line alone, so their
    modules are not imported; ``build_parser()`` imports and builds every one.
    """
    parser = argparse.ArgumentParser(
        prog="weightmapper",
        description="Move trained PyTorch weights from one architecture to another.",
    )
    parser.add_argument("--version", action="version", version=f"weightmapper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        full = only is None or name == only
        mod = _command_module(name) if full or name not in HELP_LINES else None
        if mod is None and name not in HELP_LINES:
            continue  # subcommand not shipped in this build
        p = sub.add_parser(
            name,
            help=HELP_LINES.get(name) or mod.HELP,  # type: ignore[union-attr]
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if full and mod is not None:
            p.description = mod.DESCRIPTION
            mod.add_arguments(p)
            p.set_defaults(_run=mod.run)
    return parser


def _command_module(name: str) -> ModuleType | None:
    """Command name → its module ``weightmapper.cli.<name>``, None when not shipped."""
    try:
        return importlib.import_module(f"weightmapper.cli.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"weightmapper.cli.{name}":
            return None
        raise


def _command_in(argv: Sequence[str]) -> str | None:
    """Command-line arguments → the subcommand named (the first non-option word), if any.

    Top-level options take no value, so the first word not starting with ``-`` is the command.
    """
    for arg in argv:
        if arg == "--":
            return None
        if not arg.startswith("-"):
            return arg
    return None


EXIT_INTERRUPTED = 130
"""128 + SIGINT, what a shell reports for a program stopped by Ctrl-C."""


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line arguments → exit code; prints our errors, and a Ctrl-C, as one line."""
    started = False
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        command = _command_in(argv)
        parser = build_parser(only=command if command in COMMANDS else "")
        args = parser.parse_args(argv)
        if not getattr(args, "_run", None):
            parser.print_help(sys.stderr)
            return EXIT_BAD_INPUT
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        started = True
        return int(args._run(args))
    except WeightMapperError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return _interrupted(started)
    except ImportError as e:
        # Ctrl-C while an extension module initialises surfaces as an ImportError
        # ("initialization failed") raised from the KeyboardInterrupt: still the user's stop.
        if not _caused_by_interrupt(e):
            raise
        return _interrupted(started)


def _interrupted(started: bool) -> int:
    """Whether the command had started → the exit code of Ctrl-C, after saying so in one line.

    Outputs are written to temporary files and renamed when whole (``weightmapper.atomic``),
    so a stopped command leaves no file half-written; before it starts, it has written none.
    """
    where = "no output left half-written" if started else "nothing written"
    print(f"interrupted; {where}", file=sys.stderr)
    return EXIT_INTERRUPTED


def _caused_by_interrupt(error: BaseException) -> bool:
    """Exception → True when a KeyboardInterrupt is among its causes or contexts."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
