"""open_checkpoint reads every format lazily and cleans keys in one place."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from tiny_nets import TiedLM
from weightmapper.checkpoint import (
    TensorTable,
    load_checkpoint_as_dict,
    open_checkpoint,
    strip_wrapper_prefixes,
    suggest_prefix,
)


class TinyNet(nn.Module):
    """Two blocks plus a BatchNorm, so buffers and int64 tensors appear too."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.norm = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(x)))


@pytest.fixture
def net() -> TinyNet:
    return TinyNet().eval()


def write_sharded_safetensors(sd: dict[str, torch.Tensor], d: Path, n: int = 2) -> Path:
    keys = list(sd)
    weight_map = {}
    for i in range(n):
        shard = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = {k: sd[k].contiguous() for k in keys[i::n]}
        save_file(part, str(d / shard))
        weight_map.update(dict.fromkeys(part, shard))
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return index


def write_sharded_bin(sd: dict[str, torch.Tensor], d: Path, n: int = 2) -> Path:
    keys = list(sd)
    weight_map = {}
    for i in range(n):
        shard = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
        part = {k: sd[k] for k in keys[i::n]}
        torch.save(part, d / shard)
        weight_map.update(dict.fromkeys(part, shard))
    index = d / "pytorch_model.bin.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index


def assert_same_tensors(
    table: TensorTable, sd: dict[str, torch.Tensor], *, same_order: bool = True
) -> None:
    assert (list(table) if same_order else sorted(table)) == (
        list(sd) if same_order else sorted(sd)
    )
    for k, t in sd.items():
        info = table[k]
        assert info.shape == tuple(t.shape)
        assert info.dtype == str(t.dtype).removeprefix("torch.")
        assert info.nbytes == t.numel() * t.element_size()
        assert info.file is not None and Path(info.file).exists()
        torch.testing.assert_close(table.load(k), t, rtol=0, atol=0)


def test_plain_pickle(tmp_path: Path, net: TinyNet) -> None:
    sd = net.state_dict()
    torch.save(sd, tmp_path / "w.pt")
    table = open_checkpoint(tmp_path / "w.pt")
    assert table.format == "pickle"
    assert table.files == [tmp_path / "w.pt"]
    assert table.stripped_prefixes == [] and table.suggested_prefix is None
    assert table["norm.num_batches_tracked"].dtype == "int64"
    assert table.total_bytes == sum(t.numel() * t.element_size() for t in sd.values())
    assert_same_tensors(table, sd)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_pickle_is_memory_mapped(tmp_path: Path, net: TinyNet) -> None:
    path = tmp_path / "w.pt"
    torch.save(net.state_dict(), path)
    table = open_checkpoint(path)
    ptr = table.load("head.weight").data_ptr()
    # the tensor's bytes live inside a mapping of the checkpoint file, not a heap copy
    mapped = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5] == str(path):
            lo, hi = (int(x, 16) for x in fields[0].split("-"))
            mapped.append(lo <= ptr < hi)
    assert any(mapped)


def test_legacy_pickle_without_zip(tmp_path: Path, net: TinyNet) -> None:
    sd = net.state_dict()
    torch.save(sd, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    table = open_checkpoint(tmp_path / "old.pth")
    assert table.format == "pickle"
    assert_same_tensors(table, sd)


def test_lightning_checkpoint_with_namespace_hyper_parameters(tmp_path: Path, net: TinyNet) -> None:
    """Older Lightning and many scripts store hyperparameters as an argparse.Namespace: a bag
    of attributes that runs no code, so it loads without trust."""
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    ckpt = {
        "state_dict": sd,
        "pytorch-lightning_version": "1.9.5",
        "hyper_parameters": argparse.Namespace(lr=3e-4, layers=[8, 8]),
        "hparams_name": "hparams",
    }
    torch.save(ckpt, tmp_path / "last.ckpt")
    table = open_checkpoint(tmp_path / "last.ckpt")
    assert table.format == "lightning" and list(table) == list(sd)
    assert "lr=0.0003" in json.dumps(table.metadata["lightning"]["hyper_parameters"])
    assert_same_tensors(table, sd)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_nested_state_dict(tmp_path: Path, net: TinyNet, key: str) -> None:
    sd = net.state_dict()
    torch.save({key: sd, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "c.pt")
    table = open_checkpoint(tmp_path / "c.pt")
    assert table.metadata["nested_key"] == key
    assert table.metadata["extras"]["epoch"] == 7
    assert_same_tensors(table, sd)


def test_deeply_nested_and_explicit_key(tmp_path: Path, net: TinyNet) -> None:
    sd = net.state_dict()
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"model": {"state_dict": sd}, "model_ema": ema}, tmp_path / "c.pt")
    table = open_checkpoint(tmp_path / "c.pt")
    assert table.metadata["nested_key"] == "model/state_dict"
    assert table.metadata["ema_keys"] == ["model_ema"]
    assert_same_tensors(table, sd)
    ema_table = open_checkpoint(tmp_path / "c.pt", nested_key="model_ema")
    assert_same_tensors(ema_table, ema)


