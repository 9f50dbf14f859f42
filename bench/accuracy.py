"""Mapping accuracy on the reference zoo: precision, recall, traps, calibration, equal outputs.

Every zoo case (``zoo``) is mapped by ``WeightMapper(src, tgt, dummy_input=...)
.suggest_mapping()`` twice, with and without the dummy input (execution order traced or not);
``--mode all`` adds a run whose source is a bare state dict (``WeightMapper.from_state_dict``,
no module types) and one whose source is read from a ``.safetensors`` file (keys stored sorted,
as most users start; ``--mode file``). ``--heldout`` runs the held-out cases.

The unit of counting is one *target tensor*: a predicted unit is the engine's claim "target
key T comes from source key(s) S through transform X". It is correct iff S is exactly T's true
source set AND the engine's transform applied to the real source tensors gives the true target
tensor (so a missed transpose of a square matrix counts as wrong, with the keys right).

- precision = correct units / predicted units; recall = correct units / true units;
- unmapped-wrong = keys that must stay unmapped (no true partner) but were mapped;
- calibration: precision of predicted units per score bucket;
- output equality for cases whose two models compute the same function: the engine's mapping
  converts a randomized source, the target loads it with ``strict=True``, outputs compared.

Goals: refactor 100%; cross_library ≥ 0.99 precision and recall; 0 unmapped-wrong; units
scored ≥ 0.9 correct ≥ 99.5% of the time.

Run:  python bench/accuracy.py [--case NAME] [--category CAT] [--json] [--no-compare] [--heldout]
``--case`` prints every wrong and missed unit with its score, breakdown and the engine's reason.

``--external`` runs the external-truth set instead (``bench/external/``, see ``docs/bench.md``):
ground truth read back from converters that other projects ship (torchtune, litgpt,
transformers), each case mapped with the source read from a ``.safetensors`` file and as a
module. Its libraries live in their own environment: ``bash bench/external/setup_env.sh``, then
``.bench-venv/bin/python bench/accuracy.py --external [--case NAME] [--json]``.
The script always exits 0: a benchmark reports, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import zoo_path  # noqa: F401  (the reference zoo lives in tests/)
from rates import PrecisionRecall
from zoo import CATEGORIES, ZooCase, cases, convert_and_compare, get_case
from zoo.check import source_with_weights

MODES = ("dummy", "no_dummy")
EXTRA_MODES = ("checkpoint", "file")
"""``checkpoint``: the source is a bare state dict in registration order (no module, no trace);
``file``: the source is read from a ``.safetensors`` file, whose keys are stored sorted."""
COMPARED_MODES = ("dummy", "file")
"""Modes whose converted checkpoint is loaded into the target and its outputs compared."""
BUCKETS = ((0.0, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0001))
GOAL_HIGH_SCORE_PRECISION = 0.995
GOAL_CROSS_LIBRARY = 0.99


@dataclass
class Unit:
    """One predicted target tensor: where the engine says it comes from, and the verdict."""

    target: str
    sources: tuple[str, ...]
    score: float
    transform: dict[str, Any]
    kind: str
    """``pair``, ``split`` or ``merge``."""
    breakdown: dict[str, float] = field(default_factory=dict)
    stage: str = ""
    confidence: str = ""
    true_sources: tuple[str, ...] | None = None
    keys_right: bool = False
    tensor_right: bool = False
    violates_unmapped: bool = False

    @property
    def correct(self) -> bool:
        """Keys and tensor both right."""
        return self.keys_right and self.tensor_right


@dataclass
class ModeScore(PrecisionRecall):
    """One case mapped in one mode (with or without dummy input)."""

    mode: str
    truth_units: int = 0
    predicted: int = 0
    correct: int = 0
    keys_right_tensor_wrong: int = 0
    unmapped_wrong: int = 0
    units: list[Unit] = field(default_factory=list)
    missed: list[dict[str, Any]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    transforms: dict[str, list[int]] = field(default_factory=dict)
    """Expected transform name → [true units, correct units]."""
    output: dict[str, Any] | None = None
    seconds: float = 0.0
    error: str = ""


# --- scoring one case ----------------------------------------------------------------------


def _truth_producers(case: ZooCase) -> dict[str, tuple[tuple[str, ...], str]]:
    """Case → {target key: (true source keys, expected transform name)}."""
    out: dict[str, tuple[tuple[str, ...], str]] = {}
    tf = case.expected_transforms
    for s, t in case.ground_truth.items():
        out[t] = ((s,), tf.get(s, "identity"))
    for m in case.expected_multi:
        for t in m.targets:
            out[t] = (m.sources, m.transform)
    return out


def _predicted_units(
    result: Any, sd: Mapping[str, torch.Tensor], aliases: Mapping[str, str] | None = None
) -> list[tuple[Unit, Any]]:
    """MappingResult + source state dict (+ the engine's source key → state-dict key, where a
    checkpoint reader cleaned the keys) → (Unit, produced tensor or exception) per target."""
    from weightmapper.transforms import apply_one, apply_transform

    def orig(key: str) -> str:
        return aliases.get(key, key) if aliases else key

    out: list[tuple[Unit, Any]] = []
    for p in result.pairs:
        try:
            tensor: Any = apply_one(p.transform, sd[orig(p.source)])
        except Exception as e:  # a transform that cannot apply is a wrong unit, not a crash
            tensor = e
        unit = Unit(
            target=p.target,
            sources=(orig(p.source),),
            score=float(p.score),
            transform=p.transform.to_dict(),
            kind="pair",
            breakdown=dict(p.breakdown),
            stage=p.stage,
            confidence=p.confidence,
        )
        out.append((unit, tensor))
    for m in result.multi:
        try:
            produced: list[Any] = list(
                apply_transform(m.transform, [sd[orig(s)] for s in m.sources])
            )
        except Exception as e:
            produced = [e] * len(m.targets)
        if len(produced) != len(m.targets):
            produced = [ValueError("transform produced a different number of tensors")] * len(
                m.targets
            )
        for t, tensor in zip(m.targets, produced, strict=True):
            unit = Unit(
                target=t,
                sources=tuple(orig(s) for s in m.sources),
                score=float(m.score),
                transform=m.transform.to_dict(),
                kind=m.kind,
                breakdown=dict(m.breakdown),
                stage="multi",
                confidence=m.confidence,
            )
            out.append((unit, tensor))
    return out


def _same_tensor(a: Any, b: torch.Tensor) -> bool:
    return (
        isinstance(a, torch.Tensor)
        and a.shape == b.shape
        and a.dtype == b.dtype
        and torch.allclose(a, b, rtol=0, atol=0)
    )


def _new_score(case: ZooCase, mode: str) -> tuple[ModeScore, dict]:
    res = ModeScore(mode=mode)
    producers = _truth_producers(case)
    res.truth_units = len(producers)
    for _, name in producers.values():
        res.transforms.setdefault(name, [0, 0])[0] += 1
    return res, producers


def evaluate(
    case: ZooCase,
    result: Any,
    sd: Mapping[str, torch.Tensor],
    mode: str = "dummy",
    aliases: Mapping[str, str] | None = None,
) -> ModeScore:
    """Case + a MappingResult + the source state dict it was made for (+ the engine's source
    key → state-dict key where a checkpoint reader cleaned the keys) → ModeScore."""
    res, producers = _new_score(case, mode)
    lone = case.must_stay_unmapped
    expected_cache: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
    got: dict[str, Unit] = {}
    for unit, tensor in _predicted_units(result, sd, aliases):
        truth = producers.get(unit.target)
        unit.true_sources = truth[0] if truth else None
        unit.violates_unmapped = unit.target in lone["target"] or bool(
            set(unit.sources) & lone["source"]
        )
        if truth is not None and set(truth[0]) == set(unit.sources):
            unit.keys_right = True
            if truth[0] not in expected_cache:
                expected_cache[truth[0]] = case.expected_tensor(truth[0], sd)
            unit.tensor_right = _same_tensor(tensor, expected_cache[truth[0]][unit.target])
        res.units.append(unit)
        got[unit.target] = unit
    res.predicted = len(res.units)
    res.correct = sum(u.correct for u in res.units)
    res.keys_right_tensor_wrong = sum(u.keys_right and not u.tensor_right for u in res.units)
    res.violations = sorted(
        {u.target for u in res.units if u.target in lone["target"]}
        | {s for u in res.units for s in u.sources if s in lone["source"]}
    )
    res.unmapped_wrong = len(res.violations)
    for t, (_, name) in producers.items():
        if t in got and got[t].correct:
            res.transforms[name][1] += 1
    res.missed = _explain_missed(result, producers, got)
    return res


def _write_safetensors(sd: Mapping[str, torch.Tensor], folder: str) -> Path:
    """State dict + folder → a ``.safetensors`` file of it (tied tensors stored once each)."""
    from safetensors.torch import save_file

    path = Path(folder) / "source.safetensors"
    save_file({k: v.detach().contiguous().clone() for k, v in sd.items()}, path)
    return path


def score_mode(case: ZooCase, mode: str, *, compare: bool = True, seed: int = 0) -> ModeScore:
    """Case + mode → the engine's ModeScore (engine errors are recorded, never raised)."""
    from weightmapper.mapper import WeightMapper

    source = source_with_weights(case, seed)
    target = case.build_target().eval()
    sd = source.state_dict()
    workdir = tempfile.TemporaryDirectory()
    t0 = time.perf_counter()
    try:
        if mode == "checkpoint":
            mapper = WeightMapper.from_state_dict(sd, target)
        elif mode == "file":
            mapper = WeightMapper.from_checkpoint(_write_safetensors(sd, workdir.name), target)
        else:
            mapper = WeightMapper(
                source, target, dummy_input=case.dummy_input() if mode == "dummy" else None
            )
        result = mapper.suggest_mapping()
    except Exception as e:
        res, producers = _new_score(case, mode)
        res.seconds = time.perf_counter() - t0
        res.error = f"{type(e).__name__}: {e}"
        logging.getLogger(__name__).debug("engine failed on %s", case.name, exc_info=True)
        res.missed = [{"target": t, "true_sources": list(s)} for t, (s, _) in producers.items()]
        return res
    seconds = time.perf_counter() - t0
    aliases = None
    if mode == "file":
        from weightmapper.checkpoint import strip_wrapper_prefixes

        # The reader drops wrapper prefixes (``module.``): its keys name the same tensors.
        aliases = dict(zip(strip_wrapper_prefixes(sd)[0], sd, strict=True))
    res = evaluate(case, result, sd, mode, aliases)
    res.seconds = seconds
    if compare and (case.same_function or case.shared_features is not None):
        check = convert_and_compare(case, result.convert, strict=case.same_function, seed=seed)
        res.output = {
            "loaded": check.loaded,
            "max_abs_diff": check.max_abs_diff,
            "equal": check.equal,
            "missing": len(check.missing),
            "error": check.error[:300],
        }
    return res


