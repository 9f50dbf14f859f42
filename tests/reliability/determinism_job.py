"""One mapping job, run in a child process so ``PYTHONHASHSEED`` differs between runs.

``python determinism_job.py OUT_DIR`` writes three sources (the same weights, keys in
checkpoint order and in two different shuffles), then for each: ``weightmapper map`` (mapping JSON) and
``weightmapper apply`` (converted safetensors), via the real CLI entry point. A batch job
over both sources runs through the plain pipeline too. The test compares the bytes.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import torch
import yaml

from weightmapper.cli.main import main as cli
from weightmapper.examples.transformer import OldTransformer

KWARGS = {"vocab_size": 64, "d_model": 32, "n_layer": 3, "n_head": 4, "max_len": 16}
TARGET = "weightmapper.examples.transformer:NewTransformer"


def sources(out: Path) -> dict[str, Path]:
    """Output dir → {label: checkpoint}: one state dict, keys in order and in two shuffles."""
    torch.manual_seed(0)
    sd = OldTransformer(**KWARGS).state_dict()
    orders = {"ordered": list(sd)}
    for label, seed in (("shuffled", 7), ("shuffled2", 11)):
        keys = list(sd)
        random.Random(seed).shuffle(keys)
        orders[label] = keys
    paths = {label: out / label / "model.pt" for label in orders}
    for label, order in orders.items():
        paths[label].parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: sd[k].clone() for k in order}, paths[label])
    return paths


def run(out: Path) -> None:
    """Output dir → mapping JSON and converted checkpoint per source, plus a batch job."""
    import json

    kwargs = json.dumps(KWARGS)
    for src in sources(out).values():
        d = src.parent
        common = ["--target", TARGET, "--target-kwargs", kwargs, "--quiet"]
        assert cli(["map", str(src), *common, "--out", str(d / "mapping.json")]) == 0
        assert cli(["apply", str(src), str(d / "mapping.json"), "--out", str(d / "out.safetensors"),
                    "--quiet"]) == 0  # fmt: skip
    job = {
        "name": "determinism",
        "store": str(out / "store"),
        "sources": [
            str(out / label / "model.pt") for label in ("ordered", "shuffled", "shuffled2")
        ],
        "target": {"module": TARGET, "kwargs": KWARGS},
        "output": {"dir": str(out / "batch"), "naming": "{index}.safetensors"},
        "runner": {"kind": "sequential"},
    }
    (out / "job.yaml").write_text(yaml.safe_dump(job))
    # 1 (a check failed) is an outcome to compare like any other, not a crash.
    assert cli(["migrate", str(out / "job.yaml"), "--no-prefect", "--json"]) in (0, 1)


if __name__ == "__main__":
    run(Path(sys.argv[1]))
