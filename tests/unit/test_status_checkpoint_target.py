"""A mapping onto a checkpoint says what would prove it: the target as a module, not a file."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.examples.cnn import OldCNN, RefactoredCNN
from weightmapper.result import CHECKPOINT_TARGET_HINT, PROVE_HINT
from weightmapper.sanitize import md_text


def _save(module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def test_a_checkpoint_target_asks_for_the_target_module(tmp_path: Path, capsys) -> None:
    old = _save(OldCNN(num_classes=10, width=8), tmp_path / "old.safetensors")
    new = _save(RefactoredCNN(num_classes=10, width=8), tmp_path / "new.safetensors")
    files = {n: tmp_path / n for n in ("mapping.json", "report.json", "report.html", "report.md")}
    code = main(
        ["map", str(old), "--target", str(new), "--max-rows", "0",
         "--out", str(files["mapping.json"]), "--report", str(files["report.json"]),
         "--html", str(files["report.html"]), "--markdown", str(files["report.md"])]
    )  # fmt: skip
    assert code == 0
    # The summary panel wraps the status line: compare words, without the panel's borders.
    terminal = " ".join(w for w in capsys.readouterr().out.split() if w != "│")
    assert CHECKPOINT_TARGET_HINT in terminal
    assert PROVE_HINT not in terminal.replace(CHECKPOINT_TARGET_HINT, "")
    for name in ("mapping.json", "report.json"):
        status = json.loads(files[name].read_text())["status"]
        assert status["state"] == "loads_not_proven"
        assert status["detail"] == f"outputs not compared ({CHECKPOINT_TARGET_HINT})"
    assert CHECKPOINT_TARGET_HINT in files["report.html"].read_text()
    assert md_text(CHECKPOINT_TARGET_HINT) in files["report.md"].read_text()


def test_a_module_target_still_asks_for_the_source_module() -> None:
    from weightmapper import WeightMapper

    result = WeightMapper(OldCNN(width=8), RefactoredCNN(width=8)).suggest_mapping()
    assert result.to_dict()["status"]["detail"] == f"outputs not compared ({PROVE_HINT})"
