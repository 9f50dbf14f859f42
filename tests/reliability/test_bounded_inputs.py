"""Every bound on what a file may ask of us: JSON depth and numbers, shapes, offsets, names,
shard files, tensors without dense data. Each hostile input must give one line on stderr
from one of our errors with exit 2 (never a traceback, a hang or a huge allocation), and the
library call the same ``WeightMapperError``.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from capped import memory_cap, run_capped
from safetensors.torch import save_file

from weightmapper.checkpoint import open_checkpoint
from weightmapper.cli.main import main
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import CheckpointFormatError, WeightMapperError
from weightmapper.report import load_report

pytestmark = pytest.mark.reliability

KIND = "bounded parsing"


def _safetensors(path: Path, header: str | dict, data: bytes = b"") -> Path:
    blob = (header if isinstance(header, str) else json.dumps(header)).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


HEADERS: dict[str, tuple[str, bytes, str]] = {
    # name: (header JSON text, data bytes, expected words in the message)
    "nested 100,000 deep in __metadata__": (
        '{"__metadata__": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}", b"", "nested"),
    "nested 500 deep in an entry": (
        '{"a": {"dtype": "F32", "shape": ' + "[" * 500 + "]" * 500 + ', "data_offsets": [0, 0]}}',
        b"", "nested"),
    "Infinity in a shape": (
        '{"a": {"dtype": "F32", "shape": [Infinity], "data_offsets": [0, 4]}}', bytes(4),
        "Infinity"),
    "NaN in offsets": (
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [NaN, 4]}}', bytes(4), "NaN"),
    "1e400 in a shape": (
        '{"a": {"dtype": "F32", "shape": [1e400], "data_offsets": [0, 4]}}', bytes(4),
        "too large"),
    "float offsets": (
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0.0, 4.0]}}', bytes(4),
        "data_offsets"),
    "negative offset": (
        '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}}', bytes(4),
        "data_offsets"),
    "boolean dimension": (
        '{"a": {"dtype": "F32", "shape": [true], "data_offsets": [0, 4]}}', bytes(4), "shape"),
    "shape [2**70, 0]": (
        '{"a": {"dtype": "F32", "shape": [1180591620717411303424, 0], "data_offsets": [0, 0]}}',
        b"", "shape"),
    "2**63 elements": (
        '{"a": {"dtype": "U8", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}}',
        b"", "elements"),
    "65 dimensions": (
        '{"a": {"dtype": "F32", "shape": ' + json.dumps([1] * 65) + ', "data_offsets": [0, 4]}}',
        bytes(4), "dimensions"),
    "name of 500 dotted parts": (
        json.dumps({".".join(["x"] * 500): {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
        bytes(4), "dotted parts"),
    "name of 100,000 characters": (
        json.dumps({"w" * 100_000: {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}),
        bytes(4), "characters"),
    # the compact layout safetensors writes, which is cut into columns without a JSON parser
    "compact: shape [2**70, 0]": (
        '{"a":{"dtype":"F32","shape":[1180591620717411303424,0],"data_offsets":[0,0]}}', b"",
        "shape"),
    "compact: 2**63 elements": (
        '{"a":{"dtype":"U8","shape":[4294967296,4294967296],"data_offsets":[0,0]}}', b"",
        "elements"),
    "compact: 65 dimensions": (
        '{"a":{"dtype":"F32","shape":' + json.dumps([1] * 65).replace(" ", "")
        + ',"data_offsets":[0,4]}}', bytes(4), "dimensions"),
    "compact: offsets at 2**63": (
        '{"a":{"dtype":"U8","shape":[0],"data_offsets":[9223372036854775808,'
        '9223372036854775808]}}', b"", "data_offsets"),
    "compact: a name listed twice": (
        '{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        '"a":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}}', bytes(8), "starts at byte 4"),
    "compact: name of 100,000 characters": (
        '{"' + "w" * 100_000 + '":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', bytes(4),
        "characters"),
    "compact: 50,000 shapes left open": (  # each try at cutting reads to the next quote only
        '{"a":{"dtype":"F32","shape":[' + ',"a":{"dtype":"F32","shape":[' * 50_000 + "}", b"",
        "not valid JSON"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(HEADERS))
def test_hostile_safetensors_headers_are_refused(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    header, data, words = HEADERS[name]
    with tally.attack(KIND):
        path = _safetensors(tmp_path / "model.safetensors", header, data)
        with memory_cap(), pytest.raises(CheckpointFormatError, match=words):
            open_checkpoint(path)
        assert main(["inspect", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def _index(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index = folder / "model.safetensors.index.json"
    index.write_text(text)
    return index


def _shard_to(target: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        (folder / "model-00001-of-00001.safetensors").symlink_to(target)
        return _index(folder, json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}))

    return make


def _fifo_shard(folder: Path) -> Path:
    os.mkfifo(folder / "model-00001-of-00001.safetensors")
    return _index(folder, json.dumps({"weight_map": {"a": "model-00001-of-00001.safetensors"}}))


INDEXES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "index nested 100,000 deep": (
        lambda d: _index(d, '{"weight_map": {}, "metadata": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        "nested"),
    "index naming /dev/zero": (
        lambda d: _index(d, json.dumps({"weight_map": {"a": "/dev/zero"}})), "outside"),
    "shard symlinked to /dev/zero": (_shard_to("/dev/zero"), "a device"),
    "shard that is a FIFO": (_fifo_shard, "a FIFO"),
    "shard that is a folder": (_shard_to("."), "a folder"),
    "index with Infinity": (
        lambda d: _index(d, '{"weight_map": {"a": "x.safetensors"}, "metadata": {"n": Infinity}}'),
        "Infinity"),
}  # fmt: skip


@pytest.mark.parametrize("name", list(INDEXES))
def test_hostile_indexes_fail_fast_before_any_shard_is_read(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    make, words = INDEXES[name]
    with tally.attack(KIND):
        folder = tmp_path / "ckpt"
        folder.mkdir()
        index = make(folder)
        with pytest.raises(WeightMapperError, match=words):
            open_checkpoint(index)
        assert main(["inspect", str(folder)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1


def test_a_checkpoint_argument_that_is_a_fifo_is_refused_without_blocking(
    tmp_path: Path, tally
) -> None:
    with tally.attack(KIND):
        os.mkfifo(tmp_path / "model.pt")
        with pytest.raises(CheckpointFormatError, match="a FIFO"):
            open_checkpoint(tmp_path / "model.pt")


@pytest.mark.parametrize("command", ["report", "rules", "apply"])
def test_deeply_nested_reports_and_mappings_are_refused(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    with tally.attack(KIND):
        doc = tmp_path / "report.json"
        doc.write_text('{"pairs": ' + "[" * 100_000 + "]" * 100_000 + "}")
        src = tmp_path / "src.safetensors"
        save_file({"w": torch.ones(2)}, str(src))
        argv = {
            "report": ["report", str(doc)],
            "rules": ["rules", str(doc)],
            "apply": ["apply", str(src), str(doc), "--out", str(tmp_path / "o.safetensors")],
        }[command]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "nested" in err and err.count("\n") == 1
        with pytest.raises(WeightMapperError):
            load_report(doc)


def _mapping(tmp_path: Path, names: list[str]) -> Path:
    path = tmp_path / "mapping.json"
    pairs = [{"source": n, "target": n, "score": 1.0} for n in names]
    path.write_text(json.dumps({"pairs": pairs}))
    return path


@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")
@pytest.mark.parametrize(
    ("kind", "tensor", "words"),
    [
        ("sparse", lambda: torch.eye(3).to_sparse(), "sparse_coo"),
        ("meta", lambda: torch.empty(3, 3, device="meta"), "meta device"),
        ("quantized", lambda: torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.qint8),
         "quantized"),
        ("expanded stride-0 (1 GiB from 4 bytes)", lambda: torch.zeros(1).expand(2**28),
         "--allow-expanded"),
    ],
)  # fmt: skip
def test_apply_refuses_tensors_without_dense_data_before_writing(
    kind: str,
    tensor: Callable[[], torch.Tensor],
    words: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    tally,
) -> None:
    with tally.attack(KIND):
        src = tmp_path / "model.pt"
        torch.save({"w": tensor(), "b": torch.ones(3)}, src)
        if kind.startswith("expanded"):
            assert src.stat().st_size < 2000  # the 1.8 KB file that would write 1 GiB
        mapping = _mapping(tmp_path, ["w", "b"])
        out = tmp_path / "out.safetensors"
        assert main(["apply", str(src), str(mapping), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1
        assert not out.exists() and not list(tmp_path.glob(".*.tmp"))


def test_allow_expanded_lets_a_small_expanded_tensor_through(tmp_path: Path) -> None:
    """The flag is an explicit choice: the expanded tensor is then written at its full size."""
    src = tmp_path / "model.pt"
    torch.save({"w": torch.ones(1).expand(5 << 20)}, src)  # 20 MiB logical from 4 bytes
    with pytest.raises(CheckpointFormatError, match="allow_expanded"):
        convert_checkpoint(src, {"w": "w"}, tmp_path / "refused.safetensors")
    report = convert_checkpoint(src, {"w": "w"}, tmp_path / "o.safetensors", allow_expanded=True)
    assert report.bytes_written == 20 << 20


def test_migrate_fails_fast_on_an_index_naming_a_device(tmp_path: Path, tally) -> None:
    """The pipeline hashes a checkpoint's files for its keys: never a device."""
    with tally.attack(KIND):
        folder = tmp_path / "ck"
        folder.mkdir()
        _shard_to("/dev/zero")(folder)
        job = tmp_path / "job.yaml"
        job.write_text(
            "name: z\nstore: store\nrunner: {kind: sequential}\noutput: {dir: out}\n"
            "migrations:\n  - name: m\n    sources: [ck]\n"
            "    target: {module: 'torch.nn:Linear', kwargs: {in_features: 2, out_features: 2}}\n"
        )
        proc = run_capped(["migrate", str(job), "--no-prefect", "--json"], cpu_seconds=60)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "a device" in proc.stdout and "Traceback" not in proc.stderr
