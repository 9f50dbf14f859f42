"""Scoring: per-signal scores of candidate pairs, computed as numpy matrices per shape bucket.

Every final pair is scored with the same signals whatever cascade stage found it, so a
score means the same thing everywhere:

``shape``      1 for equal shapes; less for a transpose or reshape the types do not explain
``name``       token similarity of the canonical names plus agreement of layer indices
``hierarchy``  similarity of the parent module paths and of the module types
``order``      agreement of the pair's positions in execution/registration order,
               measured against the anchors the cascade already trusts
``structure``  how unambiguous the choice was (a unique shape, a whole group aligned,
               or the margin over the runner-up)

The combined score is the weighted mean of the signals (weights configurable).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from weightmapper.errors import MappingError
from weightmapper.names import fold, tokenize
from weightmapper.transforms import IDENTITY, TransformSpec

DEFAULT_WEIGHTS: dict[str, float] = {
    "shape": 0.2,
    "name": 0.3,
    "hierarchy": 0.15,
    "order": 0.15,
    "structure": 0.2,
}
SIGNALS: tuple[str, ...] = tuple(DEFAULT_WEIGHTS)

# Roles that must never be crossed (a bias never becomes a weight).
STRICT_ROLES: frozenset[str] = frozenset(
    {"weight", "bias", "running mean", "running var", "num batches tracked"}
)

# Module class name → family; families decide which module types may exchange weights.
_TYPE_FAMILIES: dict[str, str] = {
    "linear": "linear", "conv1d": "conv", "conv2d": "conv", "conv3d": "conv",
    "nondynamicallyquantizablelinear": "linear", "lazylinear": "linear",
    "convtranspose1d": "convtranspose", "convtranspose2d": "convtranspose",
    "convtranspose3d": "convtranspose",
    "batchnorm1d": "batchnorm", "batchnorm2d": "batchnorm", "batchnorm3d": "batchnorm",
    "syncbatchnorm": "batchnorm", "frozenbatchnorm2d": "batchnorm", "batchnormact2d": "batchnorm",
    "groupnorm": "groupnorm", "groupnormact": "groupnorm",
    "layernorm": "layernorm", "rmsnorm": "layernorm", "layernorm2d": "layernorm",
    "instancenorm1d": "instancenorm", "instancenorm2d": "instancenorm",
    "embedding": "embedding", "embeddingbag": "embedding",
    "multiheadattention": "attention",
}  # fmt: skip

# Pairs of families whose tensors may exchange (both directions).
_FRIENDLY: frozenset[frozenset[str]] = frozenset(
    {frozenset({"linear", "conv"}), frozenset({"linear", "embedding"})}
)
_NORMS: frozenset[str] = frozenset({"batchnorm", "groupnorm", "layernorm", "instancenorm"})


def type_family(module_type: str | None, local_names: Iterable[str] = ()) -> str | None:
    """Module class name (or, without one, the group's local tensor names) → family or None.

    Transformers' ``Conv1D`` is a linear layer stored transposed; any class name ending in
    ``RMSNorm``/``LayerNorm`` counts as a layer norm, ``...BatchNorm...`` as a batch norm.
    """
    if module_type:
        t = module_type.lower()
        if t == "conv1d" and module_type == "Conv1D":
            return "linear"
        if t in _TYPE_FAMILIES:
            return _TYPE_FAMILIES[t]
        if "batchnorm" in t:
            return "batchnorm"
        if "groupnorm" in t:
            return "groupnorm"
        if t.endswith(("rmsnorm", "layernorm")):
            return "layernorm"
        if t.endswith("embedding"):
            return "embedding"
        if t.endswith("linear"):
            return "linear"
        return None
    names = set(local_names)
    if names & {"running_mean", "running_var", "moving_mean", "moving_variance"}:
        return "batchnorm"
    return None


def guess_family(local_shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """A group's local name → shape (no module type known) → a family guess, or None.

    Statistics mean a batch norm; a weight with spatial dims (3-D to 5-D) a convolution.
    """
    fam = type_family(None, local_shapes)
    if fam is not None:
        return fam
    for name in ("weight", "kernel"):
        shape = local_shapes.get(name)
        if shape is not None and 3 <= len(shape) <= 5:
            return "conv"
    return None


def type_compat(fam_a: str | None, fam_b: str | None) -> float:
    """Two module families → 1 same, 0.6 unknown, 0.3 related, 0.25 two norms, 0 incompatible."""
    if fam_a is None or fam_b is None:
        return 0.6
    if fam_a == fam_b:
        return 1.0
    if frozenset({fam_a, fam_b}) in _FRIENDLY:
        return 0.3
    if fam_a in _NORMS and fam_b in _NORMS:
        # Another normalisation (BatchNorm → GroupNorm): the affine weight and bias still
        # carry over, the statistics never do (they have no partner of the same role).
        return 0.25
    if fam_a in _NORMS or fam_b in _NORMS:
        return 0.0
    return 0.3


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


def validate_weights(weights: Mapping[str, float] | None) -> dict[str, float]:
    """User weights (any subset of the signals) → full normalized weights; MappingError if bad."""
    if weights is None:
        return dict(DEFAULT_WEIGHTS)
    if not isinstance(weights, Mapping):
        raise MappingError(
            f"weights must be a dict of signal → weight, got {type(weights).__name__}"
        )
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise MappingError(
            f"unknown scoring weight key(s) {unknown}; known signals: {list(SIGNALS)}. "
            "Signals you leave out keep weight 0."
        )
    out = {k: 0.0 for k in SIGNALS}
    for k, v in weights.items():
        try:
            fv = float(v)
        except (TypeError, ValueError):
            raise MappingError(f"weight for {k!r} must be a number, got {v!r}") from None
        if not np.isfinite(fv) or fv < 0:
            raise MappingError(f"weight for {k!r} must be a finite number ≥ 0, got {v!r}")
        out[k] = fv
    if sum(out.values()) <= 0:
        raise MappingError(f"at least one weight must be positive, got {dict(weights)}")
    return out


def combine(breakdown: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Per-signal scores + weights → weighted mean in [0, 1]."""
    total = sum(weights.values())
    s = sum(weights[k] * float(breakdown.get(k, 0.0)) for k in weights)
    return float(min(1.0, max(0.0, s / total))) if total > 0 else 0.0


def combine_matrix(signals: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """Per-signal score matrices + weights → weighted-mean matrix."""
    total = sum(weights.values())
    out: np.ndarray | None = None
    for k, w in weights.items():
        if w == 0 or k not in signals:
            continue
        term = w * signals[k]
        out = term if out is None else out + term
    if out is None:
        shape = next(iter(signals.values())).shape
        return np.zeros(shape, dtype=np.float32)
    return (out / total).astype(np.float32)


def family_tokens(text: str) -> frozenset[str]:
    """A component-family name (``attention``, ``mlp``) → its canonical token set."""
    return frozenset(fold(t) for t in tokenize(text))


def parse_incompatible_pairs(
    pairs: Sequence[Sequence[str]] | None,
) -> list[tuple[frozenset[str], frozenset[str]]]:
    """User ``incompatible_pairs`` (e.g. ``[("attention", "mlp")]``) → canonical token pairs."""
    if pairs is None:
        return []
    out = []
    for p in pairs:
        if isinstance(p, str) or len(p) != 2:
            raise MappingError(
                f"each incompatible pair must be two component names like ('attention', 'mlp'); "
                f"got {p!r}"
            )
        a, b = family_tokens(str(p[0])), family_tokens(str(p[1]))
        if not a or not b:
            raise MappingError(f"incompatible pair {p!r} names an empty component")
        out.append((a, b))
    return out


def blocked_by_pairs(
    src_tokens: frozenset[str],
    tgt_tokens: frozenset[str],
    pairs: Sequence[tuple[frozenset[str], frozenset[str]]],
) -> bool:
    """Token sets of a source and a target key + incompatible pairs → True when blocked."""
    for a, b in pairs:
        if a <= src_tokens and b <= tgt_tokens and not (b <= src_tokens):
            return True
        if b <= src_tokens and a <= tgt_tokens and not (a <= src_tokens):
            return True
    return False
