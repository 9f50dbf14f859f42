"""Cutting a header in safetensors' own layout gives what parsing it as JSON gives.

Headers written by safetensors are cut, never parsed; a header changed in any way is either
refused by the cut (and parsed) or cut to exactly the values parsing gives, never to others.
"""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.errors import CheckpointFormatError
from weightmapper.safetensors_io import _BITS, MAX_DIMS, MAX_EXTENT, _parsed_columns
from weightmapper.safetensors_layout import LayoutColumns, layout_columns


def _cut(raw: bytes) -> LayoutColumns | None:
    return layout_columns(raw, bits=_BITS, max_dims=MAX_DIMS, max_extent=MAX_EXTENT)


def _header_bytes(path: Path) -> bytes:
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[8 : 8 + n]


def _saved(tmp_path: Path, metadata: dict[str, str] | None) -> bytes:
    tensors = {
        "layers.0.attn.q_proj.weight": torch.zeros(4, 3),
        "layers.0.attn.q_proj.bias": torch.zeros(4, dtype=torch.bfloat16),
        "layers.10.norm.weight": torch.zeros(()),
        "empty": torch.zeros(0, 5, dtype=torch.int8),
        "flags": torch.zeros(3, dtype=torch.bool),
        "名前.weight": torch.zeros(2, 2, dtype=torch.float16),
        "": torch.zeros(1, dtype=torch.int64),
    }
    path = tmp_path / "m.safetensors"
    save_file(tensors, str(path), metadata=metadata)
    return _header_bytes(path)


@pytest.mark.parametrize(
    "metadata",
    [None, {"format": "pt"}, {"a": '{"x": "y\\\\z"}', "weightmapper_aliases": "{}", "é": ""}],
)
def test_headers_safetensors_writes_are_cut_to_what_parsing_gives(
    tmp_path: Path, metadata: dict[str, str] | None
) -> None:
    raw = _saved(tmp_path, metadata)
    cut = _cut(raw)
    assert cut is not None
    assert cut == _parsed_columns(tmp_path / "m.safetensors", raw)
    assert cut[5] == (metadata or {})


_NOISE = [b'"', b"\\", b"{", b"}", b"[", b"]", b",", b":", b"0", b"1", b"9", b"-", b".", b"e"]
_NOISE += [b" ", b"\x00", b"\x01", b"\x1f", b"\xc3", b"\xa9", b"\xff", b"__metadata__", b"F4"]
_NOISE += [b"01", b"1.0", b"true", b"NaN", b"9" * 20, b'\\"', b"\\u0041", b'"a":{}', b"U8"]


def _mutated(rng: random.Random, raw: bytes) -> bytes:
    """Raw header → a copy with a few bytes replaced, inserted or deleted, or a run of it
    repeated or dropped (a name listed twice, an entry lost)."""
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(out) + 1)
        kind = rng.randrange(5)
        if kind == 0 and i < len(out):
            out[i : i + 1] = rng.choice(_NOISE)
        elif kind == 1:
            out[i:i] = rng.choice(_NOISE)
        elif kind == 2:
            del out[i : i + rng.randint(1, 3)]
        else:
            j = min(len(out), i + rng.randint(1, 120))
            out[i:i] = out[i:j] if kind == 3 else b""
            if kind == 4:
                del out[i:j]
    return bytes(out)


def test_a_changed_header_is_cut_only_to_what_parsing_gives(tmp_path: Path) -> None:
    rng = random.Random(6)
    bases = [_saved(tmp_path, None), _saved(tmp_path, {"format": "pt", "k": 'a\\"b'})]
    bases.append(
        json.dumps(
            {"a": {"dtype": "F4", "shape": [3, 2], "data_offsets": [0, 3]}}, separators=(",", ":")
        ).encode()
    )
    accepted = 0
    for _ in range(6_000):
        raw = _mutated(rng, rng.choice(bases))
        cut = _cut(raw)
        if cut is None:
            continue
        accepted += 1
        try:
            parsed = _parsed_columns(Path("x"), raw)
        except CheckpointFormatError as e:
            raise AssertionError(f"cut a header that parsing refuses: {raw!r}") from e
        assert cut == parsed, raw
    assert accepted > 100  # the changes that keep the layout (a digit, a name) are cut too
