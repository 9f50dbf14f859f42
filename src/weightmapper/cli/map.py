"""`weightmapper map`: suggest a mapping and write it as a mapping file, report, HTML or Markdown."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from weightmapper.cli import _proof
from weightmapper.cli._options import add_trust_pickle, count, output_path
from weightmapper.errors import ConfigError
from weightmapper.hf import is_hf_folder
from weightmapper.progress import stage
from weightmapper.review import SORTS
from weightmapper.settings import (
    BUFFER_MODES,
    DEFAULT_THRESHOLD,
    MAX_DUMMY_DIMS,
    MAX_DUMMY_ELEMENTS,
    STRATEGIES,
    MapperSettings,
)
from weightmapper.targets import SPEC_FORMS, checkpoint_path, is_module_spec, resolve_side

if TYPE_CHECKING:  # torch and rich load when the command runs, not for --help
    import torch

HELP = "suggest a source → target key mapping, explain it, and write it out"
DESCRIPTION = """\
Map the tensors of SOURCE (a checkpoint, a Hugging Face folder's weights, or a spec building
a module) onto a TARGET (a spec, or a checkpoint of the target architecture). Prints a
summary and the mapping table (scores coloured green > 0.8, yellow 0.6-0.8, red < 0.6,
transform and GROUP/INDIV badges) and the unmatched keys with their reasons.

--out writes the mapping file `weightmapper apply` reads; --report the full JSON report
(inputs with hashes, settings, every pair with its score breakdown, both module trees);
--html a self-contained HTML page; --markdown a Markdown summary. --dummy-input SHAPE
(e.g. 1,3,224,224, or 1,16:int64 for token ids) traces execution order when both sides are
modules; --verify then also loads the mapped weights into the target and compares both
models' outputs (recorded in the report). --json prints the report; --quiet prints nothing.

A spec (--target, or SOURCE) is one of:
{forms}
A transformers class takes its config from --target-config / --source-config (a config.json
or the folder holding it) and is built on the meta device: nothing is downloaded, no memory
is used for its weights (it is built for real when --dummy-input or --verify runs it).

Exit codes: 0 ok, 1 target coverage below --min-coverage (default 0.1: less means the two
models are unrelated) or outputs differ, 2 bad input.

examples:
  weightmapper map old.safetensors --target weightmapper.examples.cnn:RefactoredCNN \\
      --target-kwargs '{"num_classes": 10, "width": 8}' --out mapping.json --html report.html
  weightmapper map weightmapper.examples.cnn:OldCNN --target weightmapper.examples.cnn:RefactoredCNN \\
      --dummy-input 1,3,32,32 --verify --report report.json
  weightmapper map old.pt --target new.safetensors --threshold 0.7 --json > report.json
  weightmapper map ./llama-hf/ --target mymodels/llama.py:Llama --target-kwargs '{"dim": 64}'
  weightmapper map old.safetensors --target transformers:LlamaForCausalLM --target-config cfg.json
  weightmapper map old.safetensors --source-module mypkg.old:build --target mypkg.new:build \
      --dummy-input 1,16:int64 --out mapping.json

--source-module SPEC (with --source-kwargs) loads SOURCE into that architecture, maps from
the module, then proves the mapping against the target on --dummy-input: where outputs
differ, alternatives for the first differing module are tried (at most --budget forward
passes). The mapping's status (proven equal / differs at …) is printed and recorded; exit 1
when it differs.
""".replace("{forms}", "\n".join(f"  {f}" for f in SPEC_FORMS))


_OUTPUTS = ("out", "report", "html", "markdown")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with map's arguments added."""
    parser.add_argument(
        "source", help="checkpoint (file, shard index, directory) or pkg.module:callable"
    )
    parser.add_argument(
        "--target", required=True, help="pkg.module:callable building the target, or a checkpoint"
    )
    parser.add_argument("--source-kwargs", help="JSON keyword arguments for a callable SOURCE")
    parser.add_argument("--target-kwargs", help="JSON keyword arguments for a callable target")
    parser.add_argument(
        "--source-config",
        metavar="CONFIG",
        help="config.json (or its folder) building a transformers SOURCE class",
    )
    parser.add_argument(
        "--target-config",
        metavar="CONFIG",
        help="config.json (or its folder) building a transformers target class",
    )
    parser.add_argument(
        "--dummy-input",
        type=parse_shape,
        metavar="SHAPE",
        help="input shape for tracing execution order, e.g. 1,3,224,224 or 1,16:int64",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="least probability of a kept pair, 0 to 1 (default "
        f"{DEFAULT_THRESHOLD}: more likely right than wrong; see docs/scores.md)",
    )
    parser.add_argument(
        "--strategy", choices=STRATEGIES, default="best_match", help="assignment strategy"
    )
    parser.add_argument(
        "--buffer-mode",
        choices=BUFFER_MODES,
        default="exclude",
        help="how buffers are matched (default: exclude)",
    )
    parser.add_argument(
        "--shape-tolerance", type=float, default=0.0, help="relative shape difference allowed"
    )
    parser.add_argument("--out", type=output_path, help="write the mapping file here (JSON)")
    parser.add_argument("--report", type=output_path, help="write the JSON report here")
    parser.add_argument("--html", type=output_path, help="write the HTML report here")
    parser.add_argument("--markdown", type=output_path, help="write the Markdown report here")
    parser.add_argument(
        "--min-coverage",
        type=fraction,
        default=DEFAULT_MIN_COVERAGE,
        metavar="FRACTION",
        help="exit 1 when target coverage is below this fraction, 0 to 1 (default "
        f"{DEFAULT_MIN_COVERAGE}: less means the models are unrelated; 1.0 demands everything)",
    )
    parser.add_argument(
        "--max-rows", type=count, default=30, help="pairs shown in the table (default 30)"
    )
    parser.add_argument(
        "--sort",
        choices=SORTS,
        default="score",
        help="table order: score (default; red, then yellow, flagged and lowest first) or name",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also compare outputs on the dummy input (both sides pkg.module:callable)",
    )
    _proof.add_arguments(parser, source_kwargs=False, dummy=False)
    parser.add_argument("--hierarchy", action="store_true", help="also print both module trees")
    parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    parser.add_argument("--quiet", action="store_true", help="print nothing; rely on the files")
    add_trust_pickle(parser)


