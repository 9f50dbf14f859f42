"""Mistakes get exit 2 and one line saying what was found, what was expected, what to do;
a run that achieved nothing never exits 0.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from weightmapper.cli.main import main

pytestmark = pytest.mark.reliability

KIND = "bad input or dishonest success"
S = "weightmapper.examples.cnn:OldCNN"
T = "weightmapper.examples.cnn:RefactoredCNN"
K = '{"num_classes": 10, "width": 8}'


def _job(tmp_path: Path, store: str) -> Path:
    torch.save({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, tmp_path / "m.pt")
    job = tmp_path / "job.yaml"
    job.write_text(
        f"name: t\nstore: {store}\nrunner: {{kind: sequential}}\noutput: {{dir: out}}\n"
        "migrations:\n  - name: m\n    sources: [m.pt]\n"
        "    target: {module: 'torch.nn:Linear', kwargs: {in_features: 2, out_features: 2}}\n"
    )
    return job


def _one_line(err: str, *words: str) -> None:
    """stderr → checked: no traceback; its last line is the error (argparse prints usage first)."""
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert "error: " in last and (err.count("\n") == 1 or last.startswith("weightmapper ")), err
    for w in words:
        assert w in last, err


CASES: dict[str, tuple[list[str], tuple[str, ...]]] = {
    "--target-kwargs '[10]'": (
        ["map", S, "--source-kwargs", K, "--target", T, "--target-kwargs", "[10]"],
        ("must be a JSON object",)),
    "a target constructor that raises": (
        ["map", S, "--source-kwargs", K, "--target", T, "--target-kwargs", '{"num_classes": -5}'],
        ("building weightmapper.examples.cnn:RefactoredCNN", "failed", "--target-kwargs")),
    "a dummy input the forward rejects": (
        ["map", S, "--source-kwargs", K, "--target", T, "--target-kwargs", K,
         "--dummy-input", "1,5,7", "--verify"], ("rejected the dummy input", "--dummy-input")),
    "a huge --dummy-input": (
        ["map", S, "--source-kwargs", K, "--target", T, "--target-kwargs", K,
         "--dummy-input", "100000,3,1000,1000"], ("at most",)),
    "--min-coverage 2": (["map", S, "--target", T, "--min-coverage", "2"], ("from 0 to 1",)),
    "--max-workers -1": (["migrate", "job.yaml", "--max-workers", "-1"], ("positive integer",)),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_line(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally, monkeypatch
) -> None:
    argv, words = CASES[name]
    monkeypatch.chdir(tmp_path)
    _job(tmp_path, "store")
    with tally.attack(KIND):
        try:
            code = main([*argv, "--quiet"] if argv[0] == "map" else argv)
        except SystemExit as e:  # argparse rejects a flag's value itself
            code = e.code
        assert code == 2
        _one_line(capsys.readouterr().err, *words)


@pytest.mark.parametrize("prefect", [False, True], ids=["plain", "prefect"])
def test_a_store_that_is_a_file_is_one_error(
    prefect: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    with tally.attack(KIND):
        (tmp_path / "storefile").write_text("not a folder")
        job = _job(tmp_path, "storefile")
        assert main(["migrate", str(job), *([] if prefect else ["--no-prefect"])]) == 2
        _one_line(capsys.readouterr().err, "is a file", "store:")
        assert (tmp_path / "storefile").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_store_is_one_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    with tally.attack(KIND):
        (tmp_path / "ro").mkdir()
        (tmp_path / "ro").chmod(0o555)
        job = _job(tmp_path, "ro/store")
        assert main(["migrate", str(job), "--no-prefect"]) == 2
        _one_line(capsys.readouterr().err, "read-only")


def test_mapping_onto_an_unrelated_model_fails_and_applying_it_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    src = tmp_path / "cnn.pt"
    torch.save({"features.0.weight": torch.ones(8, 3, 3, 3), "features.0.bias": torch.ones(8)}, src)
    mapping = tmp_path / "mapping.json"
    with tally.attack(KIND):
        code = main(["map", str(src), "--target", "torch.nn:LSTM", "--target-kwargs",
                     '{"input_size": 3, "hidden_size": 5}', "--out", str(mapping), "--quiet"])  # fmt: skip
        assert code == 1
        err = capsys.readouterr().err
        assert "coverage 0.0%" in err and "--min-coverage 0" in err
        assert json.loads(mapping.read_text())["pairs"] == []
    with tally.attack(KIND):
        out = tmp_path / "out.safetensors"
        assert main(["apply", str(src), str(mapping), "--out", str(out), "--quiet"]) == 1
        assert "maps no tensors" in capsys.readouterr().err
        assert not out.exists()
    code = main(["map", str(src), "--target", "torch.nn:LSTM", "--target-kwargs",
                 '{"input_size": 3, "hidden_size": 5}', "--quiet", "--min-coverage", "0"])  # fmt: skip
    assert code == 0  # an explicit choice