def test_lightning_checkpoint(tmp_path: Path, net: TinyNet) -> None:
    sd = {f"model.{k}": v for k, v in net.state_dict().items()}
    ckpt = {
        "state_dict": sd,
        "epoch": 9,
        "global_step": 1234,
        "pytorch-lightning_version": "2.4.0",
        "hyper_parameters": {"lr": 3e-4, "layers": [8, 8]},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(8, 4)}}}],
    }
    torch.save(ckpt, tmp_path / "epoch=9.ckpt")
    table = open_checkpoint(tmp_path / "epoch=9.ckpt")
    assert table.format == "lightning"
    assert table.suggested_prefix == "model."
    assert list(table) == list(sd)  # offered, not silently removed
    meta = table.metadata["lightning"]
    assert meta["epoch"] == 9 and meta["global_step"] == 1234
    assert meta["hyper_parameters"] == {"lr": 3e-4, "layers": [8, 8]}
    assert "Tensor(shape=[8, 4]" in json.dumps(meta["optimizer_states"])
    json.dumps(table.metadata)  # JSON-ready
    assert_same_tensors(table, sd)


@pytest.mark.parametrize(
    ("wrap", "prefix"), [(nn.DataParallel, "module."), (torch.compile, "_orig_mod.")]
)
def test_wrapper_prefix_is_stripped(
    tmp_path: Path, net: TinyNet, wrap: Callable[[nn.Module], nn.Module], prefix: str
) -> None:
    wrapped = wrap(net).state_dict()
    assert all(k.startswith(prefix) for k in wrapped)
    torch.save(wrapped, tmp_path / "wrapped.pt")
    table = open_checkpoint(tmp_path / "wrapped.pt")
    assert table.stripped_prefixes == [prefix]
    assert list(table) == list(net.state_dict())
    assert_same_tensors(table, net.state_dict())
    assert table.original_name("head.weight") == f"{prefix}head.weight"
    raw = open_checkpoint(tmp_path / "wrapped.pt", strip_prefixes=False)
    assert list(raw) == list(wrapped) and raw.stripped_prefixes == []


def test_strip_wrapper_prefixes_rules() -> None:
    names, stripped = strip_wrapper_prefixes(["module._orig_mod.a.w", "module._orig_mod.b.w"])
    assert names == ["a.w", "b.w"] and stripped == ["module.", "_orig_mod."]
    names, stripped = strip_wrapper_prefixes(["enc._orig_mod.l.w", "head.w"])
    assert names == ["enc.l.w", "head.w"] and stripped == ["_orig_mod."]
    # not every key wrapped: leave all alone
    assert strip_wrapper_prefixes(["module.a", "b"]) == (["module.a", "b"], [])
    # stripping the infix would merge two keys: refuse
    assert strip_wrapper_prefixes(["x._orig_mod.w", "x.w"]) == (["x._orig_mod.w", "x.w"], [])


def test_suggest_prefix_rules() -> None:
    assert suggest_prefix(["model.enc.w", "model.head.b"]) == "model."
    assert suggest_prefix(["fc.weight", "fc.bias"]) is None
    assert suggest_prefix(["enc.w", "head.w"]) is None
    assert suggest_prefix([]) is None


def test_tied_pickle(tmp_path: Path) -> None:
    model = TiedLM()
    torch.save(model.state_dict(), tmp_path / "lm.pt")
    table = open_checkpoint(tmp_path / "lm.pt")
    assert table.tied == [("embed.weight", "lm_head.weight")]
    assert table.total_bytes == sum(
        t.numel() * t.element_size() for k, t in model.state_dict().items() if k != "lm_head.weight"
    )
    sd = table.to_state_dict()
    assert sd["embed.weight"].data_ptr() == sd["lm_head.weight"].data_ptr()


