"""Seeded mutations of valid checkpoints: bytes, safetensors headers, zip pickles, indexes.

Every mutator takes a ``Seed`` and a ``random.Random`` and returns the mutated files plus a
short label of what it did, so a failing input can be rebuilt from (format, seed, index).
Mutations aim at what readers trust: length fields, offsets, shapes, dtypes, names,
pickle integers (sizes, strides, storage offsets) and shard paths.
"""

from __future__ import annotations

import json
import pickletools
import random
import struct
import zipfile
import zlib
from collections.abc import Callable
from io import BytesIO
from typing import Any

from fuzz_seeds import Seed

Files = dict[str, bytes]
Mutation = tuple[Files, str]

INTERESTING_U64: tuple[int, ...] = (
    0,
    1,
    7,
    8,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**53,
    2**63 - 1,
    2**63,
    2**64 - 1,
)
"""Length and offset values that break readers: zero, sign bits, 32-bit edges, u64 max."""
INTERESTING_INTS: tuple[int, ...] = (0, -1, -(2**31), 2**31 - 1, 2**40, -(2**63), 2**63 - 1, 3)

_HOSTILE_SHARD_PATHS: tuple[str, ...] = (
    "../../etc/passwd",
    "/etc/passwd",
    "sub/../../outside.safetensors",
    "..",
    ".",
    "",
    "C:\\Windows\\system.ini",
    "..\\..\\secret",
    "nested/dir/shard.safetensors",
    "shard\x00.safetensors",
    "missing-00009-of-00009.safetensors",
)


def mutate(fmt: str, seed: Seed, others: list[Seed], rng: random.Random) -> Mutation:
    """Format + valid seed (+ other seeds to splice from) + rng → (mutated files, label)."""
    if fmt == "safetensors-header":
        return _single(seed, _mutate_safetensors_header(seed.files[seed.entry], rng))
    if fmt in ("safetensors-sharded", "pickle-sharded"):
        return _mutate_sharded(seed, others, rng)
    data = seed.files[seed.entry]
    if fmt in ("pt-zip", "lightning-ckpt") and rng.random() < 0.5:
        return _single(seed, _mutate_zip_pickle(data, rng))
    if fmt == "pt-legacy" and rng.random() < 0.5:
        return _single(seed, _mutate_pickle_ints(data, rng))
    splice = others[rng.randrange(len(others))].files[seed.entry] if others else data
    return _single(seed, mutate_bytes(data, rng, splice))


def _single(seed: Seed, result: tuple[bytes, str]) -> Mutation:
    data, label = result
    return {seed.entry: data}, label


# --- plain bytes --------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random, splice: bytes = b"") -> tuple[bytes, str]:
    """Bytes → (1-3 stacked byte-level mutations of them, label)."""
    labels = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        op = rng.choice(_BYTE_OPS)
        data, label = op(bytearray(data), rng, splice)
        labels.append(label)
    return bytes(data), "+".join(labels)


