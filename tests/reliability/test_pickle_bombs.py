"""Pickles that hide from the scanner or make torch allocate far more than the file holds.

Zip members are read as torch reads them (case-insensitively), and what a pickle would
allocate is bounded before torch sees it: allocating calls (``bytearray(n)``, a storage or
legacy tensor constructor with a size), storages claiming more elements than their data,
compressed members inflating far beyond their size. Each hostile file runs through
``weightmapper inspect`` with the address space allowed to grow by 512 MiB at most (the 30-byte
``bytearray(2e9)`` also in a fresh child process): it must exit 2 (or 1 for unsafe globals) with
one line and no traceback, never MemoryError.
"""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from capped import memory_cap, run_capped
from hostile import _torch_zip, as_state_dict, call, glob, text

from weightmapper.checkpoint import open_checkpoint
from weightmapper.cli.main import main
from weightmapper.errors import CheckpointFormatError, UnsafeCheckpointError
from weightmapper.pickle_safety import scan_file

pytestmark = pytest.mark.reliability

KIND = "pickle allocation bomb"


def _binint(n: int) -> bytes:
    """An int opcode: BININT for 32-bit values, LONG1 otherwise."""
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _tensor_pickle(numel: int, key: str = "0") -> bytes:
    """A state dict pickle {"w": tensor} whose storage claims ``numel`` float elements."""
    storage = (
        b"(" + text("storage") + glob("torch", "FloatStorage") + text(key) + text("cpu")
        + _binint(numel) + b"tQ"
    )  # fmt: skip
    tensor = call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage, b"K\x00", b"(K\x01t", b"(K\x01t", b"\x89", call(glob("collections", "OrderedDict")),
    )  # fmt: skip
    return b"\x80\x02}(" + text("w") + tensor + b"u."


def _bombs() -> dict[str, bytes]:
    """Name → file bytes of every allocation bomb (each small)."""
    padded = io.BytesIO()
    with zipfile.ZipFile(padded, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", _tensor_pickle(1) + b"\x00" * (300 << 20))
        zf.writestr("archive/data/0", b"\x00" * 4)
        zf.writestr("archive/version", b"3\n")
    return {
        "bytearray(2e9) in 30 bytes": b"\x80\x02" + glob("builtins", "bytearray")
        + _binint(2_000_000_000) + b"\x85R.",
        "bytearray in a state dict": as_state_dict(call(glob("builtins", "bytearray"),
                                                        _binint(2**33))),
        "FloatStorage(2**31)": as_state_dict(call(glob("torch", "FloatStorage"), _binint(2**31))),
        "legacy FloatTensor(2**16, 2**16)": as_state_dict(
            call(glob("torch", "FloatTensor"), _binint(2**16), _binint(2**16))
        ),
        "zip storage claiming 2**31 elements": _torch_zip(
            _tensor_pickle(2**31), extra={"data/0": b"\x00" * 4}
        ),
        "legacy storage claiming 2**31 elements": _tensor_pickle(2**31),
        "deflated data.pkl padded after STOP": padded.getvalue(),
    }  # fmt: skip


@pytest.mark.parametrize("name", list(_bombs()))
def test_allocation_bombs_are_refused_before_torch_allocates(
    name: str, tmp_path: Path, tally, capsys: pytest.CaptureFixture[str]
) -> None:
    with tally.attack(KIND):
        path = tmp_path / ("model.pt" if not name.startswith("bytearray(2e9)") else "tiny.pkl")
        path.write_bytes(_bombs()[name])
        with pytest.raises(CheckpointFormatError, match="allocate far more memory"):
            scan_file(path)
        with memory_cap():
            code = main(["inspect", str(path)])
        err = capsys.readouterr().err
        assert code == 2, err
        assert err.startswith("error: ") and "allocate far more memory" in err
        assert err.count("\n") == 1


def test_the_30_byte_bomb_in_a_fresh_process(tmp_path: Path, tally) -> None:
    with tally.attack(KIND):
        path = tmp_path / "tiny.pkl"
        path.write_bytes(_bombs()["bytearray(2e9) in 30 bytes"])
        proc = run_capped(["inspect", str(path)])
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
        assert proc.stderr.startswith("error: ") and "allocate far more memory" in proc.stderr


def test_the_30_byte_bomb_is_30_bytes() -> None:
    assert len(_bombs()["bytearray(2e9) in 30 bytes"]) == 30


def test_honest_checkpoints_pass_the_budget(tmp_path: Path) -> None:
    state = {"w": torch.randn(64, 32), "b": torch.arange(7), "h": torch.zeros(3, dtype=torch.half),
             "e": torch.empty(0), "s": torch.tensor(2.0)}  # fmt: skip
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for f in ("zip.pt", "legacy.pt"):
        scan = scan_file(tmp_path / f)
        assert scan.is_safe and not scan.bombs


@pytest.mark.parametrize("member", ["archive/DATA.PKL", "archive/Data.Pkl", "other/x.PKL"])
def test_a_pickle_member_in_any_letter_case_is_scanned_and_named(
    member: str, tmp_path: Path, tally, capsys: pytest.CaptureFixture[str]
) -> None:
    """torch finds ``archive/data.pkl`` case-insensitively: a second spelling must not hide."""
    with tally.attack("pickle member hidden by letter case"):
        buf = io.BytesIO()
        torch.save({"w": torch.ones(2)}, buf)
        with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as zf:
            members = {i.filename: zf.read(i) for i in zf.infolist()}
        evil = as_state_dict(call(glob("os", "system"), text("true")))
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
            for n, data in members.items():
                zf.writestr(n, data)
            zf.writestr(member, evil)
        path = tmp_path / "model.pt"
        path.write_bytes(out.getvalue())
        scan = scan_file(path)
        assert "os.system" in scan.unsafe and member in scan.members
        assert main(["inspect", str(path)]) == 1
        assert "os.system" in "".join(capsys.readouterr())
        with pytest.raises(UnsafeCheckpointError, match=member.replace(".", r"\.")):
            open_checkpoint(path)
