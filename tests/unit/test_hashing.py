"""Checkpoint hashes: one definition, each file's digest cached by identity, never stale."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper import checkpoint, hashing
from weightmapper.errors import CheckpointNotFoundError
from weightmapper.hashing import HashCache, checkpoint_sha256, file_sha256, files_sha256


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache, remembering files written just now (no racy-write window)."""
    monkeypatch.setenv("WEIGHTMAPPER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("WEIGHTMAPPER_HASH_CACHE", raising=False)
    monkeypatch.setattr(hashing, "RACY_SECONDS", 0.0)
    return tmp_path / "cache"


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every file the hasher actually reads."""
    seen: list[Path] = []
    real = hashing.sha256_file

    def counting(path: str | os.PathLike[str]) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    return seen


def _entries(cache_dir: Path) -> dict[str, dict[str, object]]:
    return json.loads((cache_dir / "hashes.json").read_text())


def test_definition_is_sha256sum_for_one_file_and_named_pairs_for_shards(tmp_path: Path) -> None:
    a, b = tmp_path / "m-1.safetensors", tmp_path / "m-2.safetensors"
    a.write_bytes(b"alpha" * 1000)
    b.write_bytes(b"beta")
    assert files_sha256([a]) == hashlib.sha256(a.read_bytes()).hexdigest() == file_sha256(a)
    pairs = sorted([p.name, hashlib.sha256(p.read_bytes()).hexdigest()] for p in (a, b))
    expected = hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()
    assert files_sha256([b, a]) == expected == checkpoint_sha256([a, b])


def test_second_call_reads_nothing_even_from_a_new_process_cache(
    tmp_path: Path, cache_dir: Path, reads: list[Path]
) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(os.urandom(4096))
    first = file_sha256(f)
    assert reads == [f]
    assert file_sha256(f, cache=HashCache(cache_dir / "hashes.json")) == first  # from disk
    assert reads == [f]
    assert [e["sha256"] for e in _entries(cache_dir).values()] == [first]


def test_rewrite_with_same_size_and_restored_mtime_is_rehashed(
    tmp_path: Path, cache_dir: Path
) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"a" * 100)
    before = f.stat()
    first = file_sha256(f)
    time.sleep(0.05)  # the next write lands in a later timestamp tick
    with open(f, "r+b") as fh:  # same inode, same size
        fh.write(b"b")
    os.utime(f, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert f.stat().st_mtime_ns == before.st_mtime_ns
    assert file_sha256(f) == hashlib.sha256(f.read_bytes()).hexdigest() != first


def test_a_file_written_within_the_racy_window_is_not_remembered(
    tmp_path: Path, cache_dir: Path, reads: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "RACY_SECONDS", 3600.0)
    f = tmp_path / "fresh.bin"
    f.write_bytes(b"still being written?")
    assert file_sha256(f) == file_sha256(f)
    assert reads == [f, f]
    assert not (cache_dir / "hashes.json").exists()


def test_corrupt_cache_is_ignored_and_repaired(tmp_path: Path, cache_dir: Path) -> None:
    cache_dir.mkdir()
    (cache_dir / "hashes.json").write_text('{"not": "closed"')
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert file_sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert len(_entries(cache_dir)) == 1


def test_entries_of_the_wrong_shape_are_dropped(tmp_path: Path, cache_dir: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    cache_dir.mkdir()
    ident = hashing._identity(f)
    (cache_dir / "hashes.json").write_text(json.dumps({ident: {"sha256": "0" * 10, "t": 1}}))
    assert file_sha256(f) == hashlib.sha256(b"x").hexdigest()


_WORKER = """
import sys
from weightmapper import hashing
hashing.RACY_SECONDS = 0.0
for path in sys.argv[1:]:
    hashing.file_sha256(path)
"""


def test_processes_sharing_the_cache_keep_each_others_entries(
    tmp_path: Path, cache_dir: Path
) -> None:
    files = []
    for i in range(12):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(os.urandom(1000 + i))
    procs = [
        subprocess.Popen([sys.executable, "-c", _WORKER, *map(str, files[k::3])]) for k in range(3)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    stored = {e["sha256"] for e in _entries(cache_dir).values()}
    assert stored == {hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


@pytest.mark.parametrize("switch", ["0", "off"])
def test_switched_off_by_environment_keeps_an_in_process_memo(
    tmp_path: Path,
    cache_dir: Path,
    reads: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    switch: str,
) -> None:
    monkeypatch.setenv("WEIGHTMAPPER_HASH_CACHE", switch)
    assert hashing.default_cache() is None
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert file_sha256(f) == file_sha256(f) == hashlib.sha256(b"x").hexdigest()
    assert reads == [f]
    assert not cache_dir.exists()


def test_default_location_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WEIGHTMAPPER_HASH_CACHE", raising=False)
    monkeypatch.setenv("WEIGHTMAPPER_CACHE_DIR", str(tmp_path / "mine"))
    cache = hashing.default_cache()
    assert cache is not None and cache.path == tmp_path / "mine" / "hashes.json"
    monkeypatch.delenv("WEIGHTMAPPER_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = hashing.default_cache()
    assert cache is not None and cache.path == tmp_path / "xdg" / "weightmapper" / "hashes.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cache = hashing.default_cache()
    expected = tmp_path / "home" / ".cache" / "weightmapper" / "hashes.json"
    assert cache is not None and cache.path == expected


def test_missing_file_raises_our_error(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match=r"cannot hash .*gone\.bin"):
        file_sha256(tmp_path / "gone.bin")
    (tmp_path / "here.bin").write_bytes(b"x")
    with pytest.raises(CheckpointNotFoundError, match="gone"):
        checkpoint_sha256([tmp_path / "here.bin", tmp_path / "gone.bin"])


def test_table_content_hash_is_the_cached_file_hash(
    tmp_path: Path, cache_dir: Path, reads: list[Path]
) -> None:
    f = tmp_path / "model.safetensors"
    save_file({"w": torch.arange(6.0).reshape(2, 3)}, str(f))
    table = checkpoint.open_checkpoint(f)
    assert (
        table.content_hash() == table.content_hash() == hashlib.sha256(f.read_bytes()).hexdigest()
    )
    assert reads == [f]


def test_unwritable_cache_location_still_hashes(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("")
    monkeypatch.setenv("WEIGHTMAPPER_CACHE_DIR", str(blocker / "cache"))
    f = tmp_path / "w.bin"
    f.write_bytes(b"x")
    assert file_sha256(f) == hashlib.sha256(b"x").hexdigest()


def test_cache_keeps_the_newest_entries_only(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "MAX_ENTRIES", 3)
    files = []
    for i in range(5):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes([i]))
        file_sha256(files[-1])
        time.sleep(0.01)
    stored = {e["sha256"] for e in _entries(cache_dir).values()}
    assert stored == {hashlib.sha256(bytes([i])).hexdigest() for i in (2, 3, 4)}


def test_entries_of_deleted_files_go_first_when_the_cache_is_full(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hashing, "MAX_ENTRIES", 2)
    kept, gone, new = (tmp_path / f"{n}.bin" for n in ("kept", "gone", "new"))
    for f in (kept, gone):
        f.write_bytes(f.name.encode())
        file_sha256(f)
        time.sleep(0.01)
    gone.unlink()
    new.write_bytes(b"new")
    file_sha256(new)
    stored = {e["sha256"] for e in _entries(cache_dir).values()}
    assert stored == {hashlib.sha256(f.read_bytes()).hexdigest() for f in (kept, new)}
