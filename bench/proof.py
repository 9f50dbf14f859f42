"""Proof by search on the reference zoo: how often the engine's mapping is proven equal, and
how often the search (both architectures as modules) turns a wrong mapping into a proven one.

For every zoo case whose two models compute the same function, the source is randomized,
mapped onto the target by the engine (from a bare state dict, as when mapping a checkpoint
file: sorted keys, no module types; or from the module with ``--mode module``), then
``weightmapper.proof.prove`` runs both networks on the case's input and searches where the
outputs differ. Printed per case: the state before the search (engine alone) and after, the
fixes kept, alternatives tried, forward passes and the max abs difference.

``--external`` runs the external-truth set instead (``bench/external/prove.py``): both
architectures as modules, the real networks of transformers, torchtune and litgpt, in the
environment ``bench/external/setup_env.sh`` makes.

Run:  python bench/proof.py [--mode checkpoint|module] [--heldout] [--case NAME] [--budget N]
      .bench-venv/bin/python bench/proof.py --external [--mode ...] [--case NAME] [--budget N]
The script always exits 0: a benchmark reports, it does not assert.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from pathlib import Path

import torch

import zoo_path  # noqa: F401  (the reference zoo lives in tests/)
from weightmapper.calls import ModelCall, as_call
from weightmapper.mapper import WeightMapper
from weightmapper.proof import DEFAULT_BUDGET, prove
from zoo import ZooCase, cases, get_case
from zoo.check import source_with_weights


def _first_output(out: object) -> object:
    """Raw output → its first tensor, as the zoo compares outputs (a ModelOutput's first field:
    ``image_embeds`` of a CLIP vision model with projection, not its hidden states)."""
    to_tuple = getattr(out, "to_tuple", None)
    return to_tuple()[0] if callable(to_tuple) else out


def run_case(case: ZooCase, mode: str, budget: int) -> dict[str, object]:
    """Zoo case + mapping mode + budget → one row of the table."""
    source = source_with_weights(case)
    target = case.build_target().eval()
    inputs = case.dummy_input()
    call = as_call(inputs)
    call = ModelCall(call.args, call.kwargs, output=_first_output)
    start = time.perf_counter()
    if mode == "checkpoint":
        sd = {k: source.state_dict()[k] for k in sorted(source.state_dict())}
        result = WeightMapper.from_state_dict(sd, target).suggest_mapping()
    else:
        result = WeightMapper(source, target, dummy_input=inputs).suggest_mapping()
    mapped = time.perf_counter() - start
    baseline = prove(source, target, result, call, budget=1)
    proof = prove(source, target, result, call, budget=budget)
    return {
        "case": case.name,
        "before": baseline.status.label(),
        "after": proof.status.label(),
        "fixes": len(proof.fixes),
        "tried": proof.alternatives_tried,
        "forwards": proof.forward_passes,
        "max_abs": proof.check.max_abs_diff,
        "map_s": mapped,
        "proof_s": time.perf_counter() - start - mapped,
        "fix_list": list(proof.fixes),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line → the table on stdout; always 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("checkpoint", "module"), default="checkpoint")
    parser.add_argument("--heldout", action="store_true", help="run the held-out split too")
    parser.add_argument("--case", help="one case by name (prints its fixes)")
    parser.add_argument("--budget", type=int, default=DEFAULT_BUDGET)
    parser.add_argument(
        "--external", action="store_true", help="the external-truth set (bench/external)"
    )
    args = parser.parse_args(argv)
    if args.external:
        root = str(Path(__file__).resolve().parents[1])
        if root not in sys.path:
            sys.path.insert(0, root)  # bench.external is imported as a package of the repository
        from bench.external.prove import main as external_main

        return external_main(
            args.case, args.budget, "file" if args.mode == "checkpoint" else "module"
        )
    logging.basicConfig(level=logging.ERROR)
    torch.manual_seed(0)
    split = None if args.heldout else "tune"
    chosen = [get_case(args.case)] if args.case else cases(split=split)
    chosen = [c for c in chosen if c.same_function and c.available()]
    rows = []
    for case in chosen:
        try:
            rows.append(run_case(case, args.mode, args.budget))
            print(f"  done {case.name}: {rows[-1].get('after')}", file=sys.stderr, flush=True)
        except Exception as e:  # a benchmark reports every case, whatever failed
            rows.append({"case": case.name, "before": "error", "after": f"error: {e}"[:60]})
            if args.case:
                traceback.print_exc()
    header = f"{'case':44} {'engine alone':26} {'after search':26} fixes tried fwd  max abs"
    print(f"mode: {args.mode}, budget {args.budget}, {len(rows)} same-function cases")
    print(header)
    print("-" * len(header))
    for r in rows:
        if "fixes" not in r:
            print(f"{r['case'][:44]:44} {r['before']:26} {r['after']}")
            continue
        print(
            f"{r['case'][:44]:44} {str(r['before'])[:26]:26} {str(r['after'])[:26]:26} "
            f"{r['fixes']:5} {r['tried']:5} {r['forwards']:4} {r['max_abs']:.2e}"
        )
        if args.case:
            for f in r["fix_list"]:
                print(f"    fixed {f}")
    before = sum(1 for r in rows if r.get("before") == "proven equal")
    after = sum(1 for r in rows if r.get("after") == "proven equal")
    print("-" * len(header))
    print(
        f"proven equal: engine alone {before}/{len(rows)}, after search {after}/{len(rows)}; "
        f"alternatives tried {sum(int(r.get('tried', 0)) for r in rows)}, proof time "
        f"{sum(float(r.get('proof_s', 0.0)) for r in rows):.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
