"""ArtifactStore and cache keys: content addressing, verified reads, locking, digests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper import hashing
from weightmapper.hashing import files_sha256
from weightmapper.pipeline.keys import digest_file, stage_key
from weightmapper.pipeline.store import ArtifactStore


def test_stage_key_depends_on_content_not_order_of_settings() -> None:
    a = stage_key("score", 1, inputs={"s": "x", "t": "y"}, settings={"a": 1, "b": [1, 2]})
    b = stage_key("score", 1, inputs={"t": "y", "s": "x"}, settings={"b": [1, 2], "a": 1})
    assert a == b and len(a) == 64
    assert a != stage_key("score", 2, inputs={"s": "x", "t": "y"}, settings={"a": 1, "b": [1, 2]})
    assert a != stage_key("assign", 1, inputs={"s": "x", "t": "y"}, settings={"a": 1, "b": [1, 2]})
    assert a != stage_key("score", 1, inputs={"s": "x", "t": "z"}, settings={"a": 1, "b": [1, 2]})


def test_stage_key_refuses_objects_without_a_stable_form() -> None:
    with pytest.raises(TypeError, match="not allowed in a cache key"):
        stage_key("x", 1, settings={"module": object()})


def test_file_digest_ignores_the_file_name(tmp_path: Path) -> None:
    a, b = tmp_path / "a.bin", tmp_path / "renamed.bin"
    a.write_bytes(b"weights")
    b.write_bytes(b"weights")
    assert files_sha256([a]) == files_sha256([b]) == digest_file(a)


def test_produce_computes_once_then_reuses(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"x": 1}  # noqa: E731
    first = store.produce_json("st", "k1", compute)
    second = store.produce_json("st", "k1", compute)
    assert (first.cached, second.cached) == (False, True)
    assert len(calls) == 1
    assert first.digest == second.digest == digest_file(first.path)
    assert store.read_json(second) == {"x": 1}


def test_corrupt_json_artifact_is_a_miss_and_recomputed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.produce_json("st", "k", lambda: {"x": list(range(50))})
    text = Path(ref.path).read_text()
    Path(ref.path).write_text(text[: len(text) // 2])  # truncated, as by a crash
    assert store.lookup("st", "k") is None
    again = store.produce_json("st", "k", lambda: {"x": list(range(50))})
    assert not again.cached and store.read_json(again) == {"x": list(range(50))}


def test_same_size_garbage_json_is_a_miss(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.produce_json("st", "k", lambda: {"x": 1})
    size = Path(ref.path).stat().st_size
    Path(ref.path).write_bytes(b"{" * size)
    assert store.lookup("st", "k") is None


def test_corrupt_safetensors_artifact_is_a_miss(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def write(tmp: Path) -> dict:
        save_file({"w": torch.ones(4)}, str(tmp))
        return {"n": 1}

    ref = store.produce("conv", "k", "safetensors", write)
    assert store.lookup("conv", "k") == ref
    size = Path(ref.path).stat().st_size
    Path(ref.path).write_bytes(b"\xff" * size)
    assert store.lookup("conv", "k") is None


def test_unreadable_meta_record_is_a_miss(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.produce_json("st", "k", lambda: {"x": 1})
    meta = Path(ref.path).with_suffix(".meta.json")
    meta.write_text("{not json")
    assert store.lookup("st", "k") is None


def test_deleted_artifact_is_recomputed(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    ref = store.produce_json("st", "k", lambda: {"x": 1})
    Path(ref.path).unlink()
    assert not store.produce_json("st", "k", lambda: {"x": 1}).cached


def test_a_failing_writer_leaves_nothing_behind(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)

    def boom() -> dict:
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        store.produce_json("st", "k", boom)
    assert store.lookup("st", "k") is None
    assert [p.name for p in (tmp_path / "artifacts" / "st").iterdir()] == []


def test_concurrent_producers_of_one_key_compute_once(tmp_path: Path) -> None:
    calls = []

    def slow() -> dict:
        calls.append(1)
        time.sleep(0.2)
        return {"x": 1}

    refs = []

    def worker() -> None:
        # A store per thread, as separate processes would have.
        refs.append(ArtifactStore(tmp_path).produce_json("st", "k", slow))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert sorted(r.cached for r in refs) == [False, True, True, True]
    assert len({r.digest for r in refs}) == 1


def test_file_digest_memo_survives_a_new_store_and_notices_edits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.0)  # remember files written just now
    f = tmp_path / "ckpt.bin"
    f.write_bytes(b"one")
    d1 = ArtifactStore(tmp_path / "s").file_digest([f])
    memo = json.loads((tmp_path / "s" / "memo" / "hashes.json").read_text())
    assert d1 in [e["sha256"] for e in memo.values()]
    assert ArtifactStore(tmp_path / "s").file_digest([f]) == d1
    f.write_bytes(b"two!")
    assert ArtifactStore(tmp_path / "s").file_digest([f]) == digest_file(f) != d1


def test_sweep_orphans_removes_what_dead_writers_left_and_keeps_live_ones(tmp_path: Path) -> None:
    from weightmapper.atomic import _HOST, sweep_orphans

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stage = tmp_path / "artifacts" / "verify"
    stage.mkdir(parents=True)
    orphan = stage / f".k.json.{dead.pid}-{_HOST}.abc123.tmp"
    live = stage / f".j.json.{os.getpid()}-{_HOST}.abc123.tmp"
    work = stage / f".convert.{dead.pid}-{_HOST}.xyz.work"
    foreign = stage / f".k.json.{dead.pid}-ffffff.abc123.tmp"  # another host's
    for p in (orphan, live, foreign):
        p.write_text("partial")
    (work / "inner").mkdir(parents=True)
    assert sorted(sweep_orphans(tmp_path)) == sorted([orphan, work])
    assert live.exists() and foreign.exists() and not work.exists()
