"""Small valid checkpoints, one set per format the reader accepts: the fuzzer's seed corpus.

Each seed is a ``Seed``: the files of one checkpoint as bytes (relative name → content),
the name to open, and the tensors a correct reader must return. The tensors cover the
unusual cases on purpose: bf16, both fp8 flavours, bool, ints, 0-d and zero-size tensors.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import torch
from safetensors.torch import save as safetensors_bytes

FORMATS: tuple[str, ...] = (
    "safetensors",
    "safetensors-header",
    "safetensors-sharded",
    "pt-zip",
    "pt-legacy",
    "lightning-ckpt",
    "pickle-sharded",
)
"""Every fuzzed format; ``safetensors-header`` mutates the JSON header structurally."""


@dataclass(frozen=True)
class Seed:
    """One valid checkpoint held in memory: its files, which one to open, its tensors."""

    files: dict[str, bytes]
    entry: str
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


def tensor_sets() -> list[dict[str, torch.Tensor]]:
    """() → a few deterministic state dicts covering ordinary and unusual tensors."""
    g = torch.Generator().manual_seed(0)
    plain = {
        "encoder.0.weight": torch.randn(4, 3, generator=g),
        "encoder.0.bias": torch.randn(4, generator=g),
        "encoder.1.weight": torch.randn(2, 4, generator=g),
        "encoder.1.bias": torch.zeros(2),
    }
    unusual = {
        "bf16": torch.randn(3, 2, generator=g).to(torch.bfloat16),
        "fp8_e4m3": torch.randn(4, generator=g).to(torch.float8_e4m3fn),
        "fp8_e5m2": torch.randn(2, 2, generator=g).to(torch.float8_e5m2),
        "mask": torch.tensor([True, False, True]),
        "ids": torch.arange(5, dtype=torch.int64),
        "small_ints": torch.arange(-3, 3, dtype=torch.int8),
        "bytes": torch.arange(7, dtype=torch.uint8),
        "half": torch.randn(2, generator=g).to(torch.float16),
        "scalar": torch.tensor(3.5),
        "int_scalar": torch.tensor(7, dtype=torch.int32),
        "empty": torch.zeros(0, 4),
        "empty_1d": torch.zeros(0, dtype=torch.int64),
    }
    return [plain, unusual, {**plain, **unusual}]


def seeds(fmt: str) -> list[Seed]:
    """Format name → its valid seed checkpoints."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    return [_BUILDERS[fmt](sd) for sd in tensor_sets()]


def _safetensors(sd: dict[str, torch.Tensor]) -> Seed:
    return Seed({"model.safetensors": safetensors_bytes(sd)}, "model.safetensors", sd)


def _torch_bytes(obj: object, *, legacy: bool = False) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _pt_zip(sd: dict[str, torch.Tensor]) -> Seed:
    return Seed({"model.pt": _torch_bytes(sd)}, "model.pt", sd)


def _pt_legacy(sd: dict[str, torch.Tensor]) -> Seed:
    return Seed({"model.pth": _torch_bytes(sd, legacy=True)}, "model.pth", sd)


def _lightning(sd: dict[str, torch.Tensor]) -> Seed:
    ckpt = {
        "state_dict": sd,
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "2.4.0",
        "hyper_parameters": {"lr": 0.1, "layers": [4, 2], "name": "tiny"},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1}]}],
    }
    return Seed({"epoch=3.ckpt": _torch_bytes(ckpt)}, "epoch=3.ckpt", sd)


def _sharded(sd: dict[str, torch.Tensor], *, pickle: bool) -> Seed:
    keys = list(sd)
    ext, stem = ("bin", "pytorch_model") if pickle else ("safetensors", "model")
    files: dict[str, bytes] = {}
    weight_map: dict[str, str] = {}
    for i in range(2):
        shard = f"{stem}-{i + 1:05d}-of-00002.{ext}"
        part = {k: sd[k] for k in keys[i::2]}
        files[shard] = _torch_bytes(part) if pickle else safetensors_bytes(part)
        weight_map.update(dict.fromkeys(part, shard))
    index = f"{stem}.{ext}.index.json"
    files[index] = json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map}).encode()
    return Seed(files, index, sd)


_BUILDERS = {
    "safetensors": _safetensors,
    "safetensors-header": _safetensors,
    "safetensors-sharded": lambda sd: _sharded(sd, pickle=False),
    "pt-zip": _pt_zip,
    "pt-legacy": _pt_legacy,
    "lightning-ckpt": _lightning,
    "pickle-sharded": lambda sd: _sharded(sd, pickle=True),
}
