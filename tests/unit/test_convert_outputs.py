"""What a conversion leaves in its output folder: replaced layouts, old temp files, fsyncs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from weightmapper import atomic
from weightmapper.checkpoint import open_checkpoint
from weightmapper.convert import convert_checkpoint, load_converted, output_files
from weightmapper.errors import OutputError

# 16 tensors of 1 KiB: shard sizes below pick how many files the output has.
_SOURCE = {f"layer{i}.weight": torch.full((16, 16), float(i)) for i in range(16)}
_MAPPING = {k: "new." + k for k in _SOURCE}


def _convert(out: Path, shard_size: str, **kwargs) -> list[str]:
    report = convert_checkpoint(_SOURCE, _MAPPING, out, shard_size=shard_size, **kwargs)
    return [Path(f).name for f in report.files]


def _assert_loads_whole(out: Path) -> None:
    loaded = load_converted(out)
    assert sorted(loaded) == sorted(_MAPPING.values())
    for k, v in _SOURCE.items():
        assert torch.equal(loaded[_MAPPING[k]], v)
    assert sorted(open_checkpoint(out)) == sorted(_MAPPING.values())


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_force_with_fewer_shards_removes_the_old_extra_shards(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert len(_convert(out, "4KiB")) == 4
    (out / "config.json").write_text("{}")  # a user's file beside the weights
    new = _convert(out, "8KiB", overwrite=True)
    assert len(new) == 2
    assert _names(out) == sorted([*new, "config.json", "model.safetensors.index.json"])
    _assert_loads_whole(out)


def test_sharded_to_single_file_needs_force_then_drops_the_index(tmp_path: Path) -> None:
    out = tmp_path / "out"
    old = _convert(out, "4KiB")
    before = {n: (out / n).read_bytes() for n in _names(out)}
    # model.safetensors itself is new, but the old index would shadow it: refused.
    with pytest.raises(OutputError, match="already exists"):
        _convert(out, "1GB")
    assert {n: (out / n).read_bytes() for n in _names(out)} == before
    assert _convert(out, "1GB", overwrite=True) == ["model.safetensors"]
    assert _names(out) == ["model.safetensors"]
    assert [p.name for p in output_files(out)] == ["model.safetensors"]
    assert not set(old) & set(_names(out))
    _assert_loads_whole(out)


def test_single_file_to_shards_removes_the_single_file(tmp_path: Path) -> None:
    out = tmp_path / "weights.safetensors"
    _convert(out, "1GB")
    new = _convert(out, "4KiB", overwrite=True)
    assert _names(tmp_path) == sorted([*new, "weights.safetensors.index.json"])
    _assert_loads_whole(tmp_path / "weights.safetensors.index.json")


def test_files_the_old_index_names_outside_our_naming_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _convert(out, "4KiB")
    index = out / "model.safetensors.index.json"
    text = index.read_text().replace("model-00004-of-00004", "custom-part")
    (out / "model-00004-of-00004.safetensors").rename(out / "custom-part.safetensors")
    index.write_text(text)
    _convert(out, "1GB", overwrite=True)
    assert _names(out) == ["custom-part.safetensors", "model.safetensors"]


def test_temp_files_of_dead_writers_are_swept_live_ones_kept(tmp_path: Path) -> None:
    out = tmp_path / "model.safetensors"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(dead.stdout)
    host = atomic._HOST
    leftover = tmp_path / f".model.safetensors.{dead_pid}-{host}.abc123.tmp"
    live = tmp_path / f".model.safetensors.{os.getpid()}-{host}.def456.tmp"
    foreign = "000000" if host != "000000" else "111111"
    other_host = tmp_path / f".model.safetensors.{dead_pid}-{foreign}.x.tmp"
    other_file = tmp_path / f".other.safetensors.{dead_pid}-{host}.abc123.tmp"
    for p in (leftover, live, other_host, other_file):
        p.write_bytes(b"partial")
    _convert(out, "1GB")
    assert not leftover.exists()
    assert live.exists() and other_host.exists() and other_file.exists()


@pytest.mark.parametrize("durable", [True, False])
def test_fsync_only_when_durable_and_same_bytes_either_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durable: bool
) -> None:
    synced: set[str] = set()
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        name = Path(os.readlink(f"/proc/self/fd/{fd}")).name
        synced.add(name.split(f".{os.getpid()}-")[0].lstrip(".") if name.endswith(".tmp") else name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    files = _convert(tmp_path / "a", "4KiB", durable=durable)
    if durable:  # every shard and the index before their renames, then the folder
        assert synced == {*files, "model.safetensors.index.json", "a"}
    else:
        assert synced == set()
    monkeypatch.setattr(os, "fsync", real_fsync)
    _convert(tmp_path / "b", "4KiB", durable=not durable)
    for name in _names(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_failed_write_removes_every_temp_file(tmp_path: Path) -> None:
    out = tmp_path / "out"

    def fail(done: int, total: int) -> None:
        if done > total // 2:
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        convert_checkpoint(_SOURCE, _MAPPING, out, shard_size="4KiB", progress=fail)
    assert _names(out) == []


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_outputs_follow_the_umask_like_any_new_file(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        files = _convert(tmp_path / "out", "4KiB")
    finally:
        os.umask(old)
    for name in [*files, "model.safetensors.index.json"]:
        assert (tmp_path / "out" / name).stat().st_mode & 0o777 == mode, name


def test_reused_buffers_never_leak_one_tensor_into_the_next(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from weightmapper.result import MappingResult, MatchedPair, MultiPair
    from weightmapper.transforms import TransformSpec

    gen = torch.Generator().manual_seed(0)
    # Sizes go up and down, so the read buffer is reused for smaller tensors and regrown
    # for bigger ones; a split in between keeps its outputs pending across other tensors.
    shapes = [(64, 32), (8, 4), (128, 96), (16, 16), (96, 128), (3, 5)]
    src = {f"t{i}": torch.randn(*s, generator=gen) for i, s in enumerate(shapes)}
    src["fused"] = torch.randn(192, 64, generator=gen)  # bigger than the tensors after it
    src["half"] = torch.randn(40, 24, generator=gen).to(torch.bfloat16)
    save_file(src, tmp_path / "src.safetensors")
    transpose = TransformSpec("transpose", {"dim0": 0, "dim1": 1})
    pairs = [MatchedPair(f"t{i}", f"out.t{i}", 1.0, transform=transpose) for i in range(6)]
    pairs.append(MatchedPair("half", "out.half", 1.0, transform=transpose))
    split = TransformSpec("split", {"dim": 0, "sizes": [64, 64, 64]})
    targets = ("out.q", "out.k", "out.v")
    mapping = MappingResult(pairs, multi=[MultiPair(("fused",), targets, split, 1.0)])
    out = tmp_path / "out"
    convert_checkpoint(tmp_path / "src.safetensors", mapping, out, shard_size="20KB")
    loaded = load_converted(out)
    for i in range(6):
        assert torch.equal(loaded[f"out.t{i}"], src[f"t{i}"].t().contiguous()), i
    assert torch.equal(loaded["out.half"], src["half"].t().contiguous())
    for name, part in zip(targets, src["fused"].split(64), strict=True):
        assert torch.equal(loaded[name], part)


def test_work_folders_of_dead_runs_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    host = atomic._HOST
    stale = tmp_path / f".convert.{int(dead.stdout)}-{host}.abc.work"
    live = tmp_path / f".convert.{os.getpid()}-{host}.def.work"
    other_label = tmp_path / f".report.{int(dead.stdout)}-{host}.ghi.work"
    for d in (stale, live, other_label):
        d.mkdir()
        (d / "converted.safetensors").write_bytes(b"partial")
    work = atomic.private_workdir(tmp_path, "convert")
    assert work.is_dir() and work.parent == tmp_path and work not in (stale, live)
    assert not stale.exists()
    assert live.exists() and other_label.exists()