def _explain_missed(
    result: Any,
    producers: Mapping[str, tuple[tuple[str, ...], str]],
    got: Mapping[str, Unit],
) -> list[dict[str, Any]]:
    """True units not predicted correctly → what the engine did with their sources instead."""
    unmatched = {u.name: u for u in result.unmatched_source}
    where: dict[str, str] = {}
    for u in got.values():
        for s in u.sources:
            where[s] = u.target
    missed = []
    for t, (sources, name) in producers.items():
        if t in got and got[t].correct:
            continue
        fate = []
        for s in sources:
            if s in where:
                fate.append(f"{s} → {where[s]}")
            elif s in unmatched:
                u = unmatched[s]
                best = f" (best {u.best_candidate} @ {u.best_score:.3f})" if u.best_score else ""
                fate.append(f"{s}: {u.reason.value}{best}")
            else:
                fate.append(f"{s}: not reported")
        pred = got.get(t)
        missed.append(
            {
                "target": t,
                "true_sources": list(sources),
                "transform": name,
                "target_got": None if pred is None else list(pred.sources),
                "target_got_score": None if pred is None else round(pred.score, 4),
                "keys_right_tensor_wrong": bool(pred and pred.keys_right),
                "sources_fate": fate,
            }
        )
    return missed


# --- aggregation ---------------------------------------------------------------------------


