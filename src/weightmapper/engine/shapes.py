"""Shapes: how a source tensor's shape becomes a target's, and which shapes could relate.

:func:`shape_relation` is the ``shape`` signal of one pair (its score) together with the
transform that makes the shapes agree; :func:`shape_bucket` groups shapes that could
relate at all, so that nothing is ever compared across buckets.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from weightmapper.transforms import IDENTITY, TransformSpec


def is_transposed_type(module_type: str | None) -> bool:
    """Module class name → True for layers that store a linear weight as (in, out)."""
    return module_type == "Conv1D"


@dataclass(frozen=True)
class ShapeRelation:
    """How a source tensor's shape becomes a target's: transform, shape score, confidence."""

    transform: TransformSpec
    score: float
    confidence: str = "high"


def shape_bucket(shape: tuple[int, ...], tolerance: float = 0.0) -> tuple[int, ...]:
    """Shape → a key equal for every shape that could possibly relate to it.

    Singleton dims are dropped (``(C,1,1)`` ~ ``(C,)``) and 2-D shapes sorted (transposes);
    with a shape tolerance only the rank remains.
    """
    sq = tuple(d for d in shape if d != 1)
    if tolerance > 0:
        return (-1, len(sq))
    if len(sq) >= 2:
        return tuple(sorted(sq))
    return sq


def shape_relation(
    src: tuple[int, ...],
    tgt: tuple[int, ...],
    src_type: str | None = None,
    tgt_type: str | None = None,
    tolerance: float = 0.0,
) -> ShapeRelation | None:
    """Source and target shapes (+ module types) → ShapeRelation, or None when incompatible.

    A ``Conv1D`` (in, out) weight against a ``Linear`` (out, in) one is transposed even when
    square; a transpose the types do not explain gets partial credit and low confidence when
    the matrix is square (then it is not proposed at all).
    """
    src_t = is_transposed_type(src_type)
    tgt_t = is_transposed_type(tgt_type)
    type_says_transpose = len(src) == 2 and src_t != tgt_t and (src_type and tgt_type) is not None
    if src == tgt:
        if type_says_transpose and src == src[::-1]:
            return ShapeRelation(TransformSpec("transpose", {"dim0": 0, "dim1": 1}), 1.0)
        if type_says_transpose:
            # Equal non-square shapes whose types say one is stored transposed: in and out
            # sizes disagree, so either the types mislead or these are different layers.
            return ShapeRelation(IDENTITY, 0.7, "low")
        return ShapeRelation(IDENTITY, 1.0)
    if len(src) == 2 and len(tgt) == 2 and src == tgt[::-1]:
        spec = TransformSpec("transpose", {"dim0": 0, "dim1": 1})
        return ShapeRelation(spec, 1.0 if type_says_transpose else 0.85)
    dims = _channels_last_dims(src, tgt)
    if dims is not None:
        return ShapeRelation(TransformSpec("permute", {"dims": dims}), 0.9)
    if tuple(d for d in src if d != 1) == tuple(d for d in tgt if d != 1):
        return ShapeRelation(
            TransformSpec("reshape", {"shape": list(tgt), "from_shape": list(src)}), 0.9
        )
    if tolerance > 0 and len(src) == len(tgt):
        rel = max(abs(a - b) / max(a, b, 1) for a, b in zip(src, tgt, strict=True))
        if rel <= tolerance:
            return ShapeRelation(IDENTITY, max(0.0, 1.0 - rel), "low")
    return None


@functools.lru_cache(maxsize=65536)
def cached_relation(
    src: tuple[int, ...],
    tgt: tuple[int, ...],
    src_type: str | None,
    tgt_type: str | None,
    tolerance: float,
) -> ShapeRelation | None:
    """:func:`shape_relation`, memoised (shapes and types repeat across a model)."""
    return shape_relation(src, tgt, src_type, tgt_type, tolerance)


def _channels_last_dims(src: tuple[int, ...], tgt: tuple[int, ...]) -> list[int] | None:
    """TF/Keras conv kernel (k..., in, out) ↔ torch (out, in, k...) → permute dims, or None."""
    n = len(src)
    if n < 3 or len(tgt) != n:
        return None
    # TF (k1..kn, in, out) → torch (out, in, k1..kn)
    to_torch = [n - 1, n - 2, *range(n - 2)]
    if tuple(src[d] for d in to_torch) == tgt:
        return to_torch
    # torch (out, in, k1..kn) → TF (k1..kn, in, out)
    to_tf = [*range(2, n), 1, 0]
    if tuple(src[d] for d in to_tf) == tgt:
        return to_tf
    return None
