"""`weightmapper rules`: compress a mapping into a short, verified table of rename rules."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from weightmapper.atomic import atomic_write_text
from weightmapper.cli._console import print_json
from weightmapper.cli._options import output_path
from weightmapper.rules import FORMATS, compress_mapping, format_rules

HELP = "export a mapping as a short list of regex rename rules (python, regex, HF, mmengine)"
DESCRIPTION = """\
Compress the mapping in MAPPING_OR_REPORT into the fewest regex rename rules: layer
indices become capture groups (layers\\.(\\d+)\\.attn\\. → blocks.\\1.attention.) and a shared
tail of the key becomes one group. The rules are verified by applying them to every
source key: each mapped key must come out as its target and no other key may be renamed.
Splits and merges cannot be written as renames and are listed; keys that need a tensor
transform are named in comments (a rule only renames).

Formats: python (RULES list + rename()), regex (PATTERN => REPLACEMENT lines),
hf-key-mapping (dict for transformers' from_pretrained(key_mapping=...)), mmengine
(revise_keys for mmengine's load_checkpoint).

Exit codes: 0 the rules reproduce the mapping, 1 verification found a difference, 2 bad input.

examples:
  weightmapper rules report.json
  weightmapper rules mapping.json --format hf-key-mapping --out key_mapping.py
  weightmapper rules report.json --format regex --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Parser → parser with rules' arguments added."""
    parser.add_argument("mapping", type=Path, help="mapping file or JSON report")
    parser.add_argument(
        "--format", choices=FORMATS, default="python", help="output format (default: python)"
    )
    parser.add_argument(
        "--out", type=output_path, help="write the rules to this file (else stdout)"
    )
    parser.add_argument(
        "--mix-transforms",
        action="store_true",
        help="let one rule cover keys needing different transforms (fewer rules)",
    )
    parser.add_argument("--json", action="store_true", help="print rules and checks as JSON")
    parser.add_argument("--quiet", action="store_true", help="no summary line on stderr")


def run(args: argparse.Namespace) -> int:
    """Parsed arguments → exit code (1 when the rules do not reproduce the mapping)."""
    from weightmapper.io_safety import ensure_outputs_safe, input_files
    from weightmapper.report import load_report, result_from_report

    ensure_outputs_safe({"--out": args.out}, input_files(args.mapping))
    result = result_from_report(load_report(args.mapping))
    rules = compress_mapping(result, split_by_transform=not args.mix_transforms)
    text = format_rules(rules, args.format)
    if args.json:
        print_json({**rules.to_dict(), "format": args.format, "text": text})
    elif args.out:
        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    if not args.quiet:
        status = "verified" if rules.verified else f"NOT verified: {len(rules.problems)} problem(s)"
        where = f" → {args.out}" if args.out and not args.json else ""
        print(
            f"{len(rules.rules)} rule(s) for {rules.mapping_size} mapped key(s) "
            f"({rules.ratio:.1f} keys per rule), {len(rules.unexpressed)} not expressible; "
            f"{status}{where}",
            file=sys.stderr,
        )
    return 0 if rules.verified else 1
