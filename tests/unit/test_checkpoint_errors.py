"""Every broken checkpoint gives one of our errors, never a raw traceback from a library."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.checkpoint import load_checkpoint_as_dict, open_checkpoint
from weightmapper.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    UnsafeCheckpointError,
)


def state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 16))
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def write_safetensors(d: Path) -> Path:
    save_file(state_dict(), str(d / "model.safetensors"))
    return d / "model.safetensors"


def write_zip_pickle(d: Path) -> Path:
    torch.save(state_dict(), d / "model.pt")
    return d / "model.pt"


def write_legacy_pickle(d: Path) -> Path:
    torch.save(state_dict(), d / "model.pth", _use_new_zipfile_serialization=False)
    return d / "model.pth"


def write_lightning(d: Path) -> Path:
    sd = {f"model.{k}": v for k, v in state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 1, "pytorch-lightning_version": "2.4"}, d / "a.ckpt")
    return d / "a.ckpt"


def write_index(d: Path, fmt: str, weight_map: dict[str, str] | None = None) -> Path:
    sd = state_dict()
    keys = list(sd)
    wm = {}
    ext = "safetensors" if fmt == "safetensors" else "bin"
    for i in range(2):
        shard = f"model-{i + 1}-of-2.{ext}"
        part = {k: sd[k] for k in keys[i::2]}
        if fmt == "safetensors":
            save_file(part, str(d / shard))
        else:
            torch.save(part, d / shard)
        wm.update(dict.fromkeys(part, shard))
    name = (
        "model.safetensors.index.json" if ext == "safetensors" else "pytorch_model.bin.index.json"
    )
    (d / name).write_text(json.dumps({"weight_map": weight_map if weight_map is not None else wm}))
    return d / name


WRITERS: dict[str, Callable[[Path], Path]] = {
    "safetensors": write_safetensors,
    "zip-pickle": write_zip_pickle,
    "legacy-pickle": write_legacy_pickle,
    "lightning": write_lightning,
}


def _truncate(path: Path, keep: float | int) -> None:
    data = path.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep
    path.write_bytes(data[:n])


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("keep", [0.5, 0.9, 12, 1])
def test_truncated_file_is_a_format_error(tmp_path: Path, fmt: str, keep: float | int) -> None:
    path = WRITERS[fmt](tmp_path)
    _truncate(path, keep)
    with pytest.raises(CheckpointFormatError) as info:
        load_checkpoint_as_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_corrupt_header_is_a_format_error(tmp_path: Path, fmt: str) -> None:
    path = WRITERS[fmt](tmp_path)
    data = bytearray(path.read_bytes())
    data[2:40] = b"\xff" * 38  # inside the magic / header / first zip entry
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointFormatError):
        load_checkpoint_as_dict(path)


def test_corrupt_zip_member_is_a_format_error(tmp_path: Path) -> None:
    path = write_zip_pickle(tmp_path)
    data = path.read_bytes()
    at = data.index(b"data.pkl") + 40  # inside the pickle bytes of data.pkl
    path.write_bytes(data[:at] + b"\x00\x13\x37" + data[at + 3 :])
    with pytest.raises(CheckpointFormatError):
        load_checkpoint_as_dict(path)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_truncated_shard_is_a_format_error(tmp_path: Path, fmt: str) -> None:
    index = write_index(tmp_path, fmt)
    shard = sorted(tmp_path.glob(f"*.{fmt}"))[1]
    _truncate(shard, 0.5)
    with pytest.raises(CheckpointFormatError):
        open_checkpoint(index)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_missing_shard_is_not_found(tmp_path: Path, fmt: str) -> None:
    index = write_index(tmp_path, fmt)
    missing = sorted(tmp_path.glob(f"*.{fmt}"))[0]
    missing.unlink()
    with pytest.raises(CheckpointNotFoundError) as info:
        open_checkpoint(index)
    assert missing.name in str(info.value)


def test_tensor_in_two_shard_files(tmp_path: Path) -> None:
    index = write_index(tmp_path, "safetensors")
    shards = sorted(tmp_path.glob("*.safetensors"))
    sd = state_dict()
    extra = {"0.weight": sd["0.weight"], "1.weight": sd["1.weight"]}
    save_file(extra, str(shards[1]))  # 0.weight now in both shards
    wm = json.loads(index.read_text())["weight_map"]
    wm["1.weight"] = shards[1].name
    index.write_text(json.dumps({"weight_map": wm}))
    with pytest.raises(CheckpointFormatError, match="two shards"):
        open_checkpoint(index)


def test_tensor_listed_twice_in_index(tmp_path: Path) -> None:
    index = write_index(tmp_path, "safetensors")
    text = index.read_text()
    dup = text.replace('"weight_map": {', '"weight_map": {"0.bias": "model-2-of-2.safetensors", ')
    index.write_text(dup)
    with pytest.raises(CheckpointFormatError, match="more than once"):
        open_checkpoint(index)


def test_index_names_tensor_its_shard_lacks(tmp_path: Path) -> None:
    index = write_index(tmp_path, "safetensors")
    data = json.loads(index.read_text())
    data["weight_map"]["ghost.weight"] = "model-1-of-2.safetensors"
    index.write_text(json.dumps(data))
    with pytest.raises(CheckpointFormatError, match=r"ghost\.weight"):
        open_checkpoint(index)


@pytest.mark.parametrize("shard", ["../../etc/passwd", "/etc/passwd", "sub/../../x.bin", "C:x"])
def test_index_path_escaping_its_directory(tmp_path: Path, shard: str) -> None:
    index = write_index(tmp_path, "safetensors", weight_map={"a": shard})
    with pytest.raises(CheckpointFormatError, match="outside"):
        open_checkpoint(index)


@pytest.mark.parametrize(
    "text",
    ["{not json", "[1, 2]", '{"weight_map": []}', '{"weight_map": {"a": 3}}', '{"weight_map": {}}'],
)
def test_bad_index_json(tmp_path: Path, text: str) -> None:
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(CheckpointFormatError):
        open_checkpoint(tmp_path / "model.safetensors.index.json")


def test_mixed_shard_formats(tmp_path: Path) -> None:
    sd = state_dict()
    save_file({"0.weight": sd["0.weight"]}, str(tmp_path / "a.safetensors"))
    torch.save({"0.bias": sd["0.bias"]}, tmp_path / "b.bin")
    index = tmp_path / "x.index.json"
    index.write_text(json.dumps({"weight_map": {"0.weight": "a.safetensors", "0.bias": "b.bin"}}))
    with pytest.raises(CheckpointFormatError, match="mixes"):
        open_checkpoint(index)


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        open_checkpoint(tmp_path / "nope.safetensors")


def test_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint"):
        open_checkpoint(tmp_path)


def test_ambiguous_directory(tmp_path: Path) -> None:
    torch.save(state_dict(), tmp_path / "a.pt")
    torch.save(state_dict(), tmp_path / "b.pt")
    with pytest.raises(CheckpointFormatError, match="several"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("content", [b"", b"hello, I am a text file\n", b"\x00" * 64])
def test_not_a_checkpoint(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(CheckpointFormatError):
        open_checkpoint(path)


def test_zip_that_is_not_torch(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "x.pt", "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(CheckpointFormatError, match=r"data\.pkl"):
        open_checkpoint(tmp_path / "x.pt")


@pytest.mark.parametrize(
    "obj", [[torch.zeros(2)], {"epoch": 3, "name": "x"}, {}, torch.zeros(3)], ids=str
)
def test_pickle_without_a_state_dict(tmp_path: Path, obj: object) -> None:
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(CheckpointFormatError):
        open_checkpoint(tmp_path / "x.pt")


def test_unknown_nested_key(tmp_path: Path) -> None:
    torch.save({"state_dict": state_dict()}, tmp_path / "x.pt")
    with pytest.raises(CheckpointFormatError, match="state_dict"):
        open_checkpoint(tmp_path / "x.pt", nested_key="ema")


def test_protocol_4_pickle_cannot_be_loaded_safely(tmp_path: Path) -> None:
    torch.save(state_dict(), tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(UnsafeCheckpointError, match="trusted=True"):
        open_checkpoint(tmp_path / "p4.pt")
    assert sorted(open_checkpoint(tmp_path / "p4.pt", trusted=True)) == sorted(state_dict())


@pytest.mark.parametrize(
    ("header", "data", "why"),
    [
        # two entries under one name: the lost entry leaves a gap in the data
        (
            '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
            '"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}',
            bytes(8),
            "starts at byte",
        ),
        ('{"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}', bytes(4), "span"),
        ('{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}', bytes(12), "covers"),
        ('{"a": {"dtype": "Q7", "shape": [1], "data_offsets": [0, 4]}}', bytes(4), "malformed"),
        (
            '{"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}',
            bytes(4),
            "none negative",
        ),
        ('{"__metadata__": {"k": 3}}', b"", "__metadata__"),
    ],
)
def test_inconsistent_safetensors_header(
    tmp_path: Path, header: str, data: bytes, why: str
) -> None:
    import struct

    blob = header.encode()
    (tmp_path / "x.safetensors").write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    with pytest.raises(CheckpointFormatError, match=why):
        open_checkpoint(tmp_path / "x.safetensors")


def test_a_lone_shard_of_several_is_an_incomplete_checkpoint(tmp_path: Path) -> None:
    """A directory with shard 1 of 2 and no index (a write that did not finish) is refused."""
    save_file({"w": torch.ones(2)}, str(tmp_path / "model-00001-of-00002.safetensors"))
    with pytest.raises(CheckpointFormatError, match="incomplete"):
        open_checkpoint(tmp_path)
    # The shard itself, named explicitly, still reads.
    assert list(open_checkpoint(tmp_path / "model-00001-of-00002.safetensors")) == ["w"]


def _safetensors(path: Path, header: str, data: bytes) -> Path:
    import struct

    blob = header.encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_safetensors_entries_listed_out_of_file_order_read_in_file_order(tmp_path: Path) -> None:
    header = (
        '{"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, '
        '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}'
    )
    table = open_checkpoint(_safetensors(tmp_path / "x.safetensors", header, bytes(8)))
    assert list(table) == ["a", "b"]


def test_safetensors_gap_names_the_tensor_after_it_in_file_order(tmp_path: Path) -> None:
    header = (
        '{"c": {"dtype": "F32", "shape": [1], "data_offsets": [12, 16]}, '
        '"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, '
        '"b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}'
    )
    with pytest.raises(CheckpointFormatError, match=r"tensor 'c' starts at byte 12, expected 8"):
        open_checkpoint(_safetensors(tmp_path / "x.safetensors", header, bytes(16)))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_tensor_with_an_empty_name_is_refused_when_read(tmp_path: Path, suffix: str) -> None:
    """No module can register a tensor without a name, and no mapping can name it: said when
    the checkpoint is read, not later as a malformed mapping."""
    state = {"": torch.ones(2), "a.weight": torch.ones(2)}
    path = tmp_path / f"m{suffix}"
    if suffix == ".pt":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    with pytest.raises(CheckpointFormatError, match="holds a tensor with an empty name"):
        open_checkpoint(path)


def test_no_tensors_where_a_state_dict_was_expected_says_what_to_pass(tmp_path: Path) -> None:
    torch.save({"epoch": 3}, tmp_path / "none.pt")
    with pytest.raises(CheckpointFormatError, match=r"nested_key='KEY'.*torch\.save\(ckpt"):
        open_checkpoint(tmp_path / "none.pt")
