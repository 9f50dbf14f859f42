"""TensorInfo: what the mapper needs to know about one tensor, without its data."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and dtype of one tensor, plus where it lives; never the data itself.

    Built from checkpoint headers, from a module's parameters and buffers, or from a
    state dict; meta-device tensors give the same TensorInfo as real ones.
    """

    name: str
    """Full dotted key, as in a state dict (``encoder.layers.0.attn.q_proj.weight``)."""
    shape: tuple[int, ...]
    """Tensor shape; ``()`` for a 0-d tensor."""
    dtype: str
    """dtype name without the ``torch.`` prefix (``float32``, ``bfloat16``, ``int64``)."""
    nbytes: int = 0
    """Size of the tensor data in bytes."""
    file: str | None = None
    """File (or shard) that holds the data, when read from disk."""
    is_buffer: bool | None = None
    """True for a registered buffer, False for a parameter, None when unknown (a bare state dict)."""

    @property
    def numel(self) -> int:
        """Number of elements (1 for a 0-d tensor)."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @classmethod
    def from_tensor(
        cls, name: str, tensor: torch.Tensor, *, is_buffer: bool | None = None
    ) -> TensorInfo:
        """Tensor (any device, meta included) → TensorInfo; reads no data."""
        return cls(
            name=name,
            shape=tuple(int(d) for d in tensor.shape),
            dtype=dtype_name(tensor.dtype),
            nbytes=tensor.numel() * tensor.element_size(),
            is_buffer=is_buffer,
        )


def tensor_infos(
    names: Iterable[str],
    shapes: Iterable[tuple[int, ...]],
    dtypes: Iterable[str],
    nbytes: Iterable[int],
    file: str | None = None,
) -> list[TensorInfo]:
    """Columns of names, shapes, dtypes and byte sizes (+ one file) → a TensorInfo each.

    Equal to calling ``TensorInfo(...)`` per row; a frozen dataclass's ``__init__`` sets each
    field through ``object.__setattr__``, which dominates reading a 100k-tensor header, so
    the rows are filled in directly.
    """
    new = object.__new__
    out = []
    for row in zip(names, shapes, dtypes, nbytes, strict=True):
        fields = (info := new(TensorInfo)).__dict__
        fields["name"], fields["shape"], fields["dtype"], fields["nbytes"] = row
        fields["file"], fields["is_buffer"] = file, None
        out.append(info)
    return out


def dtype_name(dtype: torch.dtype) -> str:
    """torch.dtype → its short name (``torch.float32`` → ``float32``)."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """Short dtype name → torch.dtype; raises ValueError for unknown names."""
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown dtype name {name!r}")
    return dt
