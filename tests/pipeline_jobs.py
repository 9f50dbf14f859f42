"""The example-CNN job the pipeline tests start from: field overrides in, a job dict or file out.

The job converts the example ``OldCNN`` checkpoints (generated into ``ckpts``) to
``RefactoredCNN``; each test overrides only the fields it is about.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CNN = {"num_classes": 10, "width": 8}
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
