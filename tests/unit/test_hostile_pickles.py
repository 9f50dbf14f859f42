"""Hostile pickles: real code-execution payloads are refused, named, and never run."""

from __future__ import annotations

import argparse
import builtins
import io
import json
import os
import pickle
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from weightmapper.checkpoint import load_checkpoint_as_dict, open_checkpoint
from weightmapper.cli.main import main
from weightmapper.doctor import inspect_checkpoint
from weightmapper.errors import UnsafeCheckpointError
from weightmapper.pickle_safety import UNRESOLVED, scan_file, scan_pickle_stream
from weightmapper.renamer import WeightRenamer


class OsSystem:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


class BuiltinsExec:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


class SubprocessCall:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (subprocess.call, (["touch", str(self.marker)],))


PAYLOADS = {
    "os.system": (OsSystem, {"posix.system", "os.system", "nt.system"}),
    "builtins.exec": (BuiltinsExec, {"builtins.exec"}),
    "subprocess.call": (SubprocessCall, {"subprocess.call"}),
}


def hostile_state(payload: Any) -> dict[str, Any]:
    return {"weight": torch.randn(3, 3), "bias": torch.zeros(3), "evil": payload}


@pytest.fixture(params=sorted(PAYLOADS))
def hostile(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, Path, set[str]]:
    cls, names = PAYLOADS[request.param]
    marker = tmp_path / "PWNED"
    path = tmp_path / "hostile.pt"
    torch.save(hostile_state(cls(marker)), path)
    return path, marker, names


def _check_refused(error: UnsafeCheckpointError, names: set[str]) -> None:
    assert set(error.globals) & names, error.globals
    assert any(n in str(error) for n in names)
    assert "trusted=True" in str(error) and "--trust-pickle" in str(error)


def test_payload_would_really_run(tmp_path: Path) -> None:
    """Control: the payloads are live; plain pickle.loads runs them (in a child process)."""
    marker = tmp_path / "PWNED"
    blob = pickle.dumps(OsSystem(marker))
    code = "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"
    subprocess.run([sys.executable, "-c", code], input=blob, check=True)
    assert marker.exists()


@pytest.mark.parametrize("load", [open_checkpoint, load_checkpoint_as_dict])
def test_checkpoint_readers_refuse(
    hostile: tuple[Path, Path, set[str]], load: Callable[[Path], object]
) -> None:
    path, marker, names = hostile
    with pytest.raises(UnsafeCheckpointError) as info:
        load(path)
    _check_refused(info.value, names)
    assert not marker.exists()


def test_renamer_refuses(hostile: tuple[Path, Path, set[str]]) -> None:
    path, marker, _names = hostile
    with pytest.raises(UnsafeCheckpointError):
        WeightRenamer(path)
    assert not marker.exists()


