"""The example-CNN job the pipeline tests start from, and the checks they share on its runs.

The job converts the example ``OldCNN`` checkpoints (generated into ``ckpts``) to
``RefactoredCNN``; each test overrides only the fields it is about.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml
from safetensors.torch import load_file

from weightmapper.pipeline.summary import BatchSummary

T = TypeVar("T")

CNN = {"num_classes": 10, "width": 8}
NOTHING_IS_CERTAIN = 1.0
"""A threshold no pair reaches: a calibrated probability never claims certainty
(``docs/scores.md``), so the target cannot be filled and its checks fail."""
"""Constructor arguments of the example CNNs on both sides."""


def cnn_job_data(**fields: Any) -> dict[str, Any]:
    """Top-level job fields to override (a field set to ``None`` is written as null) → job dict."""
    return {
        "store": "store",
        "examples": "ckpts",
        "sources": ["ckpts/cnn/*.pt"],
        "source_module": {"spec": "weightmapper.examples.cnn:OldCNN", "kwargs": CNN},
        "target": {"module": "weightmapper.examples.cnn:RefactoredCNN", "kwargs": CNN},
        "dummy_input": {"shape": [2, 3, 16, 16]},
        "output": {"dir": "out", "naming": "{stem}.safetensors"},
        **fields,
    }


def write_job_file(root: Path, data: dict[str, Any], *, run: str = "") -> Path:
    """Folder, job dict and extra ``migrate`` arguments for the header → ``root/job.yaml``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "job.yaml"
    header = f"# run: weightmapper migrate job.yaml{run}\n"
    path.write_text(header + yaml.safe_dump(data))
    return path


def run_concurrently(run: Callable[[], T], times: int = 2) -> list[T]:
    """A run and a count → the results of that many threads running it at once."""
    results: list[T] = []
    threads = [threading.Thread(target=lambda: results.append(run())) for _ in range(times)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def assert_each_stage_computed_once(a: BatchSummary, b: BatchSummary) -> None:
    """Two runs over one store → every stage but export was cached in at least one of them."""
    for x, y in zip(a.items, b.items, strict=True):
        for sx, sy in zip(x.stages, y.stages, strict=True):
            if sx.name != "export":
                assert sx.cached or sy.cached, (x.source, sx.name)


def assert_same_outputs(a: BatchSummary, b: BatchSummary, *, reports: bool = False) -> None:
    """Two runs → their converted tensors are bitwise equal (and their reports, if asked)."""
    for x, y in zip(a.items, b.items, strict=True):
        got, want = load_file(x.output or ""), load_file(y.output or "")
        assert got.keys() == want.keys()
        for k in got:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
        if reports:
            assert Path(x.report or "").read_bytes() == Path(y.report or "").read_bytes()
