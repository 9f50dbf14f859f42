"""`weightmapper migrate`: the plain-Python path end to end, JSON and table summaries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline_jobs import cnn_job_data, write_job_file
from weightmapper.cli.main import main


def write_job(tmp_path: Path, **extra: object) -> Path:
    job = cnn_job_data(
        dummy_input={"shape": [1, 3, 16, 16]},
        mapper={"threshold": 0.5},
        output={"dir": "out"},
        **extra,
    )
    return write_job_file(tmp_path, job)


def test_migrate_json_reports_each_stage_cached_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path)
    assert main(["migrate", str(job), "--no-prefect", "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["migrate", str(job), "--no-prefect", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert first["ok"] and second["ok"]
    assert len(second["checkpoints"]) == 3
    for ckpt in second["checkpoints"]:
        assert ckpt["validation"] == "passed" and ckpt["functional"] == "passed"
        assert Path(ckpt["output"]).is_file()
        assert ckpt["output"].startswith(str(tmp_path / "out" / "job"))
        assert all(isinstance(s["cached"], bool) and s["cached"] for s in ckpt["stages"])
    assert any(not s["cached"] for c in first["checkpoints"] for s in c["stages"])


def test_migrate_table_and_threshold_override(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path)
    assert main(["migrate", str(job), "--no-prefect"]) == 0
    out = capsys.readouterr().out
    assert "old_cnn_seed0.pt" in out and "passed" in out and "3/3 ok" in out
    assert main(["migrate", str(job), "--no-prefect", "--threshold", "0.55"]) == 0
    out = capsys.readouterr().out
    assert "ran assign" in out


def test_migrate_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("# bad\nsources: []\nrunner: {kind: spark}\n")
    assert main(["migrate", str(bad), "--no-prefect"]) == 2
    err = capsys.readouterr().err
    assert "runner.kind" in err and "sources" in err and "target" in err
    job = write_job(tmp_path)
    (tmp_path / "ckpts" / "cnn").mkdir(parents=True)
    (tmp_path / "ckpts" / "cnn" / "bad.pt").write_bytes(b"not a checkpoint")
    assert main(["migrate", str(job), "--no-prefect"]) == 1
    out = capsys.readouterr().out
    assert "failed at load" in out and "bad.pt" in out


def test_the_core_and_the_cli_do_not_import_prefect() -> None:
    import subprocess
    import sys

    code = (
        "import sys, weightmapper.pipeline.batch, weightmapper.pipeline.stages, "
        "weightmapper.cli.migrate, weightmapper.cli.main; "
        "weightmapper.cli.main.build_parser(); "
        "sys.exit(1 if 'prefect' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
