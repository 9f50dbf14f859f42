"""Ground truth read back from another project's converter: which source tensor, which layout.

A converter is any function ``state dict → state dict`` shipped by another project. Every
source tensor is filled with values no other tensor holds (consecutive integers, exact in
float32), the converter runs, and each output tensor is read back element by element: the
integer it holds names the source tensor and the position it came from. The result is a
gather per target tensor (exact, whatever the layout) plus a label of the layout (identity,
transpose, rows permuted, slice of a fused tensor, concatenation, ...) for the tables.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

Converter = Callable[[dict[str, torch.Tensor]], Mapping[str, torch.Tensor]]
MAX_EXACT = 2**24
"""Integers up to here are exact in float32, the dtype most converters keep or cast to."""


@dataclass(frozen=True)
class TruthUnit:
    """One target tensor: the source tensors it is made of and exactly how."""

    target: str
    sources: tuple[str, ...]
    """Source keys in the order their elements first appear in the target."""
    layout: str
    """Readable label: ``identity``, ``transpose``, ``reshape``, ``rows permuted``, ``slice``,
    ``rows interleaved slice``, ``concat``, ``interleaved concat``, ``gather``."""
    index: torch.Tensor = field(repr=False)
    """Flat positions into ``cat([s.flatten() for s in sources])``, shaped like the target."""

    def expected(self, source_sd: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Source state dict → the tensor this target must hold."""
        flat = torch.cat([source_sd[s].detach().reshape(-1) for s in self.sources])
        return flat[self.index.reshape(-1)].reshape(self.index.shape).to(source_sd[self.sources[0]])

    def to_dict(self) -> dict[str, Any]:
        """TruthUnit → JSON-ready dict (the gather itself left out: it is large and derived)."""
        return {
            "target": self.target,
            "sources": list(self.sources),
            "layout": self.layout,
            "shape": list(self.index.shape),
        }


