"""The demo job SIGKILLed at random points under Prefect: nothing left running or behind.

Runs ``bench/prefect_kills.py`` with a few kills (``WM_PREFECT_KILLS``, default 2; the
bench script runs 20). After each kill every process of the run ends by itself; after
the next, uninterrupted run no temporary file or Prefect lock is left and the outputs are
byte-identical to an uninterrupted run's.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.reliability, pytest.mark.flows, pytest.mark.timeout(1800)]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "prefect_kills.py"


def _harness():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("prefect_kills", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_sigkilled_prefect_runs_leave_nothing_behind_and_change_no_output(tmp_path: Path) -> None:
    harness = _harness()
    kills = int(os.environ.get("WM_PREFECT_KILLS", "2"))
    seed = int(os.environ.get("WM_PREFECT_KILL_SEED", "3"))
    report = harness.kill_runs(tmp_path, kills, seed)
    harness.print_report(report)
    assert len(report.kills) == kills, "too many runs finished before their kill"
    assert report.left_behind == []
    assert report.final_rc == 0
    assert report.temps == [] and report.locks == []
    assert report.differing == []
