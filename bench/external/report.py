"""External-truth runs → tables: per case, per mode, calibration, failure mechanisms.

Run through ``bench/accuracy.py --external`` (see ``docs/bench.md``).
"""

from __future__ import annotations

import json
from typing import Any

from bench.external.evaluate import MODES, CaseRun, ModeRun, Unit

CAL_BUCKETS = (
    (0.0, 0.5),
    (0.5, 0.6),
    (0.6, 0.7),
    (0.7, 0.8),
    (0.8, 0.9),
    (0.9, 0.95),
    (0.95, 1.0001),
)


def calibration(units: list[Unit]) -> tuple[list[dict[str, Any]], float]:
    """Predicted units → rows (bucket, count, mean score, accuracy, gap) and the expected
    calibration error (count-weighted mean of |accuracy − mean score|)."""
    rows = []
    ece = 0.0
    for lo, hi in CAL_BUCKETS:
        inb = [u for u in units if lo <= u.score < hi]
        if not inb:
            rows.append({"bucket": f"[{lo:.2f}, {min(hi, 1.0):.2f})", "count": 0})
            continue
        mean = sum(u.score for u in inb) / len(inb)
        acc = sum(u.correct for u in inb) / len(inb)
        ece += len(inb) / max(1, len(units)) * abs(acc - mean)
        rows.append(
            {
                "bucket": f"[{lo:.2f}, {min(hi, 1.0):.2f}{']' if hi > 1 else ')'}",
                "count": len(inb),
                "mean_score": mean,
                "accuracy": acc,
                "gap": acc - mean,
            }
        )
    return rows, ece


def summary(runs: list[CaseRun], mode: str) -> dict[str, Any]:
    """Case runs + mode → macro P/R, equal outputs, unmapped-wrong, coverage, wrong-high."""
    rs = [c.runs[mode] for c in runs if mode in c.runs]
    if not rs:
        return {}
    n = len(rs)
    units = [u for r in rs for u in r.units]
    return {
        "cases": n,
        "macro_precision": sum(r.precision for r in rs) / n,
        "macro_recall": sum(r.recall for r in rs) / n,
        "micro_precision": sum(r.correct for r in rs) / max(1, sum(r.predicted for r in rs)),
        "micro_recall": sum(r.correct for r in rs) / max(1, sum(r.truth_units for r in rs)),
        "outputs_equal": sum(r.equal for r in rs),
        "outputs_equal_verified": sum(
            r.equal for c in runs if c.truth_ok and mode in c.runs for r in [c.runs[mode]]
        ),
        "verified": sum(c.truth_ok for c in runs if mode in c.runs),
        "verified_by_outputs": sum(
            c.truth_check == "outputs equal" for c in runs if mode in c.runs
        ),
        "outputs_equal_by_outputs": sum(
            c.runs[mode].equal for c in runs if mode in c.runs and c.truth_check == "outputs equal"
        ),
        "unmapped_wrong": sum(len(r.unmapped_wrong) for r in rs),
        "coverage": sum(r.coverage for r in rs) / n,
        "confident_coverage": sum(r.confident_coverage for r in rs) / n,
        "wrong_high": sum(r.wrong_high for r in rs),
        "wrong": sum(not u.correct for u in units),
        "mechanisms": _mechanisms(rs),
        "errors": sum(bool(r.error) for r in rs),
    }


