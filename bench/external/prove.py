"""The proof search on the external-truth set: both architectures as modules, their outputs
compared (``bench/proof.py --external``).

For every case whose source network exists as a module, the engine maps the source onto the
target (``module``: from the module with a dummy input; ``file``: from its weights written to a
``.safetensors`` file, keys sorted, as ``bench/accuracy.py --external`` does), then
:func:`weightmapper.proof.prove` runs both networks and searches where they differ. Whether
the two networks compute the same function is decided independently, by the other project's
converter: the target loaded with the converter's output is run against the source on the same
calls. A row says what the engine's mapping gave before the search (``first pass``) and after
it, how many alternatives were tried, the max abs difference and, for a mapping that still
differs, the module and the cause the diagnosis names.
"""

from __future__ import annotations

import logging
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from bench.external.case import Built, ExternalCase
from bench.external.evaluate import _close, _engine_result, load_and_run
from bench.external.run import pick_cases, quiet_libraries
from bench.external.truth import derive
from weightmapper.calls import ModelCall, as_call
from weightmapper.proof import DEFAULT_BUDGET, prove


def _source_calls(name: str, built: Built) -> tuple[Any, Any] | None:
    """Case name + built case → (source call, target call) when they differ from ``inputs``.

    The source is called as it is, the whole network: a T5 encoder-decoder takes decoder ids
    too. Its converter keeps the encoder only, so the two networks compute different
    functions, which is what the diagnosis must say.
    """
    if name == "tt-t5-encoder-hf-to-tune":
        ids = built.inputs
        src = ModelCall(kwargs={"input_ids": ids, "decoder_input_ids": ids[:, :4]})
        return src, ids
    return None


# Legacy-checkpoint cases whose two sides are different architectures of one family: the
# source architecture exists today (transformers' own class), and transformers' loader reads
# the legacy checkpoint into it, so both can run as modules.
_SOURCE_CLASS = {
    "hf-legacy-bert-pretraining-to-mlm": "BertForPreTraining",
    "hf-legacy-bert-mlm-to-classifier": "BertForMaskedLM",
}


def _with_source_module(name: str, built: Built) -> Built | None:
    """Case name + built case → the same case with its source as a module (the legacy
    checkpoint read by transformers into the source architecture), or None."""
    if name not in _SOURCE_CLASS:
        return None
    import transformers as tf

    from bench.external.case import logits, seeded, state_dict_of
    from bench.external.cases_hf import hf_loader

    config = built.build_target().config
    cls = getattr(tf, _SOURCE_CLASS[name])
    source = seeded(lambda: cls(config))()
    source.load_state_dict(hf_loader(cls, config)(built.source_sd), strict=False)
    return replace(built, source_sd=state_dict_of(source), source_module=source, run_source=logits)


@dataclass
class ProofRow:
    """One case of the external set through the proof search."""

    case: str
    same_function: str = "-"
    """``yes`` when the target loaded with the other project's conversion computes the source's
    outputs on these calls, ``no (…)`` otherwise, ``-`` when it could not be decided."""
    first: str = "-"
    after: str = "-"
    tried: int = 0
    fixes: list[str] = field(default_factory=list)
    forwards: int = 0
    max_abs: float = float("nan")
    module: str = ""
    cause: str = ""
    seconds: float = 0.0
    skipped: str = ""
    error: str = ""


def _same_function(
    built: Built, side: Built, truth: Any, src_call: ModelCall, tgt_call: ModelCall
) -> str:
    """Built case + the side with the source module + truth + both calls → ``yes`` /
    ``no (…)``: does the converter's own target compute the source's outputs?"""
    target = built.build_target()
    own = target.state_dict()
    sd = truth.convert(built.source_sd)
    for k in truth.unmapped_target:
        sd.setdefault(k, own[k])
    target.load_state_dict(sd, strict=True)
    ref = src_call.select(src_call.run(side.source_module.eval(), "source"))
    got = tgt_call.select(tgt_call.run(target.eval(), "target"))
    if ref is None or got is None:
        return "-"
    if tuple(ref.shape) != tuple(got.shape):
        return f"no (outputs {tuple(ref.shape)} vs {tuple(got.shape)})"
    ok, diff = _close(ref, got)
    return "yes" if ok else f"no (max abs {diff:.1e})"


