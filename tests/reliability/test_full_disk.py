"""Out of space: a conversion fails with a clear error and leaves no file behind.

A full disk is simulated with ``RLIMIT_FSIZE`` (writes past the cap fail with EFBIG, the
same error path as ENOSPC) in a child process: through the library, the CLI and a batch.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import kill_targets
import pytest
import yaml

from weightmapper.checkpoint import open_checkpoint

pytestmark = pytest.mark.reliability

CASES = [
    *[("model.safetensors", limit) for limit in (0, 4096, 1_000_000, 3_000_000, 6_000_000)],
    *[("sharded", limit) for limit in (0, 4096, 300_000, 700_000)],
    *[("model.pt", limit) for limit in (0, 4096, 3_000_000)],
]
"""(output, file-size cap): nothing at all, mid-header, mid-data, the last bytes of a ~6.3 MB
single file; for ~1 MB shards, caps that break the first shard and every later one; a
``torch.save`` file (whose writer hides the OSError behind a RuntimeError of its own)."""


@pytest.fixture(scope="module")
def ctx() -> Any:
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(kill_targets.PRELOAD)
    return context


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("full-disk")
    src = root / "source.safetensors"
    kill_targets.write_source(src)
    mapping = root / "mapping.json"
    mapping.write_text(kill_targets.mapping_for(list(open_checkpoint(src))).to_json())
    return src, mapping


def _leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob("*") if p.is_file()) if d.exists() else []


@pytest.mark.parametrize(("out_name", "limit"), CASES)
def test_library_conversion_on_a_full_disk(
    ctx: Any,
    source: tuple[Path, Path],
    tmp_path: Path,
    limit: int,
    out_name: str,
    tally: dict[str, dict[str, int]],
) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    report = tmp_path / "report.json"
    out = out_dir / out_name
    shard_size = 1_000_000 if out_name == "sharded" else 10**9  # sharded: a directory output
    args = (str(source[0]), str(source[1]), str(out), shard_size, limit, str(report))
    proc = ctx.Process(target=kill_targets.convert_on_full_disk, args=args)
    proc.start()
    proc.join(timeout=120)
    assert proc.exitcode == 0
    outcome = json.loads(report.read_text())
    assert outcome["raised"] == "OutputError", outcome
    assert "full" in outcome["message"] and "nothing was written" in outcome["message"]
    assert _leftovers(out_dir) == [], "a failed conversion left files behind"
    tally["full disk: conversions out of space"][f"library, {out_name}, cap {limit} B"] += 1


def test_cli_apply_on_a_full_disk(source: tuple[Path, Path], tmp_path: Path) -> None:
    def cap() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "weightmapper", "apply", str(source[0]), str(source[1])]
    proc = subprocess.run(
        [*cmd, "--out", str(out / "model.safetensors")],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "full" in proc.stderr
    assert _leftovers(out) == []


def test_batch_on_a_full_disk(
    ctx: Any, source: tuple[Path, Path], tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    target = tmp_path / "target.safetensors"
    kill_targets.write_source(target, seed=1)
    job = {
        "name": "full",
        "store": str(tmp_path / "store"),
        "sources": [str(source[0])],
        "target": {"checkpoint": str(target)},
        "output": {"dir": str(tmp_path / "out")},
        "runner": {"kind": "sequential"},
    }
    job_path = tmp_path / "job.yaml"
    job_path.write_text(yaml.safe_dump(job))
    report = tmp_path / "summary.json"
    proc = ctx.Process(
        target=kill_targets.batch_on_full_disk, args=(str(job_path), 1_000_000, str(report))
    )
    proc.start()
    proc.join(timeout=300)
    assert proc.exitcode == 0
    item = json.loads(report.read_text())["checkpoints"][0]
    assert item["status"] == "failed" and "full" in item["error"], item
    assert _leftovers(tmp_path / "out") == []
    temps = [p for p in (tmp_path / "store").rglob("*.tmp")]
    assert temps == [], f"temp files left in the store: {temps}"
    tally["full disk: conversions out of space"]["batch job"] += 1