def aggregate(scores: list[tuple[ZooCase, dict[str, ModeScore]]], mode: str) -> dict[str, Any]:
    """Per-case scores → per-category and overall micro-averaged numbers for one mode."""
    out: dict[str, Any] = {}
    for cat in (*CATEGORIES, "all"):
        rows = [m[mode] for c, m in scores if cat in ("all", c.category) and mode in m]
        if not rows:
            continue
        pred = sum(r.predicted for r in rows)
        corr = sum(r.correct for r in rows)
        truth = sum(r.truth_units for r in rows)
        outputs = [r.output for r in rows if r.output is not None]
        out[cat] = {
            "cases": len(rows),
            "perfect_cases": sum(r.correct == r.truth_units == r.predicted for r in rows),
            "predicted": pred,
            "correct": corr,
            "truth": truth,
            "precision": corr / pred if pred else 1.0,
            "recall": corr / truth if truth else 1.0,
            "unmapped_wrong": sum(r.unmapped_wrong for r in rows),
            "keys_right_tensor_wrong": sum(r.keys_right_tensor_wrong for r in rows),
            "errors": sum(bool(r.error) for r in rows),
            "outputs_equal": sum(bool(o["equal"]) for o in outputs),
            "outputs_checked": len(outputs),
        }
    return out


