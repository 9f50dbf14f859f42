"""`weightmapper inspect`: stable JSON, rich views, exit codes 0 / 1 / 2, no tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.cli.main import main
from weightmapper.doctor import inspect_checkpoint


def transformer_like() -> dict[str, torch.Tensor]:
    layers = nn.ModuleList(
        nn.ModuleDict({"attn": nn.Linear(8, 24), "mlp": nn.Linear(8, 8)}) for _ in range(10)
    )
    model = nn.ModuleDict(
        {"embed": nn.Embedding(20, 8), "layers": layers, "head": nn.Linear(8, 20)}
    )
    model["head"].weight = model["embed"].weight
    return model.state_dict()


@pytest.fixture
def ddp_checkpoint(tmp_path: Path) -> Path:
    sd = {f"module.{k}": v for k, v in transformer_like().items()}
    torch.save(sd, tmp_path / "ddp.pt")
    return tmp_path / "ddp.pt"


def test_json_report(ddp_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(ddp_checkpoint), "--json", "--depth", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    sd = transformer_like()
    assert report["format"] == "pickle" and report["safe"] is True
    assert report["tensor_count"] == len(sd)
    assert report["stripped_prefixes"] == ["module."]
    assert report["tied"] == [["embed.weight", "head.weight"]]
    unique = {id(v.untyped_storage()): v for v in sd.values()}  # tied counted once
    assert report["parameter_count"] == sum(v.numel() for v in unique.values())
    assert report["dtypes"] == {"float32": len(sd)}
    assert report["files"] == [
        {"name": "ddp.pt", "bytes": ddp_checkpoint.stat().st_size, "tensors": len(sd)}
    ]
    tree = report["tree"]
    assert tree["params"] == report["parameter_count"]  # the tied head counted once
    names = [c["name"] for c in tree["children"]]
    assert names == ["embed", "layers", "head"]
    layers = tree["children"][1]
    assert len(layers["children"]) == 10
    assert layers["children"][0]["children"] == []  # depth 2 stops above attn / mlp
    assert layers["params"] == 10 * (8 * 24 + 24 + 8 * 8 + 8)


def test_json_is_stable(ddp_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["inspect", str(ddp_checkpoint), "--json"])
    first = capsys.readouterr().out
    main(["inspect", str(ddp_checkpoint), "--json"])
    assert capsys.readouterr().out == first
    assert list(inspect_checkpoint(ddp_checkpoint))[:4] == ["version", "path", "format", "safe"]


def test_rich_view(ddp_checkpoint: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(ddp_checkpoint)]) == 0
    out = capsys.readouterr().out
    for text in ("pickle", "module.", "embed.weight, head.weight", "layers", "more numbered"):
        assert text in out, text


def test_sharded_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sd = {k: v.clone() for k, v in transformer_like().items()}
    keys = list(sd)
    weight_map = {}
    for i in range(2):
        name = f"model-{i}.safetensors"
        save_file({k: sd[k] for k in keys[i::2]}, str(tmp_path / name))
        weight_map.update(dict.fromkeys(keys[i::2], name))
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert main(["inspect", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "safetensors-sharded"
    assert [f["name"] for f in report["files"]] == ["model-0.safetensors", "model-1.safetensors"]
    assert sum(f["tensors"] for f in report["files"]) == len(sd)
    assert main(["inspect", str(tmp_path)]) == 0
    assert "model-1.safetensors" in capsys.readouterr().out


def test_missing_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_corrupt_file_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{trunc")
    assert main(["inspect", str(tmp_path / "bad.safetensors")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_bad_depth_is_usage_error(ddp_checkpoint: Path) -> None:
    with pytest.raises(SystemExit) as info:
        main(["inspect", str(ddp_checkpoint), "--depth", "-1"])
    assert info.value.code == 2


def test_trust_pickle_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save(nn.Linear(2, 2), tmp_path / "module.pt")  # needs torch.nn globals: refused
    assert main(["inspect", str(tmp_path / "module.pt")]) == 1
    assert "torch.nn.modules.linear.Linear" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "module.pt"), "--trust-pickle", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensor_count"] == 2
    assert "torch.nn.modules.linear.Linear" in report["unsafe_globals"]


def test_python_dash_m_entry_point(ddp_checkpoint: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "weightmapper", "inspect", str(ddp_checkpoint), "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["tensor_count"] == len(transformer_like())
