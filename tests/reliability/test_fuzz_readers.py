"""Property-based fuzzing of the readers a hostile file reaches first, each input capped.

Hypothesis builds safetensors headers, shard indexes, pickles (opcode by opcode, raw and
inside a torch zip) and YAML jobs from the pieces attackers use: huge, negative, fractional
and non-finite numbers, deep nesting, lying lengths, crafted names, allocating calls, storages
larger than the file, unsafe globals. Every input runs under a 10 s alarm and an
address-space cap of 512 MiB over the current size (``capped.bounded``): it must load
consistently or raise a ``WeightMapperError``; a hang, a MemoryError or any other exception
fails the test, and no pickle's code may ever run. ``derandomize=True``: the same inputs on
every run; the counts are printed in the reliability summary.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from capped import bounded
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file
from test_fuzz_documents import mutated, valid_job

from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import WeightMapperError
from weightmapper.pipeline.config import load_job
from weightmapper.safetensors_io import DTYPES

pytestmark = pytest.mark.reliability

EXAMPLES = 250
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

numbers = st.one_of(
    st.integers(0, 64),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, 2**64, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
names = st.one_of(
    st.sampled_from(["w", "layer.0.weight", "a.b", "[/]", "x\x1b[2J", ".".join(["p"] * 70)]),
    st.text(max_size=20),
    st.just("n" * 2000),
)


def _outcome(fn: Any) -> str:
    """Run one reader call under the caps → ``loaded`` or ``refused``; anything else fails."""
    with bounded():
        try:
            fn()
        except WeightMapperError:
            return "refused"
    return "loaded"


def _check_table(path: Path) -> None:
    """Open a checkpoint and read every tensor; each must match what the header promised."""
    table = open_checkpoint(path)
    for name in table:
        info = table[name]
        t = table.load(name)
        assert tuple(t.shape) == tuple(info.shape), name


# --- safetensors headers --------------------------------------------------------------------


@st.composite
def headers(draw: st.DrawFn) -> bytes:
    """A safetensors file: mostly-plausible entries with hostile fields, then the data."""
    n = draw(st.integers(0, 4))
    header: dict[str, Any] = {}
    offset = 0
    for _ in range(n):
        dtype = draw(st.sampled_from([*DTYPES, "Q7", 3, None]))
        shape = draw(st.lists(draw(st.sampled_from([st.integers(0, 5), numbers])), max_size=4))
        size = 4
        start = draw(st.sampled_from([offset, offset + 1, -4, 2**64, 1e400, 0.5]))
        end = draw(st.sampled_from([offset + size, offset, 2**63, float("inf"), "4"]))
        entry: Any = {"dtype": dtype, "shape": shape, "data_offsets": [start, end]}
        if draw(st.booleans()):
            entry = draw(st.sampled_from([entry, [entry], "x", {"dtype": dtype}]))
        header[draw(names)] = entry
        offset += size
    if draw(st.booleans()):
        header["__metadata__"] = draw(
            st.one_of(st.dictionaries(names, st.text(max_size=8), max_size=3), numbers)
        )
    depth = draw(st.sampled_from([0, 0, 0, 70, 2000]))
    text = json.dumps(header, allow_nan=True)
    if depth:
        text = text[:-1] + (", " if header else "") + '"deep": ' + "[" * depth + "]" * depth + "}"
    blob = text.encode("utf-8", "surrogatepass")
    declared = draw(st.sampled_from([len(blob), len(blob), len(blob) + 1, 2**63, 0]))
    data = bytes(draw(st.sampled_from([offset, 0, offset + 3])))
    return struct.pack("<Q", declared) + blob + data


@FUZZ
@given(blob=headers())
def test_fuzzed_safetensors_headers(blob: bytes, tmp_path: Path, tally) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(blob)
    tally["fuzzed (capped): safetensors headers"][_outcome(lambda: _check_table(path))] += 1


# --- shard indexes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shards")
    save_file({"a": torch.ones(2)}, str(root / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(3)}, str(root / "model-00002-of-00002.safetensors"))
    return root


shard_names = st.sampled_from([
    "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "missing.safetensors",
    "../model-00001-of-00002.safetensors", "/dev/zero", "", "a\x00b", "C:\\x", ".", "sub/../x",
    "model.safetensors.index.json",
])  # fmt: skip


@st.composite
def indexes(draw: st.DrawFn) -> str:
    weight_map: Any = draw(st.dictionaries(st.sampled_from(["a", "b", "c"]) | names, shard_names,
                                           max_size=4))  # fmt: skip
    if draw(st.integers(0, 5)) == 0:
        weight_map = draw(st.sampled_from([[], "x", 3, None, {"a": 1}]))
    doc: dict[str, Any] = {"weight_map": weight_map}
    if draw(st.booleans()):
        doc["metadata"] = draw(st.dictionaries(st.text(max_size=5), numbers, max_size=3))
    text = json.dumps(doc, allow_nan=True)
    depth = draw(st.sampled_from([0, 0, 70, 5000]))
    if depth:
        text = text[:-1] + ', "m": ' + "{" * 0 + "[" * depth + "]" * depth + "}"
    if draw(st.integers(0, 6)) == 0:
        text = text.replace("1", "Infinity", 1)
    return text


@FUZZ
@given(text=indexes())
def test_fuzzed_shard_indexes(text: str, shard_dir: Path, tally) -> None:
    index = shard_dir / "model.safetensors.index.json"
    index.write_text(text, encoding="utf-8", errors="surrogatepass")
    tally["fuzzed (capped): shard indexes"][_outcome(lambda: _check_table(index))] += 1


# --- pickles --------------------------------------------------------------------------------


def _int(n: int) -> bytes:
    if 0 <= n < 256:
        return b"K" + bytes([n])
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _str(s: str) -> bytes:
    raw = s.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


GLOBALS = [
    ("builtins", "bytearray"), ("torch", "FloatStorage"), ("torch", "LongStorage"),
    ("torch", "FloatTensor"), ("torch._utils", "_rebuild_tensor_v2"),
    ("collections", "OrderedDict"), ("torch", "Size"), ("os", "system"), ("builtins", "eval"),
]  # fmt: skip
pickle_ops = st.one_of(
    numbers.filter(lambda x: isinstance(x, int) and not isinstance(x, bool)).map(_int),
    names.map(_str),
    st.sampled_from(GLOBALS).map(lambda g: b"c" + f"{g[0]}\n{g[1]}\n".encode()),
    st.sampled_from([
        b"(", b"t", b"\x85", b"\x86", b"\x87", b")", b"R", b"Q", b"}", b"]", b"s", b"u", b"a",
        b"e", b"b", b"0", b"2", b"\x94", b"h\x00", b"q\x00", b"\x88", b"\x89", b"N",
        b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu",
    ]),
)  # fmt: skip


dims = st.one_of(st.integers(0, 8), numbers.filter(lambda x: type(x) is int))


@st.composite
def tensor_pickles(draw: st.DrawFn) -> bytes:
    """A state dict {"w": tensor} as torch writes it, with drawn sizes, strides and offsets."""
    sizes = draw(st.lists(dims, max_size=3))
    strides = draw(st.lists(dims, max_size=3))
    storage = (
        b"(" + _str("storage") + b"ctorch\nFloatStorage\n" + _str("0") + _str("cpu")
        + _int(draw(dims)) + b"tQ"
    )  # fmt: skip
    rebuild = (
        b"ctorch._utils\n_rebuild_tensor_v2\n(" + storage + _int(draw(dims))
        + b"(" + b"".join(map(_int, sizes)) + b"t(" + b"".join(map(_int, strides)) + b"t"
        + b"\x89ccollections\nOrderedDict\n)RtR"
    )  # fmt: skip
    extra = b"".join(draw(st.lists(pickle_ops, max_size=4)))
    return b"\x80\x02}(" + _str("w") + rebuild + b"u" + extra + b"."


@st.composite
def pickles(draw: st.DrawFn) -> bytes:
    if draw(st.booleans()):
        return draw(tensor_pickles())
    body = b"".join(draw(st.lists(pickle_ops, max_size=30)))
    return b"\x80\x02" + body + b"."


def _zip(data_pkl: bytes, record: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", data_pkl)
        zf.writestr("archive/data/0", record)
        zf.writestr("archive/version", b"3\n")
    return buf.getvalue()


@FUZZ
@given(blob=pickles(), zipped=st.booleans(), record=st.sampled_from([b"", bytes(4), bytes(64)]))
def test_fuzzed_pickles(blob: bytes, zipped: bool, record: bytes, tmp_path: Path, tally) -> None:
    path = tmp_path / ("model.pt" if zipped else "model.pkl")
    path.write_bytes(_zip(blob, record) if zipped else blob)
    outcome = _outcome(lambda: _check_table(path))
    tally["fuzzed (capped): pickles" + (" in torch zips" if zipped else "")][outcome] += 1


# --- YAML jobs -------------------------------------------------------------------------------


@FUZZ
@given(doc=mutated(valid_job()), depth=st.sampled_from([0, 0, 0, 80, 3000]))
def test_fuzzed_jobs_load_under_caps(doc: Any, depth: int, tmp_path: Path, tally) -> None:
    text = yaml.safe_dump(doc)
    if depth:
        text += "extra: " + "[" * depth + "]" * depth + "\n"
    path = tmp_path / "job.yaml"
    path.write_text(text)
    tally["fuzzed (capped): YAML jobs loaded"][_outcome(lambda: load_job(path))] += 1
