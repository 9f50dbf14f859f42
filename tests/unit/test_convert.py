"""Streaming conversion to safetensors: layout, metadata, shards, ties, atomicity, refusals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file, save_file

from weightmapper.checkpoint import open_checkpoint
from weightmapper.convert import (
    ConvertReport,
    convert_checkpoint,
    load_converted,
    mapping_sha256,
    parse_size,
    read_metadata,
)
from weightmapper.errors import CheckpointFormatError, MappingError, OutputError, TransformError
from weightmapper.result import MappingResult, MatchedPair, MultiPair
from weightmapper.transforms import TransformSpec


def _source() -> dict[str, torch.Tensor]:
    return {
        "enc.0.weight": torch.randn(8, 4),
        "enc.0.bias": torch.randn(8),
        "enc.qkv.weight": torch.randn(12, 4),
        "enc.scale": torch.randn(4, 1, 1),
        "enc.steps": torch.tensor(7),
        "head.weight": torch.randn(3, 8).to(torch.bfloat16),
        "unused": torch.randn(2),
    }


def _mapping() -> MappingResult:
    return MappingResult(
        [
            MatchedPair("enc.0.weight", "body.fc.weight", 1.0, source_shape=(8, 4)),
            MatchedPair("enc.0.bias", "body.fc.bias", 1.0),
            MatchedPair(
                "enc.scale",
                "body.gamma",
                1.0,
                transform=TransformSpec("reshape", {"shape": [4], "from_shape": [4, 1, 1]}),
            ),
            MatchedPair("enc.steps", "body.steps", 1.0),
            MatchedPair("head.weight", "out.weight", 1.0, transform=TransformSpec("transpose", {})),
        ],
        multi=[
            MultiPair(
                ("enc.qkv.weight",),
                ("body.q.weight", "body.k.weight", "body.v.weight"),
                TransformSpec("split", {"dim": 0, "sizes": [4, 4, 4]}),
                1.0,
            )
        ],
    )


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_single_file_equals_in_memory_conversion_and_records_hashes(tmp_path) -> None:
    src = _source()
    save_file(src, tmp_path / "src.safetensors")
    out = tmp_path / "out.safetensors"
    report = convert_checkpoint(tmp_path / "src.safetensors", _mapping(), out)
    assert isinstance(report, ConvertReport)
    assert report.files == (str(out),) and report.index_path is None
    assert report.tensor_count == 8 and report.dropped_source_keys == ("unused",)
    assert report.raw_copied == 3  # the renamed-only tensors never went through Python
    _assert_same(load_file(out), _mapping().convert(src))
    meta = read_metadata(out)
    assert meta["source_sha256"] == open_checkpoint(tmp_path / "src.safetensors").content_hash()
    assert meta["source_sha256"] == report.source_sha256
    assert meta["mapping_sha256"] == mapping_sha256(_mapping()) == report.mapping_sha256
    assert meta["weightmapper_version"] and meta["format"] == "pt"


def test_sharded_output_has_hf_index_and_reads_back(tmp_path) -> None:
    src = {f"layers.{i}.weight": torch.randn(16, 16) for i in range(6)}  # 1 KiB each
    mapping = {k: k.replace("layers", "blocks") for k in src}
    report = convert_checkpoint(src, mapping, tmp_path / "out", shard_size="2.5KiB")
    assert [os.path.basename(f) for f in report.files] == [
        f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)
    ]
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 6 * 1024
    assert index["weight_map"]["blocks.5.weight"] == "model-00003-of-00003.safetensors"
    assert all(os.path.getsize(f) < 2.5 * 1024 + 1024 for f in report.files)
    _assert_same(load_converted(report.index_path), {mapping[k]: v for k, v in src.items()})
    table = open_checkpoint(report.index_path)
    assert sorted(table) == sorted(mapping.values())
    assert report.source_sha256 == index["metadata"]["source_sha256"]


def test_multi_tensor_inputs_from_different_source_shards(tmp_path) -> None:
    q, k, v = torch.randn(4, 4), torch.randn(4, 4), torch.randn(4, 4)
    save_file({"a.q": q, "a.k": k}, tmp_path / "s1.safetensors")
    save_file({"a.v": v}, tmp_path / "s2.safetensors")
    weight_map = {"a.q": "s1.safetensors", "a.k": "s1.safetensors", "a.v": "s2.safetensors"}
    (tmp_path / "src.index.json").write_text(json.dumps({"weight_map": weight_map}))
    mapping = MappingResult(
        [],
        multi=[
            MultiPair(
                ("a.q", "a.k", "a.v"),
                ("fused",),
                TransformSpec("merge", {"dim": 0, "sizes": [4, 4, 4]}),
                1.0,
            )
        ],
    )
    report = convert_checkpoint(tmp_path / "src.index.json", mapping, tmp_path / "o.safetensors")
    assert torch.equal(load_file(report.files[0])["fused"], torch.cat([q, k, v]))


def test_tied_tensors_are_written_once_and_restored(tmp_path) -> None:
    emb = torch.randn(10, 4)
    torch.save(
        {"wte.weight": emb, "lm_head.weight": emb, "ln.weight": torch.ones(4)}, tmp_path / "t.pt"
    )
    mapping = {"wte.weight": "tok.weight", "lm_head.weight": "head.weight", "ln.weight": "n.weight"}
    report = convert_checkpoint(tmp_path / "t.pt", mapping, tmp_path / "o.safetensors")
    assert report.aliases == {"tok.weight": "head.weight"} or report.aliases == {
        "head.weight": "tok.weight"
    }
    stored = load_file(report.files[0])
    assert len(stored) == 2  # one copy of the tied tensor
    sd = load_converted(report.files[0])
    assert torch.equal(sd["tok.weight"], emb)
    assert sd["tok.weight"].data_ptr() == sd["head.weight"].data_ptr()
    table = open_checkpoint(report.files[0])  # the save_model alias convention is honoured too
    assert sorted(table) == ["head.weight", "n.weight", "tok.weight"] and table.tied


def test_dtype_cast_touches_floats_only_and_progress_counts_bytes(tmp_path) -> None:
    calls: list[tuple[int, int]] = []
    report = convert_checkpoint(
        _source(),
        _mapping(),
        tmp_path / "o.safetensors",
        dtype=torch.float16,
        progress=lambda done, total: calls.append((done, total)),
    )
    sd = load_file(report.files[0])
    assert sd["body.fc.weight"].dtype == torch.float16 and sd["body.steps"].dtype == torch.int64
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    assert calls[-1][0] == calls[-1][1] == report.bytes_written


def test_refuses_to_overwrite_source_or_existing_output(tmp_path) -> None:
    src = tmp_path / "src.safetensors"
    save_file({"a": torch.randn(3)}, src)
    before = src.read_bytes()
    with pytest.raises(OutputError, match="input file"):
        convert_checkpoint(src, {"a": "b"}, src, overwrite=True)
    assert src.read_bytes() == before
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(OutputError, match="already exists"):
        convert_checkpoint(src, {"a": "b"}, out)
    assert out.read_bytes() == b"keep me"
    convert_checkpoint(src, {"a": "b"}, out, overwrite=True)
    assert torch.equal(load_file(out)["b"], load_file(src)["a"])


def test_bad_mappings_fail_before_anything_is_written(tmp_path) -> None:
    out = tmp_path / "o.safetensors"
    with pytest.raises(CheckpointFormatError, match="not in the checkpoint"):
        convert_checkpoint(_source(), {"nope": "x"}, out)
    bad_shape = MappingResult([MatchedPair("unused", "x", 1.0, source_shape=(5,))])
    with pytest.raises(CheckpointFormatError, match="another shape"):
        convert_checkpoint(_source(), bad_shape, out)
    bad_split = MappingResult(
        [],
        multi=[
            MultiPair(
                ("enc.qkv.weight",), ("q", "k"), TransformSpec("split", {"sizes": [6, 6]}), 1.0
            )
        ],
    )
    convert_checkpoint(_source(), bad_split, out)  # 12 rows into 6 + 6 is fine
    worse = MappingResult(
        [],
        multi=[
            MultiPair(
                ("enc.qkv.weight",), ("q", "k"), TransformSpec("split", {"sizes": [5, 5]}), 1.0
            )
        ],
    )
    with pytest.raises(Exception, match="add up"):
        convert_checkpoint(_source(), worse, tmp_path / "other.safetensors")
    assert not (tmp_path / "other.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.safetensors"]


def test_parse_size() -> None:
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 MiB") == 3 * 2**19
    assert parse_size(1234) == 1234
    with pytest.raises(MappingError, match="not a size"):
        parse_size("two gigs")


_KILL_SCRIPT = textwrap.dedent(
    """
    import pathlib, sys, time, torch
    from weightmapper.convert import convert_checkpoint
    flag = pathlib.Path(sys.argv[2])
    def slow(done, total):
        flag.touch()
        time.sleep(0.2)
    src = {f"t{i}": torch.randn(64, 64) for i in range(50)}
    mapping = {k: "n" + k for k in src}
    convert_checkpoint(src, mapping, sys.argv[1], shard_size="40KB", progress=slow)
    """
)


def test_kill_mid_write_leaves_no_output_under_the_final_name(tmp_path) -> None:
    out, flag = tmp_path / "out", tmp_path / "started"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out), str(flag)])
    try:
        deadline = time.monotonic() + 60
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert flag.exists(), "the converter never started writing"
        time.sleep(0.5)  # a few tensors in: some shard data is on disk under temp names
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left, "expected temporary files from the interrupted write"
    assert all(name.startswith(".") and name.endswith(".tmp") for name in left), left
    assert not (out / "model.safetensors.index.json").exists()
    # The rerun removes what the killed process left and writes the whole output.
    src = {f"t{i}": torch.randn(64, 64) for i in range(50)}
    report = convert_checkpoint(src, {k: "n" + k for k in src}, out, shard_size="40KB")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*(os.path.basename(f) for f in report.files), "model.safetensors.index.json"]
    )


def test_tied_tensors_in_sharded_output(tmp_path) -> None:
    emb = torch.randn(16, 16)
    sd = {"a.weight": torch.randn(16, 16), "emb.weight": emb, "head.weight": emb}
    report = convert_checkpoint(sd, {k: k for k in sd}, tmp_path / "out", shard_size="1KiB")
    assert len(report.files) == 2 and len(report.aliases) == 1
    table = open_checkpoint(report.index_path)
    assert sorted(table) == sorted(sd) and len(table.tied) == 1
    loaded = load_converted(tmp_path / "out")
    assert loaded["emb.weight"].data_ptr() == loaded["head.weight"].data_ptr()
    assert torch.equal(loaded["head.weight"], emb)


def test_known_source_hash_is_recorded_and_checked_for_form(tmp_path) -> None:
    digest = "ab" * 32
    report = convert_checkpoint(
        _source(), _mapping(), tmp_path / "o.safetensors", source_sha256=digest
    )
    assert read_metadata(report.files[0])["source_sha256"] == digest == report.source_sha256
    with pytest.raises(MappingError, match="sha256 hex digest"):
        convert_checkpoint(_source(), _mapping(), tmp_path / "p.safetensors", source_sha256="abc")
    assert not (tmp_path / "p.safetensors").exists()


def test_refuses_to_write_an_index_over_the_source_index(tmp_path) -> None:
    src = {f"w{i}": torch.randn(16, 16) for i in range(4)}
    first = convert_checkpoint(src, {k: k for k in src}, tmp_path / "ckpt", shard_size="2KiB")
    index_before = (tmp_path / "ckpt" / "model.safetensors.index.json").read_bytes()
    with pytest.raises(OutputError, match="input file"):
        convert_checkpoint(
            first.index_path,
            {f"w{i}": f"v{i}" for i in range(3)},  # 3 new shard names; only the index collides
            tmp_path / "ckpt",
            shard_size="1KiB",
            overwrite=True,
        )
    assert (tmp_path / "ckpt" / "model.safetensors.index.json").read_bytes() == index_before
    with pytest.raises(CheckpointFormatError, match="meta device"):
        convert_checkpoint({"a": torch.empty(2, device="meta")}, {"a": "b"}, tmp_path / "m")


def test_a_transform_that_misses_the_recorded_target_shape_writes_nothing(tmp_path) -> None:
    """An edited mapping whose transform no longer gives the recorded shape is refused."""
    save_file({"fc.weight": torch.randn(10, 8)}, tmp_path / "src.safetensors")
    edited = MatchedPair(
        "fc.weight", "head.weight", 0.9, source_shape=(10, 8), target_shape=(10, 8),
        transform=TransformSpec("transpose", {}),
    )  # fmt: skip
    out = tmp_path / "out.safetensors"
    with pytest.raises(TransformError, match=r"gives shape \(8, 10\) but the mapping records"):
        convert_checkpoint(tmp_path / "src.safetensors", MappingResult([edited]), out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.safetensors"]
    # The same transform with the shape it does give converts.
    fitting = MatchedPair(
        "fc.weight", "head.weight", 0.9, source_shape=(10, 8), target_shape=(8, 10),
        transform=TransformSpec("transpose", {}),
    )  # fmt: skip
    convert_checkpoint(tmp_path / "src.safetensors", MappingResult([fitting]), out)
    assert load_file(out)["head.weight"].shape == (8, 10)