def calibration(scores: list[tuple[ZooCase, dict[str, ModeScore]]], mode: str) -> list[dict]:
    """Per-case scores → count and precision of predicted units per score bucket."""
    units = [u for _, m in scores if mode in m for u in m[mode].units]
    rows = []
    for lo, hi in BUCKETS:
        inb = [u for u in units if lo <= u.score < hi]
        rows.append(
            {
                "bucket": f"[{lo:.1f}, {min(hi, 1.0):.1f}{']' if hi > 1 else ')'}",
                "count": len(inb),
                "correct": sum(u.correct for u in inb),
                "precision": sum(u.correct for u in inb) / len(inb) if inb else None,
            }
        )
    return rows


def transform_table(scores: list[tuple[ZooCase, dict[str, ModeScore]]], mode: str) -> dict:
    """Per-case scores → expected transform name → {truth, correct, recall}."""
    acc: dict[str, list[int]] = {}
    for _, m in scores:
        if mode not in m:
            continue
        for name, (n, ok) in m[mode].transforms.items():
            a = acc.setdefault(name, [0, 0])
            a[0] += n
            a[1] += ok
    return {
        k: {"truth": n, "correct": ok, "recall": ok / n if n else 1.0} for k, (n, ok) in acc.items()
    }


def goals(agg: dict[str, Any], calib: list[dict]) -> list[dict[str, Any]]:
    """Aggregates + calibration → each stated goal with its measured value and status."""
    rows = []
    if "refactor" in agg:
        r = agg["refactor"]
        v = min(r["precision"], r["recall"])
        rows.append({"goal": "refactor precision and recall = 100%", "value": v, "met": v >= 1.0})
    if "cross_library" in agg:
        r = agg["cross_library"]
        v = min(r["precision"], r["recall"])
        rows.append(
            {
                "goal": "cross_library precision, recall ≥ 0.99",
                "value": v,
                "met": v >= GOAL_CROSS_LIBRARY,
            }
        )
    if "all" in agg:
        v = agg["all"]["unmapped_wrong"]
        rows.append({"goal": "0 wrong on must-stay-unmapped keys", "value": v, "met": v == 0})
    hi = calib[-1]
    if hi["count"]:
        rows.append(
            {
                "goal": "units scored ≥ 0.9 correct ≥ 99.5%",
                "value": hi["precision"],
                "met": hi["precision"] >= GOAL_HIGH_SCORE_PRECISION,
            }
        )
    return rows


# --- rendering -----------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _out_cell(o: dict | None) -> str:
    if o is None:
        return "-"
    if not o["loaded"]:
        return "load failed"
    if o["max_abs_diff"] is None:
        return "not compared"
    return f"{'=' if o['equal'] else '≠'} {o['max_abs_diff']:.1e}"