def _mechanisms(rs: list[ModeRun]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rs:
        for u in r.units:
            if not u.correct:
                out[u.mechanism] = out.get(u.mechanism, 0) + 1
        for m in r.missed:
            if m["got"] is None:
                key = (
                    "missed split/merge"
                    if len(m["true_sources"]) > 1 or "slice" in m["layout"]
                    else "missed pair"
                )
                out[key] = out.get(key, 0) + 1
    return {k: v for k, v in sorted(out.items()) if v}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def render(runs: list[CaseRun], console: Any, skipped: list[tuple[str, str]]) -> None:
    """Case runs → rich tables on the console."""
    from rich import box
    from rich.table import Table

    bx = box.SIMPLE_HEAVY if console.is_terminal else box.ASCII
    t = Table(title="External truth: cases (truth read back from each project's converter)", box=bx)
    for col in ("case", "family", "converter", "layouts of the truth", "truth check"):
        t.add_column(col)
    for c in runs:
        layouts = ", ".join(f"{k} {v}" for k, v in c.truth.layouts().items()) if c.truth else ""
        check = c.truth_check if not c.error else "error: " + c.error.strip().splitlines()[-1][:80]
        t.add_row(c.case.name, c.case.family, c.case.converter_name, layouts, check)
    console.print(t)
    for name, why in skipped:
        console.print(f"skip {name}: needs {why}")

    for mode in MODES:
        rows = [c for c in runs if mode in c.runs]
        if not rows:
            continue
        t = Table(
            title=f"Mode {mode}: source "
            + (
                "read from a .safetensors file (keys sorted)"
                if mode == "file"
                else "as a module with a dummy input (state dict where only a checkpoint layout exists)"
            ),
            box=bx,
        )
        for col in (
            "case",
            "source",
            "units",
            "P %",
            "R %",
            "unmapped-wrong",
            "outputs",
            "coverage %",
            "confident cov. %",
            "wrong high",
            "s",
        ):
            t.add_column(col, justify="left" if col in ("case", "source", "outputs") else "right")
        for c in rows:
            r = c.runs[mode]
            if r.error:
                t.add_row(c.case.name, r.source_kind, str(r.truth_units), "error", r.error[:60])
                continue
            t.add_row(
                c.case.name,
                r.source_kind,
                str(r.truth_units),
                _pct(r.precision),
                _pct(r.recall),
                str(len(r.unmapped_wrong)),
                r.output,
                _pct(r.coverage),
                _pct(r.confident_coverage),
                str(r.wrong_high),
                f"{r.seconds:.2f}",
            )
        s = summary(runs, mode)
        t.add_row(
            "macro",
            "",
            str(sum(c.runs[mode].truth_units for c in rows)),
            _pct(s["macro_precision"]),
            _pct(s["macro_recall"]),
            str(s["unmapped_wrong"]),
            f"{s['outputs_equal']}/{s['cases']} equal",
            _pct(s["coverage"]),
            _pct(s["confident_coverage"]),
            str(s["wrong_high"]),
            "",
        )
        console.print(t)
        console.print(
            f"  {mode}: micro P {_pct(s['micro_precision'])}%, micro R {_pct(s['micro_recall'])}%; "
            f"equal outputs on {s['outputs_equal_verified']} of {s['verified']} verified cases "
            f"({s['outputs_equal_by_outputs']} of {s['verified_by_outputs']} whose truth is "
            f"proven by equal outputs of the two networks); wrong or missed units by mechanism: "
            + ", ".join(f"{k} {v}" for k, v in s["mechanisms"].items())
        )
        cal, ece = calibration([u for c in rows for u in c.runs[mode].units])
        t = Table(title=f"Calibration ({mode}): score of a predicted unit vs being right", box=bx)
        for col in ("score bucket", "count", "mean score", "accuracy", "gap"):
            t.add_column(col, justify="right")
        for row in cal:
            if not row["count"]:
                t.add_row(row["bucket"], "0", "-", "-", "-")
                continue
            t.add_row(
                row["bucket"],
                str(row["count"]),
                f"{row['mean_score']:.3f}",
                f"{row['accuracy']:.3f}",
                f"{row['gap']:+.3f}",
            )
        console.print(t)
        console.print(f"  expected calibration error ({mode}): {ece:.3f}")


def render_detail(runs: list[CaseRun], console: Any) -> None:
    """Case runs → every wrong and missed unit with the engine's score and the true sources."""
    for c in runs:
        console.print(f"\n[bold]{c.case.name}[/bold] ({c.case.family}): {c.case.description}")
        console.print(f"  converter {c.case.converter_name}; truth check: {c.truth_check}")
        if c.error:
            console.print(c.error)
            continue
        if c.truth:
            console.print(f"  truth layouts: {c.truth.layouts()}")
            if c.truth.unmapped_source or c.truth.unmapped_target:
                console.print(
                    f"  must stay unmapped: source {sorted(c.truth.unmapped_source)}, "
                    f"target {sorted(c.truth.unmapped_target)}"
                )
        for mode, r in c.runs.items():
            console.print(
                f"  [bold]{mode}[/bold] ({r.source_kind}): P {_pct(r.precision)}% R "
                f"{_pct(r.recall)}%, outputs {r.output}"
                + (
                    f" ({getattr(r, 'error_output', '')[:200]})"
                    if r.output.startswith("load")
                    else ""
                )
            )
            if r.error:
                console.print(f"    error: {r.error}")
            for u in sorted((u for u in r.units if not u.correct), key=lambda u: -u.score):
                console.print(
                    f"    wrong [{u.mechanism}] {', '.join(u.sources)} → {u.target} score "
                    f"{u.score:.3f} ({u.stage}, {u.confidence}) transform {u.transform['name']}"
                    f"; true: {u.true_sources}"
                )
            for m in r.missed:
                if m["got"] is None:
                    console.print(
                        f"    missed {m['true_sources']} → {m['target']} [{m['layout']}]: "
                        + "; ".join(m["fate"])
                    )
            if r.unmapped_wrong:
                console.print(f"    must-stay-unmapped keys mapped: {r.unmapped_wrong}")


def to_json(runs: list[CaseRun]) -> dict[str, Any]:
    """Case runs → JSON-ready dict: per case truth and per-mode numbers, summaries, calibration."""
    out: dict[str, Any] = {"cases": [], "modes": {}}
    for c in runs:
        e: dict[str, Any] = {
            "name": c.case.name,
            "family": c.case.family,
            "converter": c.case.converter_name,
            "truth_check": c.truth_check,
            "truth": json.loads(c.truth.to_json()) if c.truth else None,
            "error": c.error,
        }
        for mode, r in c.runs.items():
            e[mode] = {
                "source": r.source_kind,
                "precision": r.precision,
                "recall": r.recall,
                "unmapped_wrong": r.unmapped_wrong,
                "output": r.output,
                "coverage": r.coverage,
                "confident_coverage": r.confident_coverage,
                "wrong_high": r.wrong_high,
                "wrong": [
                    {
                        "target": u.target,
                        "sources": list(u.sources),
                        "true_sources": list(u.true_sources or ()),
                        "score": u.score,
                        "confidence": u.confidence,
                        "mechanism": u.mechanism,
                    }
                    for u in r.units
                    if not u.correct
                ],
                "missed": r.missed,
                "error": r.error,
            }
        out["cases"].append(e)
    for mode in MODES:
        s = summary(runs, mode)
        if s:
            cal, ece = calibration([u for c in runs if mode in c.runs for u in c.runs[mode].units])
            out["modes"][mode] = {**s, "calibration": cal, "ece": ece}
    return out