def run_case(case: ExternalCase, budget: int, mode: str = "module") -> ProofRow:
    """External case + budget + mapping mode → its row: first pass, search, diagnosis."""
    row = ProofRow(case.name)
    missing = case.available()
    if missing is not None:
        row.skipped = f"needs {missing}"
        return row
    torch.manual_seed(0)
    built = case.build()
    as_modules = _with_source_module(case.name, built)
    if built.source_module is None and as_modules is None:
        row.skipped = "source is a checkpoint layout: no module to run"
        return row
    calls = _source_calls(case.name, built)
    src_in, tgt_in = calls if calls else (built.inputs, built.inputs)
    src_call, tgt_call = as_call(src_in), as_call(tgt_in)
    target = built.build_target()
    truth = derive(
        {k: v.shape for k, v in built.source_sd.items()},
        built.converter,
        list(target.state_dict()),
    )
    # the truth is read from the legacy checkpoint; the engine maps the source as it is today
    engine_side = as_modules or built
    row.same_function = _same_function(built, engine_side, truth, src_call, tgt_call)
    with tempfile.TemporaryDirectory() as d:
        result, _ = _engine_result(engine_side, mode, Path(d))
    start = time.perf_counter()
    source = engine_side.source_module
    first = prove(source, target, result, src_call, target_inputs=tgt_call, budget=1)
    proof = prove(source, target, result, src_call, target_inputs=tgt_call, budget=budget)
    row.seconds = time.perf_counter() - start
    row.first = first.status.label()
    row.after = proof.status.label()
    row.tried = proof.alternatives_tried
    row.forwards = proof.forward_passes
    row.fixes = list(proof.fixes)
    row.max_abs = proof.check.max_abs_diff
    if not proof.equal:
        row.module = proof.module or "(whole network)"
        row.cause = proof.status.detail
    else:
        # proven equal: the converted checkpoint loads strictly and matches the reference too
        out = load_and_run(built, truth, proof.mapping.convert(engine_side.source_sd))
        ok, _ = _close(out, load_and_run(built, truth, truth.convert(built.source_sd)))
        if not ok:
            row.cause = "proven on the search's input but differs from the converter's target"
    return row


def main(case: str | None, budget: int = DEFAULT_BUDGET, mode: str = "module") -> int:
    """Case name (or None for all) + budget + mapping mode → the table on stdout; always 0."""
    logging.basicConfig(level=logging.ERROR)
    quiet_libraries()
    selected, error = pick_cases(case)
    if error:
        print(error)
        return 0
    rows = []
    for c in selected:
        try:
            rows.append(run_case(c, budget, mode))
        except Exception as e:  # a benchmark reports every case, whatever failed
            rows.append(ProofRow(c.name, error=f"{type(e).__name__}: {e}"[:200]))
            if case:
                traceback.print_exc()
        print(f"  done {c.name}", flush=True, file=__import__("sys").stderr)
    render(rows, budget, mode, detail=bool(case))
    return 0


def render(rows: list[ProofRow], budget: int, mode: str, *, detail: bool = False) -> None:
    """Rows → the table and a tally on stdout."""
    head = (
        f"{'case':28} {'same function':14} {'first pass':34} {'after search':30} "
        f"{'tried':>5} {'fixes':>5} {'max abs':>8}"
    )
    print(
        f"external-truth set, both architectures as modules; mapped from the {mode}, "
        f"budget {budget}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.skipped or r.error:
            print(
                f"{r.case[:28]:28} {'skipped: ' + r.skipped if r.skipped else 'error: ' + r.error}"
            )
            continue
        same = "yes" if r.same_function == "yes" else "no"
        print(
            f"{r.case[:28]:28} {same:14} {r.first[:34]:34} {r.after[:30]:30} "
            f"{r.tried:5} {len(r.fixes):5} {r.max_abs:8.1e}"
        )
        if r.same_function not in ("yes", "-"):
            print(f"{'':28}   same function: {r.same_function}")
        if r.cause:
            print(f"{'':28}   diagnosis: {r.cause}")
        if detail:
            for f in r.fixes:
                print(f"{'':28}   fixed {f}")
    run = [r for r in rows if not (r.skipped or r.error)]
    same = [r for r in run if r.same_function == "yes"]
    other = [r for r in run if r.same_function != "yes"]
    print("-" * len(head))
    print(
        f"same function: proven equal {sum(r.after == 'proven equal' for r in same)}/{len(same)} "
        f"(first pass {sum(r.first == 'proven equal' for r in same)}/{len(same)}); "
        f"different functions: differs, cause named "
        f"{sum(r.after.startswith('differs at') and bool(r.cause) for r in other)}/{len(other)}; "
        f"skipped {sum(bool(r.skipped) for r in rows)}, errors {sum(bool(r.error) for r in rows)}"
    )
