"""`--source-module`: the options and steps `map`, `apply` and `validate` share to prove a
conversion against the source architecture (the source checkpoint loaded into it)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from weightmapper.errors import ConfigError
from weightmapper.settings import PROOF_BUDGET as DEFAULT_BUDGET
from weightmapper.targets import build_module, is_module_spec

if TYPE_CHECKING:  # the commands' --help builds these options without loading torch
    from torch import nn


def parse_shape(text: str) -> tuple[tuple[int, ...], str]:
    """``1,3,224,224`` or ``1,16:int64`` → (shape, dtype name); ArgumentTypeError if malformed."""
    from weightmapper.cli.map import parse_shape as parse

    return parse(text)


def add_arguments(
    parser: argparse.ArgumentParser,
    *,
    source_kwargs: bool = True,
    dummy: bool = True,
    target: bool = False,
    source_checkpoint: bool = False,
) -> None:
    """Parser (+ which options the command lacks so far) → parser with the proof options."""
    group = parser.add_argument_group("proof against the source architecture")
    group.add_argument(
        "--source-module",
        metavar="SPEC",
        help="pkg.module:callable building the source architecture: the source checkpoint is "
        "loaded into it and the conversion proven against the target (needs --dummy-input)",
    )
    if source_kwargs:
        group.add_argument("--source-kwargs", help="JSON keyword arguments for --source-module")
        group.add_argument(
            "--source-config",
            metavar="CONFIG",
            help="config.json (or its folder) building a transformers --source-module class",
        )
    if source_checkpoint:
        group.add_argument(
            "--source", metavar="CKPT", help="the original checkpoint (with --source-module)"
        )
        group.add_argument(
            "--mapping",
            metavar="JSON",
            help="the mapping or report the conversion used: pairs source and target modules, "
            "so the first differing module can be named",
        )
    if target:
        group.add_argument(
            "--target", help="pkg.module:callable building the target (with --source-module)"
        )
        group.add_argument("--target-kwargs", help="JSON keyword arguments for --target")
    if dummy:
        group.add_argument(
            "--dummy-input",
            type=parse_shape,
            metavar="SHAPE",
            help="input both networks run on, e.g. 1,3,224,224 or 1,16:int64 (token ids)",
        )
    group.add_argument(
        "--budget",
        type=int,
        default=DEFAULT_BUDGET,
        help=f"most target forward passes the search may spend (default {DEFAULT_BUDGET})",
    )


def wanted(args: argparse.Namespace) -> bool:
    """Parsed arguments → True when a proof was asked for, after checking its options fit."""
    if not getattr(args, "source_module", None):
        return False
    problems = []
    source = getattr(args, "source", None)
    if not source:
        problems.append("--source must name the original checkpoint")
    elif is_module_spec(source):
        problems.append(f"the source {source!r} must be a checkpoint, not a pkg.module:callable")
    if not is_module_spec(args.source_module):
        problems.append(f"--source-module {args.source_module!r} is not a pkg.module:callable")
    target = getattr(args, "target", None)
    if not target or not is_module_spec(target, getattr(args, "target_config", None)):
        problems.append("--target must name the target architecture as a spec building a module")
    if not args.dummy_input:
        problems.append("--dummy-input must give the input both networks run on")
    if args.budget < 1:
        problems.append(f"--budget must be at least 1, got {args.budget}")
    if problems:
        raise ConfigError(
            "--source-module proves the conversion by running both networks: "
            + "; ".join(problems),
            problems,
        )
    return True


def source_module(args: argparse.Namespace, checkpoint: Any) -> nn.Module:
    """Parsed arguments + the source checkpoint → the source module holding its weights."""
    from weightmapper.validate import load_checkpoint_into

    module = build_module(
        args.source_module,
        args.source_kwargs,
        config=getattr(args, "source_config", None),
        flag="--source",
    )
    return load_checkpoint_into(
        module.eval(), checkpoint, trusted=getattr(args, "trust_pickle", False)
    )


def target_module(args: argparse.Namespace) -> nn.Module:
    """Parsed arguments → the target module (fresh weights)."""
    config = getattr(args, "target_config", None)
    return build_module(args.target, args.target_kwargs, config=config).eval()


def the_input(args: argparse.Namespace, *models: nn.Module) -> Any:
    """Parsed arguments + both modules → the deterministic input of --dummy-input.

    Integer inputs are token ids drawn below the smallest embedding table of the modules.
    """
    from weightmapper.calls import dummy_input, vocabulary_bound

    shape, dtype = args.dummy_input
    return dummy_input(shape, dtype, high=vocabulary_bound(*models))
