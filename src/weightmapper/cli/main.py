"""`weightmapper` entry point: argv → exit code (0 ok, 1 a check failed, 2 bad input or usage).

Each subcommand lives in its own module ``weightmapper.cli.<name>`` exposing ``HELP`` (one
line), ``DESCRIPTION`` (usage text with an example), ``add_arguments(parser)`` and
``run(args) -> int``. Our own errors are printed as one message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

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

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


def build_parser() -> argparse.ArgumentParser:
    """() → the top-level parser with every available subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="weightmapper",
        description="Move trained PyTorch weights from one architecture to another.",
    )
    parser.add_argument("--version", action="version", version=f"weightmapper {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"weightmapper.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"weightmapper.cli.{name}":
                continue  # subcommand not shipped in this build
            raise
        p = sub.add_parser(
            name,
            help=mod.HELP,
            description=mod.DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line arguments → exit code; prints our errors as one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args._run(args))
    except WeightMapperError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