def render(scores: list[tuple[ZooCase, dict[str, ModeScore]]], console: Any) -> None:
    """Scores → rich tables on the console (plain boxes when piped)."""
    from rich import box
    from rich.table import Table

    bx = box.SIMPLE_HEAVY if console.is_terminal else box.ASCII
    present = [md for md in (*MODES, *EXTRA_MODES) if any(md in m for _, m in scores)]
    names = "/".join(present)
    t = Table(
        title=f"Accuracy per case (P/R in %, units = target tensors; a/b columns: {names})",
        box=bx,
    )
    for col in ("case", "category", "units"):
        t.add_column(col, justify="left" if col != "units" else "right")
    for md in present:
        t.add_column(f"P {md}", justify="right")
        t.add_column(f"R {md}", justify="right")
    compared = [md for md in present if md in COMPARED_MODES]
    for col in ("unmapped-wrong", "tensor-wrong", f"outputs ({'/'.join(compared)})", "s"):
        t.add_column(col, justify="right")
    for c, m in scores:
        runs = [m[md] for md in present if md in m]
        cells = [c.name, c.category, str(runs[0].truth_units if runs else "-")]
        for md in present:
            r = m.get(md)
            if r is None:
                cells += ["-", "-"]
            elif r.error:
                cells += ["error", "error"]
            else:
                cells += [_pct(r.precision), _pct(r.recall)]
        uw = "/".join(str(r.unmapped_wrong) for r in runs)
        tw = "/".join(str(r.keys_right_tensor_wrong) for r in runs)
        secs = "/".join(f"{r.seconds:.2f}" for r in runs)
        outs = "/".join(_out_cell(m[md].output if md in m else None) for md in compared)
        cells += [uw, tw, outs or "-", secs]
        t.add_row(*cells)
    console.print(t)

    for mode in (*MODES, *EXTRA_MODES):
        agg = aggregate(scores, mode)
        if not agg:
            continue
        t = Table(title=f"Per category ({mode})", box=bx)
        for col in ("category", "cases", "perfect", "predicted", "correct", "truth", "P %", "R %"):
            t.add_column(col, justify="left" if col == "category" else "right")
        for col in ("unmapped-wrong", "tensor-wrong", "outputs equal", "errors"):
            t.add_column(col, justify="right")
        for cat, a in agg.items():
            t.add_row(
                cat,
                str(a["cases"]),
                str(a["perfect_cases"]),
                str(a["predicted"]),
                str(a["correct"]),
                str(a["truth"]),
                _pct(a["precision"]),
                _pct(a["recall"]),
                str(a["unmapped_wrong"]),
                str(a["keys_right_tensor_wrong"]),
                f"{a['outputs_equal']}/{a['outputs_checked']}",
                str(a["errors"]),
            )
        console.print(t)
        calib = calibration(scores, mode)
        t = Table(title=f"Calibration ({mode}): precision of predicted units by score", box=bx)
        for col in ("score bucket", "count", "correct", "precision %"):
            t.add_column(col, justify="right")
        for row in calib:
            t.add_row(row["bucket"], str(row["count"]), str(row["correct"]), _pct(row["precision"]))
        console.print(t)
        tt = transform_table(scores, mode)
        t = Table(title=f"Recall by expected transform ({mode})", box=bx)
        for col in ("transform", "true units", "correct", "recall %"):
            t.add_column(col, justify="right")
        for name, row in sorted(tt.items()):
            t.add_row(name, str(row["truth"]), str(row["correct"]), _pct(row["recall"]))
        console.print(t)
        t = Table(title=f"Goals ({mode})", box=bx)
        for col in ("goal", "value", "met"):
            t.add_column(col)
        for g in goals(agg, calib):
            v = g["value"]
            t.add_row(
                g["goal"],
                f"{v:.4f}" if isinstance(v, float) else str(v),
                "yes" if g["met"] else "NO",
            )
        console.print(t)


def render_case_detail(case: ZooCase, modes: dict[str, ModeScore], console: Any) -> None:
    """One case's scores → every wrong unit, missed unit and trap violation, with evidence."""
    console.print(f"[bold]{case.name}[/bold] ({case.category}): {case.description}")
    for mode, r in modes.items():
        console.print(
            f"\n[bold]{mode}[/bold]: precision {_pct(r.precision)}%, recall {_pct(r.recall)}%, "
            f"{r.correct}/{r.truth_units} correct, {r.predicted} predicted, "
            f"unmapped-wrong {r.unmapped_wrong}, {r.seconds:.2f}s, outputs {_out_cell(r.output)}"
        )
        if r.output and r.output["error"]:
            console.print(f"  output check: {r.output['error']}")
        if r.error:
            console.print(f"  error: {r.error}")
            continue
        wrong = [u for u in r.units if not u.correct]
        console.print(f"  wrong predictions ({len(wrong)}):")
        for u in sorted(wrong, key=lambda u: -u.score):
            why = "tensor differs (transform)" if u.keys_right else f"true: {u.true_sources}"
            console.print(
                f"    {', '.join(u.sources)} → {u.target}  score {u.score:.3f} [{u.stage}, "
                f"{u.confidence}] transform {u.transform}  {why}\n"
                f"      breakdown {json.dumps({k: round(v, 3) for k, v in u.breakdown.items()})}"
            )
        console.print(f"  missed true units ({len(r.missed)}):")
        for m in r.missed:
            got = (
                f"target got {m['target_got']} @ {m['target_got_score']}"
                if m["target_got"]
                else "target left unmapped"
            )
            console.print(
                f"    {m['true_sources']} → {m['target']} [{m['transform']}]: {got}; "
                + "; ".join(m["sources_fate"])
            )
        if r.violations:
            console.print(f"  must-stay-unmapped keys that were mapped: {r.violations}")


