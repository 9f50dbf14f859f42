"""The fast paths of reading a checkpoint give what the plain, one-thing-at-a-time forms give.

A safetensors header is checked column by column in one pass, JSON depth is counted on its
quotes and brackets alone, and names sort by a key of alternating text and numbers; each is
compared here with a direct form of the same rule on many small random inputs.
"""

from __future__ import annotations

import json
import random
import re
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.bounded_json import nesting_depth
from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import CheckpointFormatError
from weightmapper.inventory import is_sorted_order, natural_key
from weightmapper.safetensors_io import _entry, _plain_columns, read_header


def _depth_char_by_char(raw: bytes) -> int:
    """JSON bytes → deepest bracket nesting outside strings, read one character at a time: a
    quote delimits a string unless an odd run of backslashes comes right before it."""
    depth = deepest = backslashes = 0
    inside = False
    for c in raw.decode("latin-1"):
        if c == '"' and backslashes % 2 == 0:
            inside = not inside
        elif not inside and c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif not inside and c in "]}":
            depth -= 1
        backslashes = backslashes + 1 if c == "\\" else 0
    return deepest


def test_nesting_depth_equals_a_character_by_character_count() -> None:
    rng = random.Random(0)
    for _ in range(20_000):
        raw = bytes(rng.choice(b'[]{}""\\\\\\ax:,') for _ in range(rng.randint(0, 30)))
        assert nesting_depth(raw) == _depth_char_by_char(raw), raw


def _spec_variants(rng: random.Random) -> object:
    """A raw header entry: mostly well formed, often broken in one of the ways files are."""
    code = rng.choice(["F32", "F16", "F4", "F6_E2M3", "I64", "BOOL", "X", 5, None, ["F32"]])
    shape: object = [rng.choice([0, 1, 2, 3, 4, 8]) for _ in range(rng.randint(0, 3))]
    if rng.random() < 0.15:
        shape = rng.choice([[1.0], [True], [-1], [2**63], "[2]", None, [1] * 65, (2,)])
    bits = {"F32": 32, "F16": 16, "F4": 4, "F6_E2M3": 6, "I64": 64}.get(str(code), 8)
    numel = 1
    for d in shape if isinstance(shape, list) else []:
        numel *= d if isinstance(d, int) else 1
    start = rng.choice([0, 4, 2**62])
    end: object = start + numel * bits // 8 + rng.choice([0, 0, 0, 1, -1])
    offsets: object = [start, end]
    if rng.random() < 0.1:
        offsets = rng.choice([[0], [0, 4, 8], [0.0, 4.0], [4, 0], [-4, 0], None, [0, 2**63]])
    spec: dict[str, object] = {"dtype": code, "shape": shape, "data_offsets": offsets}
    if rng.random() < 0.05:
        del spec[rng.choice(list(spec))]
    return spec if rng.random() > 0.03 else rng.choice([[1, 2], "x", 3, None])


def test_header_columns_pass_exactly_when_every_entry_passes_its_own_checks() -> None:
    rng = random.Random(1)
    for _ in range(5_000):
        specs = [_spec_variants(rng) for _ in range(rng.randint(0, 4))]
        names = [f"t{i}" for i in range(len(specs))]
        columns = _plain_columns(specs)
        try:
            entries = [_entry(Path("x"), n, s) for n, s in zip(names, specs, strict=True)]
        except CheckpointFormatError:
            assert columns is None, specs
            continue
        assert columns == (
            [e.dtype for e in entries],
            [e.shape for e in entries],
            [e.start for e in entries],
            [e.end for e in entries],
        ), specs


def _write(path: Path, header: dict[str, object], data: bytes) -> Path:
    blob = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_a_bad_entry_among_good_ones_is_named_by_its_own_check(tmp_path: Path) -> None:
    good = {
        f"w{i}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * i, 4 * i + 4]}
        for i in range(5)
    }
    good["w3"] = {"dtype": "F32", "shape": [2], "data_offsets": [12, 16]}
    with pytest.raises(
        CheckpointFormatError, match=r"'w3' is F32 \[2\] \(8 bytes\) but its offsets span 4"
    ):
        read_header(_write(tmp_path / "x.safetensors", good, bytes(20)))


def test_header_columns_and_entries_agree(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_file({"b": torch.zeros(2, 3), "a": torch.zeros(4, dtype=torch.int64)}, str(path))
    header = read_header(path)
    assert list(header.entries) == header.names
    infos = header.tensor_infos()
    assert [header.tensor_info(n) for n in header.names] == infos
    assert {i.name: (i.shape, i.dtype, i.nbytes) for i in infos} == {
        "a": ((4,), "int64", 32),
        "b": ((2, 3), "float32", 24),
    }


def test_table_reads_data_and_original_names_after_prefixes_are_stripped(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    tensors = {"module.fc.weight": torch.arange(6.0).reshape(2, 3), "module.fc.bias": torch.ones(2)}
    save_file(tensors, str(path))
    table = open_checkpoint(path)
    assert list(table) == ["fc.bias", "fc.weight"]
    assert table.original_name("fc.weight") == "module.fc.weight"
    assert table["fc.weight"].name == "fc.weight"
    assert torch.equal(table.load("fc.weight"), tensors["module.fc.weight"])
    assert torch.equal(table.to_state_dict()["fc.bias"], tensors["module.fc.bias"])


_DIGITS = re.compile(r"(\d+)")


def _tagged_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """``a10b`` → ((1, "a"), (0, 10), (1, "b")): numbers tagged to sort before text."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in _DIGITS.split(text) if p)


def test_natural_key_orders_as_tagged_text_and_numbers() -> None:
    rng = random.Random(2)
    for _ in range(50_000):
        a, b = ("".join(rng.choice("ab.-_ 0129") for _ in range(rng.randint(0, 7))) for _ in "ab")
        assert (natural_key(a) < natural_key(b)) == (_tagged_key(a) < _tagged_key(b)), (a, b)
        assert (natural_key(a) == natural_key(b)) == (_tagged_key(a) == _tagged_key(b)), (a, b)


def test_sorted_order_read_pairwise_equals_sorting() -> None:
    rng = random.Random(3)
    for _ in range(20_000):
        keys = ["".join(rng.choice("ab.10") for _ in range(rng.randint(0, 4))) for _ in range(4)]
        expected = keys == sorted(keys) or keys == sorted(keys, key=natural_key)
        assert is_sorted_order(keys) == expected, keys
