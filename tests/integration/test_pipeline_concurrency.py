"""Two `weightmapper migrate` processes over one job at once: no duplicated work, same outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_jobs import cnn_job_data, write_job_file
from weightmapper.examples.generate import ensure_example_checkpoints


def _job(root: Path) -> Path:
    ensure_example_checkpoints(root / "ckpts", per_family=3)
    job = cnn_job_data(
        dummy_input={"shape": [1, 3, 16, 16]},
        mapper={"threshold": 0.5},
        output={"dir": "out", "naming": "{name}.safetensors"},
    )
    del job["examples"]  # generated above, once, before the two processes race for it
    return write_job_file(root, job, run=" --no-prefect")


def _migrate(job: Path) -> subprocess.Popen[str]:
    code = "import sys; from weightmapper.cli.main import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen(
        [sys.executable, "-c", code, "migrate", str(job), "--no-prefect", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.integration
def test_two_processes_share_work_and_agree(tmp_path: Path) -> None:
    job = _job(tmp_path / "shared")
    procs = [_migrate(job), _migrate(job)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    a, b = (json.loads(o[0]) for o in outs)
    for x, y in zip(a["checkpoints"], b["checkpoints"], strict=True):
        assert x["status"] == y["status"]
        for sx, sy in zip(x["stages"], y["stages"], strict=True):
            if sx["name"] != "export":
                assert sx["cached"] or sy["cached"], (x["source"], sx["name"])
    assert [c["status"] for c in a["checkpoints"]] == ["ok"] * 3

    single_job = _job(tmp_path / "single")
    single = _migrate(single_job)
    out, _ = single.communicate(timeout=300)
    s = json.loads(out)
    for x, y in zip(a["checkpoints"], s["checkpoints"], strict=True):
        assert Path(x["output"]).read_bytes() == Path(y["output"]).read_bytes()
        assert Path(x["report"]).read_bytes() == Path(y["report"]).read_bytes()