def to_json(scores: list[tuple[ZooCase, dict[str, ModeScore]]]) -> dict[str, Any]:
    """Scores → a JSON-ready dict with cases, categories, calibration, transforms and goals."""
    out: dict[str, Any] = {"cases": [], "modes": {}}
    for c, m in scores:
        entry: dict[str, Any] = {"name": c.name, "category": c.category}
        for mode, r in m.items():
            d = asdict(r)
            d["precision"], d["recall"] = r.precision, r.recall
            d["wrong"] = [asdict(u) for u in r.units if not u.correct]
            del d["units"]
            entry[mode] = d
        out["cases"].append(entry)
    for mode in (*MODES, *EXTRA_MODES):
        agg = aggregate(scores, mode)
        if agg:
            calib = calibration(scores, mode)
            out["modes"][mode] = {
                "categories": agg,
                "calibration": calib,
                "transforms": transform_table(scores, mode),
                "goals": goals(agg, calib),
            }
    return out


# --- main ----------------------------------------------------------------------------------


def _select(name: str | None, category: str | None, *, heldout: bool) -> list[ZooCase]:
    """Case name / category / held-out flag → the cases to run."""
    split = "heldout" if heldout else "tune"
    if name:
        case = get_case(name)
        if case.split != split:
            raise KeyError(f"case {name!r} belongs to the {case.split} split, not {split}")
        return [case]
    return cases(category, split)


def _run_external(case: str | None, *, as_json: bool, console: Any) -> int:
    """Case name (or None) + output form → the external-truth set's tables; exit code 0."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # bench.external is imported as a package of the repository
    from bench.external.run import main as external_main

    return external_main(case, as_json=as_json, console=console)


def main(argv: list[str] | None = None) -> int:
    """Command line → exit code 0 (always; failures are reported, not raised)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--case", help="run one case and print every wrong and missed unit")
    ap.add_argument("--category", choices=CATEGORIES, help="run the cases of one category")
    ap.add_argument("--json", action="store_true", help="print machine-readable JSON")
    ap.add_argument(
        "--mode",
        choices=(*MODES, *EXTRA_MODES, "both", "all"),
        default="both",
        help="both = dummy and no_dummy; all adds checkpoint (a bare state dict) and file "
        "(a .safetensors file, keys sorted)",
    )
    ap.add_argument("--no-compare", action="store_true", help="skip the output-equality check")
    ap.add_argument("--seed", type=int, default=0, help="seed of the randomized source weights")
    ap.add_argument(
        "--heldout",
        action="store_true",
        help="run the held-out cases (zoo.heldout) instead of the tuning zoo",
    )
    ap.add_argument(
        "--external",
        action="store_true",
        help="run the external-truth set (bench/external: truth from other projects' converters)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    torch.set_num_threads(1)

    from rich.console import Console

    console = Console(stderr=args.json)
    if not console.is_terminal:
        # piped: no terminal width to respect, and truncated cells would hide the numbers
        console = Console(stderr=args.json, width=200)
    if args.external:
        return _run_external(args.case, as_json=args.json, console=console)
    try:
        selected = _select(args.case, args.category, heldout=args.heldout)
    except Exception as e:
        console.print(f"error: {e}")
        return 0
    modes = {"both": MODES, "all": (*MODES, *EXTRA_MODES)}.get(args.mode, (args.mode,))
    scores: list[tuple[ZooCase, dict[str, ModeScore]]] = []
    for case in selected:
        if not case.available():
            console.print(f"skip {case.name}: needs {', '.join(case.requires)}")
            continue
        per_mode: dict[str, ModeScore] = {}
        for mode in modes:
            try:
                per_mode[mode] = score_mode(
                    case,
                    mode,
                    compare=not args.no_compare and mode in COMPARED_MODES,
                    seed=args.seed,
                )
            except Exception:  # a broken case must not hide the others
                per_mode[mode] = ModeScore(mode=mode, error=traceback.format_exc(limit=3))
        scores.append((case, per_mode))
        if not args.json and not args.case:
            console.print(f"  {case.name}", style="dim")
    if args.json:
        print(json.dumps(to_json(scores), indent=2, default=str))
    elif args.case:
        for case, per_mode in scores:
            render_case_detail(case, per_mode, console)
    else:
        render(scores, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