def test_inspect_reports_without_running(
    hostile: tuple[Path, Path, set[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    path, marker, names = hostile
    report = inspect_checkpoint(path)
    assert report["safe"] is False and set(report["unsafe_globals"]) & names
    assert main(["inspect", str(path), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert set(out["unsafe_globals"]) & names
    assert main(["inspect", str(path)]) == 1
    assert not marker.exists()


def test_legacy_format_payload(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save(
        hostile_state(OsSystem(marker)), tmp_path / "old.pt", _use_new_zipfile_serialization=False
    )
    with pytest.raises(UnsafeCheckpointError) as info:
        open_checkpoint(tmp_path / "old.pt")
    _check_refused(info.value, PAYLOADS["os.system"][1])
    assert not marker.exists()


def test_protocol_4_stack_global_payload(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save(hostile_state(SubprocessCall(marker)), tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError) as info:
        open_checkpoint(tmp_path / "p4.pt")
    assert "subprocess.call" in info.value.globals
    assert not marker.exists()


def test_payload_hidden_in_lightning_hyper_parameters(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    ckpt = {
        "state_dict": {"model.w": torch.zeros(2)},
        "pytorch-lightning_version": "2.4",
        "hyper_parameters": {"cfg": BuiltinsExec(marker)},
    }
    torch.save(ckpt, tmp_path / "x.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec"):
        open_checkpoint(tmp_path / "x.ckpt")
    assert not marker.exists()


def test_payload_hidden_in_a_namespace_of_hyper_parameters(tmp_path: Path) -> None:
    """A Namespace is rebuilt without trust, but what it holds is checked like the rest."""
    marker = tmp_path / "PWNED"
    ckpt = {
        "state_dict": {"model.w": torch.zeros(2)},
        "pytorch-lightning_version": "1.9",
        "hyper_parameters": argparse.Namespace(lr=0.1, cfg=BuiltinsExec(marker)),
    }
    torch.save(ckpt, tmp_path / "x.ckpt")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.exec") as caught:
        open_checkpoint(tmp_path / "x.ckpt")
    assert "argparse.Namespace" not in caught.value.globals
    assert not marker.exists()


def test_payload_in_one_shard_of_many(tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    torch.save({"a": torch.zeros(2)}, tmp_path / "s1.bin")
    torch.save({"b": torch.zeros(2), "evil": OsSystem(marker)}, tmp_path / "s2.bin")
    index = tmp_path / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"weight_map": {"a": "s1.bin", "b": "s2.bin"}}))
    with pytest.raises(UnsafeCheckpointError) as info:
        open_checkpoint(index)
    assert "s2.bin" in str(info.value) and "s1.bin" not in str(info.value)
    report = inspect_checkpoint(tmp_path)
    assert report["files"][0]["unsafe_globals"] == []
    assert report["files"][1]["unsafe_globals"]
    assert not marker.exists()


def test_inst_opcode_is_seen() -> None:
    # protocol 0: INST pushes an instance of module.name called with the marked args
    blob = b"(S'touch x'\nios\nsystem\n."
    assert scan_pickle_stream(blob) == {"os.system"}


def test_stack_global_from_memo_is_resolved() -> None:
    blob = pickle.dumps(OsSystem(Path("x")), protocol=4)
    assert {"posix.system", "os.system", "nt.system"} & scan_pickle_stream(blob)


def test_stack_global_with_computed_operands_is_refused() -> None:
    # STACK_GLOBAL whose operands are not plain string constants: cannot be resolved
    blob = b"\x80\x04N)\x93."  # NONE, EMPTY_TUPLE, STACK_GLOBAL, STOP
    assert scan_pickle_stream(blob) == {UNRESOLVED}


def test_scan_of_clean_checkpoint_is_safe(tmp_path: Path) -> None:
    torch.save({"w": torch.zeros(2, 2)}, tmp_path / "ok.pt")
    scan = scan_file(tmp_path / "ok.pt")
    assert scan.is_safe and scan.kind == "zip"
    assert "torch._utils._rebuild_tensor_v2" in scan.globals


def test_torchscript_archive_needs_trust(tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    (tmp_path / "ts.pt").write_bytes(buf.getvalue())
    with pytest.raises(UnsafeCheckpointError, match="TorchScript"):
        open_checkpoint(tmp_path / "ts.pt")
    table = open_checkpoint(tmp_path / "ts.pt", trusted=True)
    assert table.format == "torchscript" and sorted(table) == ["bias", "weight"]


def test_duplicate_data_pkl_cannot_hide_a_payload(tmp_path: Path) -> None:
    import warnings
    import zipfile

    marker = tmp_path / "PWNED"
    torch.save(hostile_state(OsSystem(marker)), tmp_path / "bad.pt")
    torch.save({"weight": torch.zeros(2)}, tmp_path / "good.pt")
    with zipfile.ZipFile(tmp_path / "bad.pt") as bad:
        evil = next(bad.read(n) for n in bad.namelist() if n.endswith("/data.pkl"))
    with (
        zipfile.ZipFile(tmp_path / "good.pt") as good,
        zipfile.ZipFile(tmp_path / "mixed.pt", "w") as out,
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
        prefix = good.namelist()[0].split("/")[0]
        out.writestr(f"{prefix}/data.pkl", evil)
        for info in good.infolist():
            out.writestr(info, good.read(info))
    with pytest.raises(UnsafeCheckpointError) as info:
        open_checkpoint(tmp_path / "mixed.pt")
    assert set(info.value.globals) & PAYLOADS["os.system"][1]
    assert not marker.exists()
