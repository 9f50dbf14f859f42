"""`weightmapper validate`: does a checkpoint load strictly into a target? Renders the result."""

from __future__ import annotations

import argparse
from typing import Any

from torch import nn

from weightmapper.checkpoint import open_checkpoint
from weightmapper.cli._console import print_json, stdout_console
from weightmapper.targets import resolve_side
from weightmapper.validate import validate_state_dict

HELP = "check that a checkpoint loads into a target with strict=True semantics"
DESCRIPTION = """\
Compare CKPT with a target and list missing and unexpected keys, shape mismatches and dtype
changes, as load_state_dict(strict=True) would see them, without raising. With a target
spec (pkg.module:callable, path/to/file.py:callable, transformers:Class with
--target-config, a Hugging Face folder, timm:NAME, torchvision:NAME; see `map --help`) the
weights are also loaded into a fresh copy of the module. A checkpoint path as target checks
names, shapes and dtypes only.

Exit codes: 0 it loads, 1 it does not, 2 bad input.

examples:
  weightmapper validate converted.safetensors --target weightmapper.examples.cnn:RefactoredCNN
  weightmapper validate out/ --target mypkg.models:build --target-kwargs '{"depth": 18}'
  weightmapper validate new.safetensors --target reference.safetensors --json
  weightmapper validate out/ --target transformers:LlamaForCausalLM --target-config out/
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
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--max-items", type=int, default=10, help="longest list printed per category (default 10)"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow pickles to import any global (runs their code): trusted files only",
    )


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (1 when the checkpoint would not load strictly)."""
    target: Any = resolve_side(args.target, kwargs=args.target_kwargs, config=args.target_config)
    if not isinstance(target, nn.Module):
        target = open_checkpoint(target, trusted=args.trust_pickle)
    checkpoint = open_checkpoint(args.checkpoint, trusted=args.trust_pickle)
    result = validate_state_dict(checkpoint, target)
    if args.json:
        print_json(result.to_dict())
    else:
        stdout_console().print(result.summary(args.max_items), markup=False, soft_wrap=True)
    return 0 if result.ok else 1
