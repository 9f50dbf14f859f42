"""Run the external-truth cases and print their tables (``bench/accuracy.py --external``)."""

from __future__ import annotations

import json
import logging
import traceback
import warnings
from typing import Any

from bench.external.case import CASES, ExternalCase
from bench.external.evaluate import MODES, CaseRun, run_case

CASE_MODULES = ("cases_torchtune", "cases_litgpt", "cases_hf")


def load_cases() -> dict[str, ExternalCase]:
    """() → every registered case (the case modules import their libraries lazily)."""
    import importlib

    for mod in CASE_MODULES:
        importlib.import_module(f"bench.external.{mod}")
    return CASES


def pick_cases(case: str | None) -> tuple[list[ExternalCase], str]:
    """Case name (or None for all) → (the cases to run, "") or ([], an error naming the known
    cases) for a name no case has."""
    cases = load_cases()
    if case is None:
        return list(cases.values()), ""
    if case not in cases:
        return [], f"error: no external case {case!r}; known: {', '.join(cases)}"
    return [cases[case]], ""


def quiet_libraries() -> None:
    """Nothing → silences warnings and transformers' logs and progress bars, so a bench's
    table is all it prints."""
    warnings.filterwarnings("ignore")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def main(case: str | None, *, as_json: bool, console: Any) -> int:
    """Case name (or None for all) + output form → exit code 0 (a bench reports, never fails)."""
    logging.getLogger("transformers").setLevel(logging.ERROR)
    quiet_libraries()
    selected, error = pick_cases(case)
    if error:
        console.print(error)
        return 0
    runs: list[CaseRun] = []
    skipped: list[tuple[str, str]] = []
    for c in selected:
        missing = c.available()
        if missing is not None:
            skipped.append((c.name, missing))
            continue
        try:
            runs.append(run_case(c, MODES))
        except Exception:  # a broken case must not hide the others
            runs.append(CaseRun(case=c, error=traceback.format_exc(limit=3)))
        if not as_json and not case:
            console.print(f"  {c.name}", style="dim")
    from bench.external.report import render, render_detail, to_json

    if as_json:
        data = to_json(runs)
        data["skipped"] = [{"case": n, "needs": w} for n, w in skipped]
        print(json.dumps(data, indent=2, default=str))
    elif case:
        render_detail(runs, console)
    else:
        render(runs, console, skipped)
    return 0