def test_single_safetensors_reads_header_only(tmp_path: Path, net: TinyNet) -> None:
    sd = {
        k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in net.state_dict().items()
    }
    save_file(sd, str(tmp_path / "model.safetensors"), metadata={"format": "pt", "note": "x"})
    table = open_checkpoint(tmp_path / "model.safetensors")
    assert table.format == "safetensors"
    assert table.metadata["safetensors"] == {"format": "pt", "note": "x"}
    assert table["head.weight"].dtype == "bfloat16"
    assert_same_tensors(table, sd, same_order=False)  # safetensors orders by dtype and name


def test_safetensors_alias_metadata_restores_tie(tmp_path: Path) -> None:
    sd = TiedLM().state_dict()
    kept = {k: v.contiguous() for k, v in sd.items() if k != "lm_head.weight"}
    save_file(kept, str(tmp_path / "lm.safetensors"), metadata={"lm_head.weight": "embed.weight"})
    table = open_checkpoint(tmp_path / "lm.safetensors")
    assert "lm_head.weight" in table
    assert table.tied == [("embed.weight", "lm_head.weight")]
    loaded = table.to_state_dict()
    assert loaded["lm_head.weight"] is loaded["embed.weight"]
    torch.testing.assert_close(table.load("lm_head.weight"), sd["lm_head.weight"])


def test_sharded_safetensors(tmp_path: Path, net: TinyNet) -> None:
    sd = net.state_dict()
    index = write_sharded_safetensors(sd, tmp_path, n=3)
    for path in (index, tmp_path):  # the index or its directory
        table = open_checkpoint(path)
        assert table.format == "safetensors-sharded"
        assert table.index == index and len(table.files) == 3
        assert sorted(table) == sorted(sd)
        for k in sd:
            torch.testing.assert_close(table.load(k), sd[k])
    # one shard at a time, each holding exactly its own tensors
    seen = []
    for file, tensors in table.iter_files():
        with safe_open(str(file), "pt") as f:
            assert set(f.keys()) == set(tensors)
        seen.extend(tensors)
    assert sorted(seen) == sorted(sd)


def test_sharded_bin_with_index(tmp_path: Path, net: TinyNet) -> None:
    sd = net.state_dict()
    index = write_sharded_bin(sd, tmp_path)
    table = open_checkpoint(index)
    assert table.format == "pickle-sharded"
    assert len(table.files) == 2
    got = load_checkpoint_as_dict(tmp_path)
    assert sorted(got) == sorted(sd)
    for k in sd:
        torch.testing.assert_close(got[k], sd[k])


def test_directory_prefers_safetensors(tmp_path: Path, net: TinyNet) -> None:
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()},
        str(tmp_path / "model.safetensors"),
    )
    torch.save(net.state_dict(), tmp_path / "pytorch_model.bin")
    assert open_checkpoint(tmp_path).format == "safetensors"


def test_format_comes_from_bytes_not_extension(tmp_path: Path, net: TinyNet) -> None:
    torch.save(net.state_dict(), tmp_path / "weights.safetensors")  # misnamed pickle
    assert open_checkpoint(tmp_path / "weights.safetensors").format == "pickle"


def test_whole_module_needs_trust(tmp_path: Path, net: TinyNet) -> None:
    torch.save(net, tmp_path / "whole.pt")
    table = open_checkpoint(tmp_path / "whole.pt", trusted=True)
    assert list(table) == list(net.state_dict())
    assert table.metadata["module_class"] == "TinyNet"
    assert any("TinyNet" in g for g in table.metadata["unsafe_globals"])


def test_content_hash_tracks_bytes(tmp_path: Path, net: TinyNet) -> None:
    save_file(
        {k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / "a.safetensors")
    )
    h1 = open_checkpoint(tmp_path / "a.safetensors").content_hash()
    assert h1 == open_checkpoint(tmp_path / "a.safetensors").content_hash()
    assert len(h1) == 64
    sd = {k: v.contiguous() + 1 for k, v in net.state_dict().items()}
    save_file(sd, str(tmp_path / "a.safetensors"))
    assert open_checkpoint(tmp_path / "a.safetensors").content_hash() != h1


def test_to_state_dict_loads_into_model(tmp_path: Path, net: TinyNet) -> None:
    index = write_sharded_safetensors(net.state_dict(), tmp_path)
    fresh = TinyNet().eval()
    fresh.load_state_dict(open_checkpoint(index).to_state_dict())
    x = torch.randn(5, 4)
    torch.testing.assert_close(fresh(x), net(x))
