"""`weightmapper apply`: checkpoint + mapping file → safetensors; renders ``convert_checkpoint``."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from weightmapper.cli import _proof
from weightmapper.cli._console import print_json, stdout_console
from weightmapper.cli._options import add_trust_pickle, output_path
from weightmapper.errors import MappingError, WeightMapperError

if TYPE_CHECKING:  # torch and rich load when the command runs, not for --help
    from rich.console import Console

    from weightmapper.convert import ConvertReport
    from weightmapper.result import MappingResult

HELP = "convert a checkpoint with a mapping file into safetensors (streamed, atomic)"
DESCRIPTION = """\
Rename and transform the tensors of SOURCE as MAPPING.json says and write safetensors to
OUT, one tensor at a time (memory stays near the largest tensor, not the checkpoint).
OUT ending in .safetensors names the file; OUT ending in .pt, .pth or .bin names one
torch.save file (a state dict, built in memory); any other OUT is a directory receiving
model.safetensors, or, when larger than --shard-size, model-00001-of-0000N.safetensors
shards with a model.safetensors.index.json (the names transformers reads). --target-config
(a Hugging Face config.json or the target's folder) writes config.json, and
generation_config.json when there is one beside it, into the folder, so
from_pretrained(OUT) loads it. Nothing appears under the final name until the whole output
is complete. The metadata records the source and mapping hashes and the tool version.

With --source-module SPEC, --target SPEC and --dummy-input SHAPE the conversion is proven
first: SOURCE is loaded into the source architecture, the mapping into the target, both run
on the input, and alternatives are searched where outputs differ (see `map`). The output is
written only when the outputs are equal, with the proven mapping.

Exit codes: 0 ok, 1 the mapping maps no tensors or, with --source-module, outputs differ
(nothing is written), 2 bad input (unreadable source or mapping, output exists, ...).

examples:
  weightmapper apply old.safetensors mapping.json --out new.safetensors
  weightmapper apply ./llama-shards/ report.json --out ./converted --shard-size 5GB
  weightmapper apply model.pt mapping.json --out model.safetensors --dtype bfloat16 --force
  weightmapper apply old.safetensors mapping.json --out new.pt
  weightmapper apply ./bert/ mapping.json --out ./bert-fused/ --target-config ./target-cfg/
  weightmapper apply old.safetensors mapping.json --out new.safetensors \
      --source-module mypkg.old:build --target mypkg.new:build --dummy-input 1,16:int64
"""

_DTYPES = ("bfloat16", "float16", "float32")
"""Floating-point dtypes --dtype may cast to (names of torch dtypes)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with apply's arguments added."""
    parser.add_argument("source", help="checkpoint file, shard index JSON, or directory")
    parser.add_argument("mapping", help="mapping or report JSON written by `weightmapper map`")
    parser.add_argument(
        "--out",
        required=True,
        type=output_path,
        help="output directory, or a .safetensors / .pt / .bin file",
    )
    parser.add_argument(
        "--target-config",
        metavar="CONFIG",
        help="Hugging Face config.json (or its folder) of the target: written into OUT",
    )
    parser.add_argument(
        "--shard-size", default="2GB", help="largest shard, e.g. 500MB, 5GB (default: 2GB)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="overwrite an existing output (shards of an earlier layout there are removed)",
    )
    parser.add_argument(
        "--no-fsync",
        dest="durable",
        action="store_false",
        help="skip fsync: faster on slow disks, still all-or-nothing if killed, but a power "
        "cut soon after may lose the output (as with cp)",
    )
    parser.add_argument(
        "--dtype", choices=_DTYPES, help="cast floating-point tensors to this dtype"
    )
    parser.add_argument(
        "--allow-expanded",
        action="store_true",
        help="write expanded (stride-0) source tensors at their full size, many times what "
        "the source file stores",
    )
    _proof.add_arguments(parser, target=True)
    parser.add_argument("--json", action="store_true", help="print the conversion report as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_trust_pickle(parser)


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (0 when the output was written)."""
    import torch
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from weightmapper.checkpoint import open_checkpoint
    from weightmapper.convert import convert_checkpoint
    from weightmapper.hf import carried_files
    from weightmapper.io_safety import ensure_outputs_safe, input_files
    from weightmapper.proof import prove

    mapping = read_mapping(args.mapping)
    if not mapping.pairs and not mapping.multi:
        print(
            f"error: mapping {args.mapping} maps no tensors, so the output would be empty; "
            "nothing was written. Expected a mapping with at least one pair: check `weightmapper "
            "map`'s coverage (was the target the right model?).",
            file=sys.stderr,
        )
        return 1
    # the output file itself first, before the source is read (the conversion checks every
    # file it will write against the source and the mapping once it has planned them)
    ensure_outputs_safe({"--out": args.out}, input_files(args.source) | input_files(args.mapping))
    table = open_checkpoint(args.source, trusted=args.trust_pickle)
    proof = None
    if _proof.wanted(args):
        # Proven before anything is written: only a conversion with equal outputs is exported.
        source, target = _proof.source_module(args, table), _proof.target_module(args)
        proof = prove(
            source, target, mapping, _proof.the_input(args, source, target), budget=args.budget
        )
        if not proof.equal:
            print(proof.summary(), file=sys.stderr)
            print("not written: the conversion's outputs differ from the source's", file=sys.stderr)
            return 1
        mapping = proof.mapping
    convert = functools.partial(
        convert_checkpoint,
        table,
        mapping,
        args.out,
        shard_size=args.shard_size,
        overwrite=args.force,
        dtype=getattr(torch, args.dtype) if args.dtype else None,
        durable=args.durable,
        protect=[args.mapping, *([args.target_config] if args.target_config else [])],
        extra_files=carried_files(args.target_config) if args.target_config else None,
        allow_expanded=args.allow_expanded,
    )
    if args.quiet:
        report = convert()
    else:
        columns = (
            TextColumn("converting"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=Console(file=sys.stderr), transient=True) as bar:
            task = bar.add_task("convert", total=None)
            report = convert(
                progress=lambda done, total: bar.update(task, completed=done, total=total)
            )
    if args.json:
        print_json(
            report.to_dict() if proof is None else {**report.to_dict(), "proof": proof.to_dict()}
        )
    else:
        render(report, stdout_console(), mapping.get_unmatched()["target"])
        if proof is not None:
            stdout_console().print(proof.summary(), markup=False, soft_wrap=True)
    return 0


def read_mapping(path: str | Path) -> MappingResult:
    """Mapping or report JSON file → MappingResult; MappingError when unreadable."""
    from weightmapper.bounded_json import loads_bounded
    from weightmapper.result import MappingResult

    p = Path(path)
    try:
        data = loads_bounded(p.read_bytes())
    except FileNotFoundError as e:
        raise MappingError(
            f"mapping file {p} does not exist; create one with `weightmapper map`"
        ) from e
    except (OSError, ValueError, RecursionError) as e:
        raise MappingError(f"mapping file {p} is not readable JSON ({e})") from e
    if not isinstance(data, dict):
        raise MappingError(f"mapping file {p} holds {type(data).__name__}, expected a JSON object")
    try:
        return MappingResult.from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:  # a field of the wrong kind
        if isinstance(e, WeightMapperError):
            raise
        raise MappingError(
            f"mapping file {p} is malformed ({type(e).__name__}: {e}); expected the JSON that "
            "`weightmapper map --out` writes. Re-create it with `weightmapper map`."
        ) from e


def render(report: ConvertReport, console: Console, unmapped_targets: Sequence[str] = ()) -> None:
    """ConvertReport (+ the target keys the mapping gives no source) → a few lines."""
    lines = [
        f"wrote {report.tensor_count} tensors ({report.bytes_written:,} bytes) in "
        f"{len(report.files)} file(s): {report.index_path or report.files[0]}"
    ]
    if report.aliases:
        lines.append(f"tied tensors stored once: {len(report.aliases)} alias(es)")
    dropped = report.dropped_source_keys
    if dropped:
        more = f", … {len(dropped) - 5} more" if len(dropped) > 5 else ""
        lines.append(
            f"source keys not in the mapping, dropped: {len(dropped)} "
            f"({', '.join(dropped[:5])}{more})"
        )
    if unmapped_targets:
        # Written nowhere, so easy to miss: the output cannot load strictly without them.
        more = f", … {len(unmapped_targets) - 5} more" if len(unmapped_targets) > 5 else ""
        lines.append(
            f"target keys the mapping gives no source, not written: {len(unmapped_targets)} "
            f"({', '.join(unmapped_targets[:5])}{more}); the output does not load strictly "
            "without them"
        )
    lines.append(f"source sha256 {report.source_sha256}")
    lines.append(f"mapping sha256 {report.mapping_sha256}")
    console.print("\n".join(lines), markup=False, soft_wrap=True)
