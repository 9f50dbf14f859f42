"""Untrusted paths in YAML jobs: a job cannot write outside its output directory.

Output names come from ``output.naming`` filled with the migration name and each source's
file name. A pattern or a name that climbs out (``..``, an absolute path) must be refused
with a ConfigError when the job is loaded, before any stage runs or any file is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from weightmapper.cli.main import main
from weightmapper.errors import ConfigError
from weightmapper.pipeline.batch import plan_items
from weightmapper.pipeline.config import load_job

pytestmark = pytest.mark.reliability

ESCAPING_NAMINGS = (
    "../{stem}.safetensors",
    "../../../../../../tmp/{stem}.safetensors",
    "{migration}/../../{stem}.safetensors",
    "sub/../../{stem}.safetensors",
    "/tmp/{stem}.safetensors",
    "..\\{stem}.safetensors",
)
SAFE_NAMINGS = (
    "{migration}/{stem}.safetensors",
    "a/b/{index}-{name}.safetensors",
    "{stem}..v2.safetensors",
    "./{stem}.safetensors",
)


def _write_job(root: Path, **overrides: Any) -> Path:
    ckpt = root / "ckpts" / "model.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.ones(2, 2), "bias": torch.zeros(2)}, ckpt)
    job: dict[str, Any] = {
        "name": "paths",
        "store": "store",
        "sources": ["../ckpts/*.pt"],
        "target": {"module": "torch.nn:Linear", "kwargs": {"in_features": 2, "out_features": 2}},
        "output": {"dir": "out", "naming": "{migration}/{stem}.safetensors"},
        "runner": {"kind": "sequential"},
    }
    for key, value in overrides.items():
        if key == "naming":
            job["output"]["naming"] = value
        else:
            job[key] = value
    path = root / "jobs" / "job.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(job))
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("naming", ESCAPING_NAMINGS)
def test_escaping_naming_is_refused_at_load(
    naming: str, tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_job(_write_job(tmp_path, naming=naming))
    assert "naming" in str(info.value)
    tally["config paths: escaping jobs refused before any work"]["output.naming"] += 1


def test_escaping_migration_name_is_refused_at_load(
    tmp_path: Path, tally: dict[str, dict[str, int]]
) -> None:
    with pytest.raises(ConfigError) as info:
        load_job(_write_job(tmp_path, name=".."))
    assert "name" in str(info.value)
    tally["config paths: escaping jobs refused before any work"]["migration name '..'"] += 1


@pytest.mark.parametrize("naming", SAFE_NAMINGS)
def test_names_that_stay_inside_are_accepted(naming: str, tmp_path: Path) -> None:
    job = load_job(_write_job(tmp_path, naming=naming))
    out_dir = job.migrations[0].output.dir
    for item in plan_items(job):
        assert item.output.resolve().is_relative_to(out_dir.resolve())


def test_source_named_dotdot_cannot_climb_out(tmp_path: Path) -> None:
    """A source directory reached as ``.../sub/..`` has the file name ``..``: {stem} = ``..``."""
    sub = tmp_path / "ckpts" / "sub"
    sub.mkdir(parents=True)
    job_path = _write_job(tmp_path, naming="{stem}/model.safetensors")
    data = yaml.safe_load(job_path.read_text())
    data["sources"] = [f"{sub}/.."]  # absolute, exists, a directory holding model.pt
    job_path.write_text(yaml.safe_dump(data))
    try:
        job = load_job(job_path)
        items = plan_items(job)
    except ConfigError:
        return  # refused while loading or planning: no stage ran
    out_dir = job.migrations[0].output.dir.resolve()
    for item in items:
        escapes = not item.output.resolve().is_relative_to(out_dir)
        assert not escapes or item.problem, f"{item.output} escapes {out_dir} and would be written"


def test_cli_refuses_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally: dict[str, dict[str, int]]
) -> None:
    job = _write_job(tmp_path, naming="../../{stem}.safetensors")
    before = _files(tmp_path)
    code = main(["migrate", str(job), "--no-prefect"])
    _out, err = capsys.readouterr()
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert _files(tmp_path) == before, "files were written before the job was refused"
    assert not (tmp_path / "jobs" / "store").exists() and not (tmp_path / "jobs" / "out").exists()
    tally["config paths: escaping jobs refused before any work"]["CLI migrate"] += 1


def test_an_output_name_too_long_for_the_file_system_is_said_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A long checkpoint name fills {stem}: the output (and the temporary file written beside
    it) would exceed a file name's 255 bytes, so the item fails when planned, not at export."""
    job_path = _write_job(tmp_path)
    long = tmp_path / "ckpts" / ("é" * 110 + ".pt")  # 220 bytes in UTF-8: too long with .tmp
    (tmp_path / "ckpts" / "model.pt").rename(long)
    items = plan_items(load_job(job_path))
    assert len(items) == 1 and items[0].problem is not None
    assert "at most 255 bytes" in items[0].problem
    code = main(["migrate", str(job_path), "--no-prefect"])
    out, err = capsys.readouterr()
    assert code != 0 and "Traceback" not in out + err
    assert "at most 255 bytes" in out + err
    assert not (tmp_path / "jobs" / "out").exists() or not _files(tmp_path / "jobs" / "out")