@dataclass(frozen=True)
class Truth:
    """A converter's whole answer: units per target, and the keys with no partner."""

    units: dict[str, TruthUnit]
    unmapped_source: frozenset[str]
    """Source keys the converter dropped."""
    unmapped_target: frozenset[str]
    """Target keys the converter does not produce (the target keeps its own values)."""

    def convert(self, source_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Source state dict → target state dict built from the truth alone."""
        return {t: u.expected(source_sd) for t, u in self.units.items()}

    def layouts(self) -> dict[str, int]:
        """Truth → layout label → number of target tensors with it."""
        out: dict[str, int] = {}
        for u in self.units.values():
            out[u.layout] = out.get(u.layout, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> str:
        """Truth → a small JSON document (units, layouts, unmapped keys)."""
        return json.dumps(
            {
                "units": [u.to_dict() for u in self.units.values()],
                "layouts": self.layouts(),
                "unmapped_source": sorted(self.unmapped_source),
                "unmapped_target": sorted(self.unmapped_target),
            },
            indent=1,
        )


def unique_valued(shapes: Mapping[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Key → shape → float32 tensors holding 1, 2, 3, ... across all keys (no value repeats).

    Zero never appears, so a converter that creates a tensor (zeros, init) is told apart.
    """
    total = sum(int(torch.Size(s).numel()) for s in shapes.values())
    if total >= MAX_EXACT:
        raise ValueError(
            f"source has {total} elements; unique float32 ids need fewer than {MAX_EXACT}: "
            "build a smaller configuration"
        )
    out: dict[str, torch.Tensor] = {}
    start = 1
    for k, s in shapes.items():
        n = int(torch.Size(s).numel())
        out[k] = torch.arange(start, start + n, dtype=torch.float32).reshape(s)
        start += n
    return out


def derive(
    source_shapes: Mapping[str, torch.Size],
    converter: Converter,
    target_keys: list[str] | None = None,
) -> Truth:
    """Source key → shape, a converter and the target's keys → Truth read back from its output.

    Raises ValueError when an output tensor holds a value no source tensor held (the converter
    computes something, e.g. a sum, that no gather reproduces).
    """
    ids = unique_valued(source_shapes)
    keys = list(ids)
    starts = torch.tensor(
        [int(ids[k].reshape(-1)[0]) for k in keys] if keys else [], dtype=torch.long
    )
    sizes = torch.tensor([ids[k].numel() for k in keys], dtype=torch.long)
    out = converter({k: v.clone() for k, v in ids.items()})
    units: dict[str, TruthUnit] = {}
    used: set[str] = set()
    for tkey, tensor in out.items():
        vals = tensor.detach().to(torch.float64).reshape(-1)
        if vals.numel() == 0:
            continue
        if not torch.equal(vals, vals.round()) or bool((vals < 1).any()):
            raise ValueError(f"converter output {tkey!r} holds values that no source tensor held")
        v = vals.to(torch.long)
        which = torch.searchsorted(starts, v, right=True) - 1
        local = v - starts[which]
        if bool((local >= sizes[which]).any()):
            raise ValueError(f"converter output {tkey!r} holds values outside every source")
        order = list(dict.fromkeys(which.tolist()))  # sources in order of first appearance
        src = tuple(keys[i] for i in order)
        base = torch.zeros(len(keys), dtype=torch.long)
        base[order] = torch.cumsum(sizes[order], 0) - sizes[order]
        off = base[which]
        index = (off + local).reshape(tensor.shape)
        units[tkey] = TruthUnit(
            target=tkey,
            sources=src,
            layout=classify(index, [tuple(source_shapes[s]) for s in src]),
            index=index,
        )
        used.update(src)
    tk = set(target_keys) if target_keys is not None else set(units)
    return Truth(
        units={k: u for k, u in units.items() if k in tk},
        unmapped_source=frozenset(set(keys) - used),
        unmapped_target=frozenset(tk - set(units)),
    )


def classify(index: torch.Tensor, shapes: list[tuple[int, ...]]) -> str:
    """A gather (target-shaped flat positions) + source shapes → a readable layout label."""
    n_src = sum(int(torch.Size(s).numel()) for s in shapes)
    flat = index.reshape(-1)
    if len(shapes) > 1:
        if flat.numel() == n_src and torch.equal(flat, torch.arange(n_src)):
            return "concat"
        return "interleaved concat" if flat.numel() == n_src else "gather"
    (shape,) = shapes
    if flat.numel() == n_src:
        if torch.equal(flat, torch.arange(n_src)):
            return "identity" if tuple(index.shape) == tuple(shape) else "reshape"
        if len(shape) == 2 and tuple(index.shape) == (shape[1], shape[0]):
            ref = torch.arange(n_src).reshape(shape).t()
            if torch.equal(index, ref):
                return "transpose"
        if len(shape) >= 1 and tuple(index.shape) == tuple(shape):
            rows = _row_sources(index, shape)
            if rows is not None:
                return "rows permuted"
        return "gather"
    # a part of one source: slice of a fused tensor
    if len(shape) >= 1 and index.dim() == len(shape) and tuple(index.shape[1:]) == tuple(shape[1:]):
        rows = _row_sources(index, shape)
        if rows is not None:
            contiguous = torch.equal(rows, torch.arange(int(rows[0]), int(rows[0]) + rows.numel()))
            return "slice" if contiguous else "rows interleaved slice"
    if index.dim() == 2 and len(shape) == 2 and index.shape[0] == shape[1]:
        return "transposed slice"
    return "gather"


def _row_sources(index: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor | None:
    """Gather + source shape → source row of each target row, or None if rows are not whole."""
    row = 1
    for d in shape[1:]:
        row *= int(d)
    idx = index.reshape(index.shape[0], -1)
    rows = idx[:, 0] // row
    ref = rows[:, None] * row + torch.arange(row)[None, :]
    return rows if torch.equal(idx, ref) else None