def _flip(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    if not b:
        return b, "flip-empty"
    n = rng.choice((1, 1, 2, 4, 8))
    for _ in range(n):
        i = rng.randrange(len(b))
        b[i] ^= 1 << rng.randrange(8)
    return b, f"flip{n}"


def _set_byte(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    if not b:
        return b, "set-empty"
    i = rng.randrange(len(b))
    b[i] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
    return b, f"set@{i}"


def _truncate(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    n = rng.choice((0, 1, 7, 8, 9, 16, rng.randrange(len(b) + 1), len(b) - 1))
    n = max(0, min(n, len(b)))
    return b[:n], f"truncate{n}"


def _insert(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    i = rng.randrange(len(b) + 1)
    junk = bytes(rng.randrange(256) for _ in range(rng.choice((1, 3, 8, 64))))
    return b[:i] + junk + b[i:], f"insert{len(junk)}@{i}"


def _delete(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    if not b:
        return b, "delete-empty"
    i = rng.randrange(len(b))
    n = rng.choice((1, 4, 8, 32, 256))
    return b[:i] + b[i + n :], f"delete{n}@{i}"


def _duplicate(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    if not b:
        return b, "dup-empty"
    i = rng.randrange(len(b))
    n = rng.choice((4, 16, 128))
    return b[: i + n] + b[i : i + n] + b[i + n :], f"dup{n}@{i}"


def _overwrite_int(b: bytearray, rng: random.Random, _s: bytes) -> tuple[bytearray, str]:
    if len(b) < 8:
        return b, "int-short"
    i = rng.choice((0, rng.randrange(len(b) - 7)))
    value = rng.choice((*INTERESTING_U64, len(b), len(b) - 7, len(b) + 1))
    width = rng.choice((4, 8))
    b[i : i + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
    return b, f"u{width * 8}={value}@{i}"


def _splice(b: bytearray, rng: random.Random, other: bytes) -> tuple[bytearray, str]:
    if not other or not b:
        return b, "splice-none"
    i = rng.randrange(len(b))
    j = rng.randrange(len(other))
    return b[:i] + bytearray(other[j:]), f"splice@{i}:{j}"


_BYTE_OPS: tuple[Callable[[bytearray, random.Random, bytes], tuple[bytearray, str]], ...] = (
    _flip,
    _flip,
    _set_byte,
    _truncate,
    _insert,
    _delete,
    _duplicate,
    _overwrite_int,
    _overwrite_int,
    _splice,
)


# --- safetensors header, structurally -----------------------------------------------------


def split_safetensors(data: bytes) -> tuple[dict[str, Any], bytes]:
    """safetensors bytes → (parsed header, data section)."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def join_safetensors(header_text: bytes, body: bytes, length: int | None = None) -> bytes:
    """Header JSON bytes + data section (+ a length field to claim) → safetensors bytes."""
    n = len(header_text) if length is None else length
    return struct.pack("<Q", n % 2**64) + header_text + body


def _mutate_safetensors_header(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    header, body = split_safetensors(data)
    names = [k for k in header if k != "__metadata__"]
    name = rng.choice(names)
    spec = header[name]
    op = rng.randrange(16)
    label = f"hdr{op}:{name}"
    raw: bytes | None = None
    length: int | None = None
    if op == 0:  # offsets overlapping another tensor's
        other = header[rng.choice(names)]
        spec["data_offsets"] = list(other["data_offsets"])
    elif op == 1:  # end beyond the data section
        start, _ = spec["data_offsets"]
        spec["data_offsets"] = [start, len(body) + rng.choice((1, 8, 2**20, 2**40))]
    elif op == 2:  # negative or enormous offsets
        spec["data_offsets"] = [rng.choice(INTERESTING_INTS), rng.choice(INTERESTING_INTS)]
    elif op == 3:  # start after end
        a, b = spec["data_offsets"]
        spec["data_offsets"] = [b + 1, a]
    elif op == 4:  # shape that does not match the bytes
        spec["shape"] = [rng.choice((0, 1, 3, 2**20, 2**31, 2**62)), rng.choice((1, 2, 7))]
    elif op == 5:  # negative, fractional or non-numeric dims
        spec["shape"] = rng.choice(([-1, 4], [2.5], ["3"], [None], "abc", 7, [[2]]))
    elif op == 6:  # unknown or malformed dtype
        spec["dtype"] = rng.choice(("F4", "Q8", "f32", "", 5, None, "BF16 ", "F8_E4M3FNUZ"))
    elif op == 7:  # a field missing, or an extra one
        spec.pop(rng.choice(("dtype", "shape", "data_offsets")))
    elif op == 8:  # non-UTF-8 tensor name
        text = json.dumps(header).encode()
        raw = text.replace(json.dumps(name).encode(), b'"\xff\xfe' + name.encode() + b'"', 1)
    elif op == 9:  # the same name twice
        text = json.dumps(header)
        dup = json.dumps({name: header[rng.choice(names)]})[1:-1]
        raw = (text[:-1] + ", " + dup + "}").encode()
    elif op == 10:  # a length field that lies (huge, "negative", too short, too long)
        length = rng.choice((*INTERESTING_U64, len(data), len(data) - 7))
    elif op == 11:  # metadata of the wrong kind
        header["__metadata__"] = rng.choice(
            ([1, 2], "text", {"k": 5}, {"k": None}, {name: "missing"}, {"alias": name})
        )
    elif op == 12:  # header that is not an object
        raw = rng.choice((b"[]", b"123", b'"text"', b"null", b"{", b"[" * 5000 + b"]" * 5000))
    elif op == 13:  # a hole or trailing bytes in the data section
        body = body + b"\0" * rng.choice((1, 8, 100))
    elif op == 14:  # a tensor renamed to something odd
        header[rng.choice(("", "a" * 10_000, "__metadata__x", "x.", ".", "\u202e"))] = header.pop(
            name
        )
    else:  # 0-d / zero-size claims on an existing tensor
        start, _ = spec["data_offsets"]
        spec["shape"] = rng.choice(([], [0], [0, 5]))
        spec["data_offsets"] = [start, start + rng.choice((0, 1, 2, 4))]
    text = raw if raw is not None else json.dumps(header).encode()
    return join_safetensors(text, body, length), label


# --- torch zip: the pickle inside, with its CRCs fixed -----------------------------------


def _mutate_zip_pickle(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """torch zip bytes → the same archive with one member's bytes changed in place.

    The member's CRC-32 is rewritten in both the local header and the central directory, so
    the change reaches torch's unpickler instead of stopping at zipfile's CRC check.
    """
    with zipfile.ZipFile(BytesIO(data)) as zf:
        infos = [i for i in zf.infolist() if i.compress_type == zipfile.ZIP_STORED]
    pkls = [i for i in infos if i.filename.endswith("data.pkl")]
    info = pkls[0] if pkls and rng.random() < 0.8 else rng.choice(infos)
    buf = bytearray(data)
    local = info.header_offset
    name_len, extra_len = struct.unpack("<HH", buf[local + 26 : local + 30])
    start = local + 30 + name_len + extra_len
    member = bytes(buf[start : start + info.compress_size])
    if info.filename.endswith(".pkl") and rng.random() < 0.6:
        new, label = _mutate_pickle_ints(member, rng)
    else:
        new, label = _flip(bytearray(member), rng, b"")
        new = bytes(new)
    new = new[: len(member)].ljust(len(member), b"\0")  # same length: offsets stay valid
    buf[start : start + len(member)] = new
    crc = struct.pack("<I", zlib.crc32(new) & 0xFFFFFFFF)
    buf[local + 14 : local + 18] = crc
    encoded = info.filename.encode()
    at = buf.find(b"PK\x01\x02")
    while at >= 0:
        n = struct.unpack("<H", buf[at + 28 : at + 30])[0]
        if bytes(buf[at + 46 : at + 46 + n]) == encoded:
            buf[at + 16 : at + 20] = crc
            break
        at = buf.find(b"PK\x01\x02", at + 4)
    return bytes(buf), f"zip:{info.filename}:{label}"


def _mutate_pickle_ints(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Pickle bytes → one integer argument (a size, stride, offset, key) set to an edge value.

    Only the argument bytes change, so the opcode stream stays well formed and the reader
    gets as far as using the value. Falls back to a byte flip when no integer is found.
    """
    ints: list[tuple[int, int]] = []  # (position of the argument, its width)
    widths = {"BININT": 4, "BININT1": 1, "BININT2": 2, "BINGET": 1, "LONG_BINGET": 4}
    try:
        for op, _arg, pos in pickletools.genops(data):
            if op.name in widths and pos is not None:
                ints.append((pos + 1, widths[op.name]))
    except Exception:  # a stream we already broke: any prefix found is enough
        pass
    if not ints:
        flipped, label = _flip(bytearray(data), rng, b"")
        return bytes(flipped), label
    pos, width = rng.choice(ints)
    value = rng.choice((0, 1, 2**8 - 1, 2**15, 2**16 - 1, 2**31 - 1, 2**31, 2**32 - 1))
    value %= 1 << (8 * width)
    b = bytearray(data)
    b[pos : pos + width] = value.to_bytes(width, "little")
    return bytes(b), f"pickle-int{width * 8}={value}@{pos}"


# --- sharded checkpoints: the index and the shards ------------------------------------------


def _mutate_sharded(seed: Seed, others: list[Seed], rng: random.Random) -> Mutation:
    files = dict(seed.files)
    index = json.loads(files[seed.entry])
    weight_map: dict[str, str] = index["weight_map"]
    shards = sorted(set(weight_map.values()))
    op = rng.randrange(9)
    if op == 0:  # a shard path pointing elsewhere
        key = rng.choice(sorted(weight_map))
        weight_map[key] = rng.choice(_HOSTILE_SHARD_PATHS)
        label = f"index-path:{weight_map[key]!r}"
    elif op == 1:  # a shard missing on disk
        gone = rng.choice(shards)
        del files[gone]
        label = f"missing:{gone}"
    elif op == 2:  # weight_map of the wrong kind
        index["weight_map"] = rng.choice(([], "x", {"a": 1}, {"a": None}, {}, None))
        label = f"weight_map={index['weight_map']!r}"
    elif op == 3:  # a tensor listed twice, or listed in the wrong shard
        key = rng.choice(sorted(weight_map))
        other = [s for s in shards if s != weight_map[key]]
        weight_map[key] = other[0] if other else weight_map[key]
        label = f"wrong-shard:{key}"
    elif op == 4:  # a tensor the shards do not hold
        weight_map["ghost.weight"] = rng.choice(shards)
        label = "ghost"
    elif op == 5:  # the index names itself or another index
        weight_map[rng.choice(sorted(weight_map))] = seed.entry
        label = "self"
    elif op == 6:  # raw bytes of the index
        data, label = mutate_bytes(files[seed.entry], rng)
        files[seed.entry] = data
        return files, f"index-bytes:{label}"
    else:  # one shard's bytes, as the single-file fuzzers do it
        shard = rng.choice(shards)
        fmt = (
            "pt-zip"
            if shard.endswith(".bin")
            else rng.choice(("safetensors", "safetensors-header"))
        )
        inner = Seed({shard: files[shard]}, shard)
        mutated, label = mutate(fmt, inner, [], rng)
        files.update(mutated)
        return files, f"shard:{shard}:{label}"
    files[seed.entry] = json.dumps(index).encode()
    return files, label
