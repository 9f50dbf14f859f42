"""Determinism: the same job under PYTHONHASHSEED 0..3, and with shuffled keys, gives the same bytes.

``determinism_job.py`` runs in four child processes, one per hash seed. Each maps and
converts one source three times, with its keys in checkpoint order and in two different
shuffles, with the CLI, then runs all three through a batch job. Every artifact (mapping
JSON, converted checkpoint, batch output, batch report) must be byte-identical across hash
seeds; every shuffle must give a byte-identical mapping JSON; and a shuffled source must
give the same pairs, transforms and converted tensors as the ordered one. Only
``source_sha256`` in the output metadata may differ between sources: it is the hash of
different files. (Scores of the ordered source may differ from a shuffled one's: a
registration order is evidence, which a shuffle destroys; the engine then uses a
canonical natural order, the same for every shuffle.)
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.reliability

HERE = Path(__file__).resolve().parent
HASH_SEEDS = (0, 1, 2, 3)
ARTIFACTS = (
    "ordered/mapping.json",
    "shuffled/mapping.json",
    "shuffled2/mapping.json",
    "ordered/out.safetensors",
    "shuffled/out.safetensors",
    "shuffled2/out.safetensors",
    "batch/0.safetensors",
    "batch/1.safetensors",
    "batch/2.safetensors",
    "batch/0.report.json",
    "batch/1.report.json",
    "batch/2.report.json",
)


def _run(seed: int, root: Path) -> Path:
    out = root / f"seed{seed}"
    env = {**os.environ, "PYTHONHASHSEED": str(seed)}
    proc = subprocess.run(
        [sys.executable, str(HERE / "determinism_job.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=root,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("determinism")
    with ThreadPoolExecutor(max_workers=2) as ex:
        outs = list(ex.map(lambda s: _run(s, root), HASH_SEEDS))
    return dict(zip(HASH_SEEDS, outs, strict=True))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _without_source_hash(path: Path) -> tuple[dict[str, Any], bytes]:
    """safetensors file → (header with metadata.source_sha256 removed, data section)."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.get("__metadata__", {}).pop("source_sha256", None)
    return header, data[8 + n :]


@pytest.mark.parametrize("artifact", ARTIFACTS)
def test_byte_identical_across_hash_seeds(
    artifact: str, runs: dict[int, Path], tally: dict[str, dict[str, int]]
) -> None:
    digests = {seed: _digest(out / artifact) for seed, out in runs.items()}
    assert len(set(digests.values())) == 1, f"{artifact} differs between hash seeds: {digests}"
    tally["determinism: artifacts identical across PYTHONHASHSEED 0-3"][artifact] += 1


def test_every_shuffle_gives_the_same_mapping_bytes(runs: dict[int, Path]) -> None:
    out = runs[0]
    assert (out / "shuffled/mapping.json").read_bytes() == (
        out / "shuffled2/mapping.json"
    ).read_bytes()


def _decisions(mapping: dict[str, Any]) -> dict[str, Any]:
    """Mapping JSON → what it decides: pairs with transforms, multi pairs, unmatched keys."""
    return {
        "pairs": sorted(
            (p["source"], p["target"], json.dumps(p["transform"])) for p in mapping["pairs"]
        ),
        "multi": sorted(json.dumps(m, sort_keys=True) for m in mapping["multi"]),
        "unmatched": {
            side: sorted(u["name"] for u in keys) for side, keys in mapping["unmatched"].items()
        },
    }


def test_shuffled_keys_give_the_same_pairs(runs: dict[int, Path]) -> None:
    out = runs[0]
    ordered = json.loads((out / "ordered/mapping.json").read_text())
    shuffled = json.loads((out / "shuffled/mapping.json").read_text())
    assert _decisions(shuffled) == _decisions(ordered)
    assert len(ordered["pairs"]) > 0


@pytest.mark.parametrize(
    ("ordered", "shuffled"),
    [
        ("ordered/out.safetensors", "shuffled/out.safetensors"),
        ("ordered/out.safetensors", "shuffled2/out.safetensors"),
        ("batch/0.safetensors", "batch/1.safetensors"),
        ("batch/0.safetensors", "batch/2.safetensors"),
    ],
)
def test_shuffled_keys_give_the_same_checkpoint(
    ordered: str, shuffled: str, runs: dict[int, Path], tally: dict[str, dict[str, int]]
) -> None:
    out = runs[0]
    assert _without_source_hash(out / shuffled) == _without_source_hash(out / ordered)
    tally["determinism: shuffled-key sources giving identical output"][ordered] += 1
