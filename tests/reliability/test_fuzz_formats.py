"""Fuzzed checkpoints: every mutated file of every format loads correctly or raises our error.

Each format is fuzzed in its own child process (``fuzz_worker.py``) under an address-space
cap and a per-input alarm, so a memory blow-up or a hang is a reported failure, not a stuck
CI job. The mutations are seeded: a failure names (format, seed, index) and the replay
command rebuilds that exact input.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from fuzz_seeds import FORMATS

from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import WeightMapperError

pytestmark = pytest.mark.reliability

HERE = Path(__file__).resolve().parent
INPUTS_PER_FORMAT = int(os.environ.get("WEIGHTMAPPER_FUZZ_INPUTS", "1500"))
"""7 formats x 1500 = 10,500 mutated inputs per run (plus the valid seeds)."""
FUZZ_SEED = int(os.environ.get("WEIGHTMAPPER_FUZZ_SEED", "0"))
WORKER_TIMEOUT_S = 600


def _run_worker(fmt: str, out_dir: Path) -> dict[str, Any]:
    out = out_dir / f"{fmt}.json"
    cmd = [sys.executable, str(HERE / "fuzz_worker.py"), fmt, str(INPUTS_PER_FORMAT)]
    cmd += [str(FUZZ_SEED), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if proc.returncode != 0 or not out.exists():
        current = out.with_name(out.name + ".current")
        last = current.read_text() if current.exists() else "unknown"
        return {
            "format": fmt,
            "crashed": f"worker exited with {proc.returncode} while trying {last}",
            "stderr": proc.stderr[-3000:],
        }
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Every format fuzzed, two worker processes at a time → {format: worker result}."""
    out_dir = tmp_path_factory.mktemp("fuzz")
    with ThreadPoolExecutor(max_workers=2) as ex:
        results = list(ex.map(lambda f: _run_worker(f, out_dir), FORMATS))
    return {r["format"]: r for r in results}


def _describe(failures: list[dict[str, str]]) -> str:
    lines = []
    for f in failures[:5]:
        replay = f"python {HERE / 'fuzz_worker.py'} --replay {f['format']} {FUZZ_SEED} {f['index']}"
        lines.append(f"[{f['label']}] {f['error']}\n{f['traceback']}\n  replay: {replay}")
    return f"{len(failures)} input(s) escaped our errors:\n" + "\n".join(lines)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_mutant_loads_or_raises_our_error(
    fmt: str, fuzz_results: dict[str, dict[str, Any]], tally: dict[str, dict[str, int]]
) -> None:
    result = fuzz_results[fmt]
    assert "crashed" not in result, f"{result['crashed']}\n{result['stderr']}"
    counts = result["counts"]
    tally["fuzz: mutated inputs per format"][fmt] += counts["inputs"]
    tally["fuzz: outcomes (all formats)"]["loaded and consistent"] += counts["loaded"]
    tally["fuzz: outcomes (all formats)"]["refused with a WeightMapperError"] += counts["refused"]
    tally["fuzz: outcomes (all formats)"]["escaped (bugs)"] += len(result["failures"])
    tally["fuzz: valid seed files"]["loaded exactly"] += counts["seeds_loaded"]
    tally["fuzz: valid seed files"]["refused"] += counts["seeds_refused"]
    assert counts["inputs"] == INPUTS_PER_FORMAT
    assert not result["failures"], _describe(result["failures"])
    # Valid files with bf16, fp8, bool, int, 0-d and zero-size tensors load exactly; torch's
    # legacy (pre-1.6) format cannot hold fp8, so its fp8 seeds may only be refused.
    refusable = 2 if fmt == "pt-legacy" else 0
    assert counts["seeds_refused"] <= refusable, counts
    # The corpus is not trivially rejected: some mutants still load, most are refused.
    assert counts["loaded"] > 0 and counts["refused"] > INPUTS_PER_FORMAT // 2


def _flag_data_pkl(data: bytes, offset: int, value: int) -> bytes:
    """torch zip bytes → the central-directory entry of data.pkl with one field overwritten.

    ``offset`` is the field's offset in the entry: 8 (general-purpose flags), 10 (method).
    """
    b = bytearray(data)
    at = b.find(b"PK\x01\x02")
    while at >= 0:
        (n,) = struct.unpack("<H", b[at + 28 : at + 30])
        if bytes(b[at + 46 : at + 46 + n]).endswith(b"data.pkl"):
            b[at + offset : at + offset + 2] = struct.pack("<H", value)
            return bytes(b)
        at = b.find(b"PK\x01\x02", at + 4)
    raise AssertionError("no data.pkl entry")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param(8, 0x0001, id="encrypted"),
        pytest.param(8, 0x0041, id="strong-encryption"),
        pytest.param(10, 99, id="unknown-compression"),
        pytest.param(10, 8, id="deflate-claimed-on-stored-data"),
    ],
)
def test_zip_member_flags_give_our_error(field: int, value: int, tmp_path: Path) -> None:
    """Fuzz finds, pinned: zipfile raises RuntimeError / NotImplementedError for these."""
    buf = io.BytesIO()
    torch.save({"w": torch.ones(2)}, buf)
    path = tmp_path / "model.pt"
    path.write_bytes(_flag_data_pkl(buf.getvalue(), field, value))
    with pytest.raises(WeightMapperError):
        open_checkpoint(path)