DEFAULT_MIN_COVERAGE = 0.1
"""Target coverage below which `map` exits 1 unless --min-coverage says otherwise: under a
tenth of the target mapped, the two models are almost certainly unrelated."""


def fraction(text: str) -> float:
    """``0.95`` → 0.95; ArgumentTypeError unless a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a fraction from 0 to 1 (e.g. 0.95 for 95%), got {text!r}"
        )
    return value


def parse_shape(text: str) -> tuple[tuple[int, ...], str]:
    """``1,3,224,224`` or ``1,16:int64`` → (shape, dtype name); ArgumentTypeError if malformed."""
    dims, _, dtype = text.partition(":")
    dtype = dtype or "float32"
    try:
        shape = tuple(int(d) for d in dims.replace("x", ",").split(",") if d.strip())
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(
            f"expected a shape like 1,3,224,224 (positive integers, comma-separated), got {text!r}"
        )
    if len(shape) > MAX_DUMMY_DIMS or math.prod(shape) > MAX_DUMMY_ELEMENTS:
        raise argparse.ArgumentTypeError(
            f"{text!r} has {math.prod(shape):,} elements in {len(shape)} dimensions; a dummy "
            f"input needs at most {MAX_DUMMY_ELEMENTS:,} elements and {MAX_DUMMY_DIMS} "
            "dimensions (batch 1 and a small image or sequence, e.g. 1,3,224,224, is enough to "
            "trace and verify)"
        )
    import torch

    if not isinstance(getattr(torch, dtype, None), torch.dtype):
        raise argparse.ArgumentTypeError(
            f"unknown dtype {dtype!r} in {text!r}; use e.g. float32 or int64"
        )
    return shape, dtype


def dummy_tensor(spec: tuple[tuple[int, ...], str]) -> torch.Tensor:
    """(shape, dtype) → a deterministic input tensor (random floats, zeros for integer ids)."""
    import torch

    shape, dtype_name = spec
    dtype = getattr(torch, dtype_name)
    try:
        if dtype.is_floating_point:
            gen = torch.Generator().manual_seed(0)
            return torch.randn(shape, generator=gen).to(dtype)
        return torch.zeros(shape, dtype=dtype)
    except (RuntimeError, MemoryError) as e:
        raise ConfigError(
            f"cannot build a dummy input of shape {list(shape)} ({dtype_name}): "
            f"{str(e).splitlines()[0][:200]}. Expected a small input; pass a smaller --dummy-input."
        ) from e


def _is_module(args: argparse.Namespace, which: str) -> bool:
    spec, config = getattr(args, which), getattr(args, f"{which}_config")
    # A Hugging Face folder as SOURCE is its weights; as target, its architecture.
    if which == "source" and config is None and is_hf_folder(spec):
        return False
    return is_module_spec(spec, config)


def _side(args: argparse.Namespace, which: str, meta: bool) -> Any:
    spec, kwargs = getattr(args, which), getattr(args, f"{which}_kwargs")
    config = getattr(args, f"{which}_config")
    what, flag = ("SOURCE", "--source") if which == "source" else ("target", "--target")
    if not _is_module(args, which):
        if kwargs or config:
            given = f"{flag}-kwargs" if kwargs else f"{flag}-config"
            raise ConfigError(
                f"{given} applies to a {what} built from a spec, but {spec!r} is a checkpoint "
                f"path; drop {given} or name a spec"
            )
        return checkpoint_path(spec, what, flag)
    return resolve_side(spec, kwargs=kwargs, config=config, meta=meta, what=what, flag=flag)


def _check_outputs(args: argparse.Namespace) -> None:
    from weightmapper.io_safety import ensure_outputs_distinct, ensure_outputs_safe, spec_files

    outputs = {f"--{f}": getattr(args, f) for f in _OUTPUTS}
    ensure_outputs_distinct(outputs)
    # Every existing path is read (a Hugging Face folder target for its config too), and so
    # is every file a spec names: the model's .py file and its config are inputs as well.
    inputs = (
        spec_files(args.source, args.source_config)
        | spec_files(args.target, args.target_config)
        | spec_files(getattr(args, "source_module", None))
    )
    ensure_outputs_safe(outputs, inputs)


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (1: coverage below --min-coverage, or outputs differ)."""
    from rich.console import Console

    from weightmapper.atomic import atomic_write_text
    from weightmapper.cli._progress import stage_bars
    from weightmapper.html_report import render_html
    from weightmapper.mapper import WeightMapper
    from weightmapper.proof import prove
    from weightmapper.report import build_report, dumps_report, render_markdown
    from weightmapper.visualize import default_console, visualize_hierarchies, visualize_mapping

    _check_outputs(args)
    if args.verify and not (
        args.dummy_input and _is_module(args, "source") and _is_module(args, "target")
    ):
        raise ConfigError(
            "--verify runs both models on the dummy input: give --dummy-input and name both "
            "SOURCE and --target as specs that build modules (for a checkpoint, convert it with "
            "`weightmapper apply` and check it with `weightmapper validate`)."
        )
    # Every setting is checked (all problems at once) before any model is read.
    settings = MapperSettings.from_flat(
        {
            "threshold": args.threshold,
            "strategy": args.strategy,
            "buffer_matching_mode": args.buffer_mode,
            "shape_tolerance": args.shape_tolerance,
        }
    )
    proving = _proof.wanted(args)
    err = Console(file=sys.stderr)
    live = err if err.is_terminal and not (args.quiet or args.json) else None
    with stage_bars(live):
        # Mapping needs names and shapes only: built on the meta device unless run.
        meta = not (args.dummy_input or args.verify)
        # With --source-module the checkpoint is loaded into its architecture and mapped
        # from the module, which the proof then runs.
        source = _proof.source_module(args, args.source) if proving else _side(args, "source", meta)
        target = _side(args, "target", meta)
        mapper = WeightMapper(
            source,
            target,
            shape_tolerance=settings.score.shape_tolerance,
            dummy_input=dummy_tensor(args.dummy_input) if args.dummy_input else None,
            buffer_matching_mode=settings.score.buffer_matching_mode,
            trusted=args.trust_pickle,
        )
        result = mapper.suggest_mapping(
            threshold=settings.assign.threshold,
            strategy=settings.assign.strategy,
            verify=args.verify,
        )
        if args.dummy_input:
            shape, dtype = args.dummy_input
            result.settings["dummy_input"] = {"shape": list(shape), "dtype": dtype}
        proof = None
        if proving:
            with stage("prove the mapping by search"):
                proof = prove(
                    source,
                    target,
                    result,
                    _proof.the_input(args, source, target),
                    budget=args.budget,
                )
            result = proof.mapping
        report = build_report(
            mapper,
            proof=proof,
            source_path=None if _is_module(args, "source") else args.source,
            target_path=None if _is_module(args, "target") else args.target,
        )
        # Every output is rendered before the first is written: one that cannot be rendered
        # leaves none written, rather than some of them beside an error.
        render = {
            "out": lambda: result.to_json() + "\n",
            "report": lambda: dumps_report(report),
            "html": lambda: render_html(report),
            "markdown": lambda: render_markdown(report),
        }
        texts = {f: render[f]() for f in _OUTPUTS if getattr(args, f)}
        with stage("write outputs", total=len(texts)) as done:
            for flag, text in texts.items():
                atomic_write_text(getattr(args, flag), text)
                done(1)
    if args.json:
        sys.stdout.write(dumps_report(report))
    elif not args.quiet:
        console = default_console()
        visualize_mapping(report, max_matches=args.max_rows, sort=args.sort, console=console)
        if args.hierarchy:
            visualize_hierarchies(report, show_matches=True, console=console)
        if proof is not None:
            console.print(proof.summary(), markup=False, highlight=False)
        for flag in ("out", "report", "html", "markdown"):
            if getattr(args, flag):
                console.print(f"wrote {getattr(args, flag)}", markup=False, highlight=False)
    if proof is not None and not proof.equal:
        print(f"the conversion is not proven: {proof.status.label()}", file=sys.stderr)
        return 1
    check = report.get("functional_check")
    if args.verify and not (check or {}).get("equal", False):
        print(
            "the mapped target's outputs differ from the source's (see the report)", file=sys.stderr
        )
        return 1
    coverage = result.coverage()["target_coverage"]
    written = any(getattr(args, flag) for flag in ("out", "report", "html", "markdown"))
    if coverage < args.min_coverage:
        print(
            f"target coverage {coverage:.1%} is below --min-coverage {args.min_coverage:.1%}"
            + (" (nothing was mapped: is the target the right model?)" if coverage == 0 else "")
            + ("; the outputs were written for inspection" if written else "")
            + ". Pass --min-coverage 0 to accept it.",
            file=sys.stderr,
        )
        return 1
    return 0
