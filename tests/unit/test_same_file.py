"""One checkpoint file as both source and target: read once, mapped as two copies would be."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import weightmapper.checkpoint as checkpoint
from weightmapper.mapper import WeightMapper


def _write(path: Path) -> Path:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(4, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 8), nn.Linear(8, 2)
    )
    save_file({k: v.detach().clone() for k, v in net.state_dict().items()}, str(path))
    return path


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    seen: list[Path] = []
    real = checkpoint.open_checkpoint

    def counting(path, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real(path, **kwargs)

    monkeypatch.setattr(checkpoint, "open_checkpoint", counting)
    return seen


def test_same_file_is_read_once_and_maps_like_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "model.safetensors")
    copy = tmp_path / "copy" / "model.safetensors"
    copy.parent.mkdir()
    shutil.copyfile(path, copy)
    reads = _count_reads(monkeypatch)
    once = WeightMapper.from_checkpoint(path, path)
    assert reads == [path]
    twice = WeightMapper.from_checkpoint(path, copy)
    assert reads == [path, path, copy]
    a, b = once.suggest_mapping(), twice.suggest_mapping()
    assert a.to_json() == b.to_json()
    assert dict(a) == {k: k for k in a}
    assert once.target_path == path


def test_a_file_changed_while_read_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "model.safetensors")
    seen: list[Path] = []
    real = checkpoint.open_checkpoint

    def touching(p, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(Path(p))
        table = real(p, **kwargs)
        st = os.stat(path)  # written to while it was read: its mtime moves on
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        return table

    monkeypatch.setattr(checkpoint, "open_checkpoint", touching)
    WeightMapper.from_checkpoint(path, path)
    assert seen == [path, path]
