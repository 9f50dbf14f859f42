"""`weightmapper validate`: does a checkpoint load strictly into a target? Renders the result."""

from __future__ import annotations

import argparse
from typing import Any

from weightmapper.cli import _proof
from weightmapper.cli._console import print_json, stdout_console
from weightmapper.cli._options import add_trust_pickle, count
from weightmapper.errors import ConfigError

HELP = "check that a checkpoint loads into a target with strict=True semantics"
DESCRIPTION = """\
Compare CKPT with a target and list missing and unexpected keys, shape mismatches and dtype
changes, as load_state_dict(strict=True) would see them, without raising. With a target
spec (pkg.module:callable, path/to/file.py:callable, transformers:Class with
--target-config, a Hugging Face folder, timm:NAME, torchvision:NAME; see `map --help`) the
weights are also loaded into a fresh copy of the module. A checkpoint path as target checks
names, shapes and dtypes only.

With --source-module SPEC, --source CKPT (the original checkpoint) and --dummy-input SHAPE,
the original is loaded into the source architecture, CKPT into the target, both run on the
input and their outputs are compared (the first differing module is named when module
paths agree, or through --mapping). Every run ends with the status: proven equal, loads
but not proven, differs at a module, or does not load.

Exit codes: 0 it loads (and, with --equal, outputs are equal), 1 it does not load or, with
--equal, outputs differ, 2 bad input.

examples:
  weightmapper validate converted.safetensors --target weightmapper.examples.cnn:RefactoredCNN
  weightmapper validate out/ --target mypkg.models:build --target-kwargs '{"depth": 18}'
  weightmapper validate new.safetensors --target reference.safetensors --json
  weightmapper validate out/ --target transformers:LlamaForCausalLM --target-config out/
  weightmapper validate new.safetensors --target mypkg.new:build --source old.safetensors \
      --source-module mypkg.old:build --dummy-input 1,16:int64 --equal
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with validate's arguments added."""
    parser.add_argument("checkpoint", help="checkpoint file, shard index JSON, or directory")
    parser.add_argument(
        "--target", required=True, help="pkg.module:callable building the target, or a checkpoint"
    )
    parser.add_argument("--target-kwargs", help="JSON object of keyword arguments for the target")
    parser.add_argument(
        "--target-config",
        metavar="CONFIG",
        help="config.json (or its folder) building a transformers target class",
    )
    _proof.add_arguments(parser, source_checkpoint=True)
    parser.add_argument(
        "--equal",
        action="store_true",
        help="exit 1 when the outputs differ from the source's (with --source-module)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--max-items", type=count, default=10, help="longest list printed per category (default 10)"
    )
    add_trust_pickle(parser)


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (1 when the checkpoint would not load strictly)."""
    from torch import nn

    from weightmapper.checkpoint import open_checkpoint
    from weightmapper.cli.apply import read_mapping
    from weightmapper.proof import compare_loaded
    from weightmapper.result import status_of
    from weightmapper.targets import resolve_side
    from weightmapper.validate import load_checkpoint_into, validate_state_dict

    target: Any = resolve_side(args.target, kwargs=args.target_kwargs, config=args.target_config)
    if not isinstance(target, nn.Module):
        target = open_checkpoint(target, trusted=args.trust_pickle)
    if args.equal and not args.source_module:
        raise ConfigError(
            "--equal compares outputs with the source: give --source-module SPEC, --source CKPT "
            "and --dummy-input SHAPE"
        )
    checkpoint = open_checkpoint(args.checkpoint, trusted=args.trust_pickle)
    result = validate_state_dict(checkpoint, target)
    check = None
    if _proof.wanted(args) and result.ok:
        source = _proof.source_module(args, args.source)
        loaded = load_checkpoint_into(target, checkpoint, role="target")
        mapping = read_mapping(args.mapping) if args.mapping else None
        check = compare_loaded(
            source, loaded, _proof.the_input(args, source, loaded), mapping=mapping
        )
    status = status_of(result, check)
    if args.json:
        extra = {"status": status.to_dict()}
        if check is not None:
            extra["functional_check"] = check.to_dict()
        print_json({**result.to_dict(), **extra})
    else:
        console = stdout_console()
        console.print(result.summary(args.max_items), markup=False, soft_wrap=True)
        if check is not None:
            console.print(check.summary(), markup=False, soft_wrap=True)
        console.print(f"status: {status.label()}", markup=False, soft_wrap=True)
    if not result.ok:
        return 1
    return 1 if args.equal and check is not None and not check.equal else 0
