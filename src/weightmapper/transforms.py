"""Registered tensor transforms: named, parameterised, invertible operations on tensors.

A transform is recorded in a mapping as a :class:`TransformSpec` (a name and JSON-ready
parameters), so a mapping file says exactly how each source tensor becomes its target.
New transforms register with :func:`register_transform`.

One-to-one transforms (``identity``, ``transpose``, ``permute``, ``reshape``) take one
tensor and return one. Multi-tensor transforms take and return sequences: ``split`` (1 → n,
inverse ``merge``), ``merge`` (n → 1 by concatenation, inverse ``split``), ``stack`` (n → 1
along a new dim, inverse ``unstack``) and ``unstack``. ``chain`` applies several specs in
order (a one-to-one step applies to every tensor in flight), e.g. GPT-2's ``Conv1D`` fused
``c_attn`` → ``transpose`` then ``split``. ``merge`` with ``group=k`` concatenates each run of
``k`` tensors (inverse: ``split`` with ``each=True``, which splits every tensor in flight), so
Mixtral's per-expert ``w1``/``w3`` → stacked ``gate_up_proj`` is ``merge(group=2)`` then
``stack``. Layout transforms reorder the rows of attention weights: ``rope_permute`` (q/k rows
per head, interleaved pairs ↔ rotate-half), ``interleave_heads`` (fused rows per head ↔
concatenated q, k, v) and ``interleave_kv_groups`` (fused rows per key/value group, unequal
sizes, ↔ concatenated); ``offset`` adds a constant (norm weights stored as ``w`` vs ``1 + w``).
Every transform is invertible; all but ``offset`` round-trip bit-exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from weightmapper.errors import MappingError, TransformError


@dataclass(frozen=True)
class TransformSpec:
    """A transform by name plus its parameters; JSON-ready through to_dict / from_dict."""

    name: str = "identity"
    """Registered transform name."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword parameters for the transform (shapes as lists, dims as ints)."""

    @property
    def is_identity(self) -> bool:
        """True when the tensor passes through unchanged."""
        return self.name == "identity"

    def to_dict(self) -> dict[str, Any]:
        """TransformSpec → ``{"name": ..., "params": {...}}``."""
        return {"name": self.name, "params": dict(self.params)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | str | None) -> TransformSpec:
        """``{"name", "params"}`` (or a bare name, or None for identity) → TransformSpec."""
        if data is None:
            return IDENTITY
        if isinstance(data, str):
            return cls(name=data)
        return cls(name=str(data.get("name", "identity")), params=dict(data.get("params") or {}))


IDENTITY = TransformSpec()


class Transform(Protocol):
    """A registered transform: applies itself and knows its inverse."""

    name: str
    arity: str  # "one" (tensor → tensor), "split" (1 → n), "merge" (n → 1), "any" (chain)

    def apply(self, tensors: Sequence[torch.Tensor], **params: Any) -> list[torch.Tensor]:
        """Input tensors → output tensors."""
        ...

    def inverse(self, **params: Any) -> TransformSpec:
        """This transform's parameters → the spec that undoes it."""
        ...


@dataclass(frozen=True)
class FunctionTransform:
    """A Transform built from two plain functions (apply and inverse-spec)."""

    name: str
    arity: str
    fn: Callable[..., list[torch.Tensor]]
    inverse_fn: Callable[..., TransformSpec]

    def apply(self, tensors: Sequence[torch.Tensor], **params: Any) -> list[torch.Tensor]:
        """Input tensors → output tensors."""
        return self.fn(list(tensors), **params)

    def inverse(self, **params: Any) -> TransformSpec:
        """This transform's parameters → the spec that undoes it."""
        return self.inverse_fn(**params)


_REGISTRY: dict[str, Transform] = {}


def register_transform(transform: Transform) -> Transform:
    """Add a transform to the registry by its name; returns it (usable as a decorator target)."""
    _REGISTRY[transform.name] = transform
    return transform


def get_transform(name: str) -> Transform:
    """Transform name → registered Transform; MappingError listing known names if unknown."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise MappingError(
            f"unknown tensor transform {name!r}; known transforms: {known}. "
            "Register a new one with weightmapper.transforms.register_transform."
        ) from None


def available_transforms() -> list[str]:
    """Names of all registered transforms, sorted."""
    return sorted(_REGISTRY)


def apply_transform(spec: TransformSpec, tensors: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """TransformSpec + input tensors → output tensors; TransformError if they do not fit."""
    transform = get_transform(spec.name)
    try:
        return transform.apply(tensors, **spec.params)
    except TransformError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        shapes = [tuple(t.shape) for t in tensors]
        raise TransformError(
            f"transform {spec.name} with {spec.params} cannot apply to tensors of shape "
            f"{shapes}: {e}. Check the mapping file was made for this checkpoint."
        ) from e


def apply_one(spec: TransformSpec, tensor: torch.Tensor) -> torch.Tensor:
    """One-to-one TransformSpec + tensor → transformed tensor."""
    if spec.is_identity:
        return tensor
    (out,) = apply_transform(spec, [tensor])
    return out


def invert(spec: TransformSpec) -> TransformSpec:
    """TransformSpec → the spec of its inverse."""
    return get_transform(spec.name).inverse(**spec.params)


def output_shapes(spec: TransformSpec, shapes: Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    """TransformSpec + input shapes → output shapes, computed on the meta device (no data)."""
    metas = [torch.empty(tuple(s), device="meta") for s in shapes]
    return [tuple(int(d) for d in t.shape) for t in apply_transform(spec, metas)]


def chain(*steps: TransformSpec) -> TransformSpec:
    """Several TransformSpecs → one ``chain`` spec applying them in order (identities dropped)."""
    real = [s for s in steps if not s.is_identity]
    if not real:
        return IDENTITY
    if len(real) == 1:
        return real[0]
    return TransformSpec("chain", {"steps": [s.to_dict() for s in real]})


# --- one-to-one transforms ---------------------------------------------------------------


def _single(ts: list[torch.Tensor], name: str) -> torch.Tensor:
    if len(ts) != 1:
        raise TransformError(
            f"transform {name} takes exactly one tensor, got {len(ts)}; use it on a one-to-one "
            "pair or inside a chain after a split"
        )
    return ts[0]


def _identity(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return ts


def _transpose(ts: list[torch.Tensor], dim0: int = 0, dim1: int = 1) -> list[torch.Tensor]:
    # contiguous() so the result can be written to safetensors as-is.
    return [_single(ts, "transpose").transpose(dim0, dim1).contiguous()]


def _permute(ts: list[torch.Tensor], dims: Sequence[int]) -> list[torch.Tensor]:
    return [_single(ts, "permute").permute(*dims).contiguous()]


def _permute_inverse(dims: Sequence[int]) -> TransformSpec:
    inv = [0] * len(dims)
    for i, d in enumerate(dims):
        inv[int(d)] = i
    return TransformSpec("permute", {"dims": inv})


def _reshape(
    ts: list[torch.Tensor], shape: Sequence[int], from_shape: Sequence[int] | None = None
) -> list[torch.Tensor]:
    t = _single(ts, "reshape")
    if from_shape is not None and tuple(t.shape) != tuple(from_shape):
        raise TransformError(
            f"reshape expects a tensor of shape {tuple(from_shape)}, got {tuple(t.shape)}"
        )
    if t.numel() != _prod(shape):
        raise TransformError(
            f"reshape to {tuple(shape)} needs {_prod(shape)} elements, tensor of shape "
            f"{tuple(t.shape)} has {t.numel()}"
        )
    return [t.reshape(tuple(shape)).contiguous()]


def _reshape_inverse(
    shape: Sequence[int], from_shape: Sequence[int] | None = None
) -> TransformSpec:
    if from_shape is None:
        raise MappingError(
            f"reshape to {list(shape)} has no 'from_shape' parameter, so it cannot be inverted; "
            "record the original shape as from_shape in the mapping"
        )
    return TransformSpec("reshape", {"shape": list(from_shape), "from_shape": list(shape)})


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


# --- multi-tensor transforms -------------------------------------------------------------


def _split(
    ts: list[torch.Tensor], sizes: Sequence[int], dim: int = 0, each: bool = False
) -> list[torch.Tensor]:
    if each:
        # Every tensor in flight is split the same way (the inverse of a grouped merge):
        # [a, b] → [a_0, ..., a_k, b_0, ..., b_k].
        return [p for t in ts for p in _split([t], sizes, dim)]
    t = _single(ts, "split")
    if t.dim() == 0:
        raise TransformError("split needs a tensor with at least one dimension, got a 0-d tensor")
    if sum(int(s) for s in sizes) != t.shape[dim]:
        raise TransformError(
            f"split sizes {list(sizes)} add up to {sum(sizes)}, but dim {dim} of the tensor "
            f"of shape {tuple(t.shape)} has {t.shape[dim]}"
        )
    # clone: a narrow along dim 0 is a view of the fused tensor, and shared storage would
    # make safetensors refuse the outputs and keep the whole fused tensor alive.
    return [p.clone(memory_format=torch.contiguous_format) for p in t.split(list(sizes), dim)]


def _merge(
    ts: list[torch.Tensor],
    dim: int = 0,
    sizes: Sequence[int] | None = None,
    group: int | None = None,
) -> list[torch.Tensor]:
    if not ts:
        raise TransformError("merge needs at least one tensor, got none")
    if group is not None:
        # Consecutive groups of ``group`` tensors are each concatenated (per-expert w1, w3
        # pairs → one gate_up slice per expert), so n tensors become n / group.
        g = int(group)
        if g < 1 or len(ts) % g:
            raise TransformError(
                f"merge with group={group} needs a multiple of {group} tensors, got {len(ts)}"
            )
        return [_merge(ts[i : i + g], dim, sizes)[0] for i in range(0, len(ts), g)]
    if sizes is not None:
        got = [int(t.shape[dim]) if t.dim() else 0 for t in ts]
        if got != [int(s) for s in sizes]:
            raise TransformError(f"merge expects sizes {list(sizes)} along dim {dim}, got {got}")
    return [torch.cat(ts, dim)]


def _merge_inverse(
    dim: int = 0, sizes: Sequence[int] | None = None, group: int | None = None
) -> TransformSpec:
    if sizes is None:
        raise MappingError(
            "a merge without 'sizes' cannot be inverted: the split points are unknown; "
            "record the sizes of the merged tensors in the mapping"
        )
    if group is not None:
        return TransformSpec("split", {"dim": dim, "sizes": list(sizes), "each": True})
    return TransformSpec("split", {"dim": dim, "sizes": list(sizes)})


def _split_inverse(sizes: Sequence[int], dim: int = 0, each: bool = False) -> TransformSpec:
    if each:
        return TransformSpec("merge", {"dim": dim, "sizes": list(sizes), "group": len(sizes)})
    return TransformSpec("merge", {"dim": dim, "sizes": list(sizes)})


def _stack(ts: list[torch.Tensor], dim: int = 0) -> list[torch.Tensor]:
    if not ts:
        raise TransformError("stack needs at least one tensor, got none")
    return [torch.stack(ts, dim)]


def _unstack(ts: list[torch.Tensor], dim: int = 0, count: int | None = None) -> list[torch.Tensor]:
    t = _single(ts, "unstack")
    if count is not None and (t.dim() == 0 or t.shape[dim] != count):
        raise TransformError(
            f"unstack expects {count} entries along dim {dim}, tensor has shape {tuple(t.shape)}"
        )
    return [p.clone(memory_format=torch.contiguous_format) for p in t.unbind(dim)]


def _chain(ts: list[torch.Tensor], steps: Sequence[dict[str, Any]]) -> list[torch.Tensor]:
    out = list(ts)
    for raw in steps:
        spec = TransformSpec.from_dict(raw)
        if get_transform(spec.name).arity == "one":
            # A one-to-one step inside a chain applies to every tensor in flight, so
            # "transpose, then split" and "split, then transpose each" both read naturally.
            out = [t for x in out for t in apply_transform(spec, [x])]
        else:
            out = apply_transform(spec, out)
    return out


def _chain_inverse(steps: Sequence[dict[str, Any]]) -> TransformSpec:
    inv = [invert(TransformSpec.from_dict(s)).to_dict() for s in reversed(steps)]
    return TransformSpec("chain", {"steps": inv})


register_transform(FunctionTransform("identity", "one", _identity, lambda: IDENTITY))
register_transform(
    FunctionTransform(
        "transpose",
        "one",
        _transpose,
        lambda dim0=0, dim1=1: TransformSpec("transpose", {"dim0": dim0, "dim1": dim1}),
    )
)
register_transform(FunctionTransform("permute", "one", _permute, _permute_inverse))
register_transform(FunctionTransform("reshape", "one", _reshape, _reshape_inverse))
register_transform(
    FunctionTransform(
        "split",
        "split",
        _split,
        _split_inverse,
    )
)
register_transform(FunctionTransform("merge", "merge", _merge, _merge_inverse))
register_transform(
    FunctionTransform(
        "stack", "merge", _stack, lambda dim=0: TransformSpec("unstack", {"dim": dim})
    )
)
register_transform(
    FunctionTransform(
        "unstack",
        "split",
        _unstack,
        lambda dim=0, count=None: TransformSpec("stack", {"dim": dim}),
    )
)
register_transform(FunctionTransform("chain", "any", _chain, _chain_inverse))


# --- layout transforms: row orders of attention weights -----------------------------------
#
# Libraries agree on what q, k and v compute but not on how their rows are laid out. These
# transforms reorder rows (dim 0) only, so every trailing dim (a weight's inputs, nothing for a
# bias) follows along and each round trip is a permutation: bit-exact.

ROPE_LAYOUTS = ("rotate_half", "interleaved")
ROW_ORDERS = ("concat", "interleaved")


def _rows(t: torch.Tensor, block: int, name: str) -> None:
    if t.dim() == 0 or t.shape[0] % block:
        raise TransformError(
            f"{name} needs dim 0 to be a multiple of {block}, got a tensor of shape "
            f"{tuple(t.shape)}; check head_dim / heads / sizes"
        )


def _choice(value: str, allowed: Sequence[str], name: str) -> str:
    if value not in allowed:
        raise TransformError(f"{name}: 'to' must be one of {list(allowed)}, got {value!r}")
    return value


def _rope_permute(ts: list[torch.Tensor], head_dim: int, to: str) -> list[torch.Tensor]:
    """q or k rows per head: interleaved pairs (x0 y0 x1 y1 …) ↔ rotate-half (x0 x1 … y0 y1 …)."""
    t = _single(ts, "rope_permute")
    d = int(head_dim)
    if d < 2 or d % 2:
        raise TransformError(f"rope_permute needs an even head_dim >= 2, got {head_dim}")
    _rows(t, d, "rope_permute")
    rest = tuple(t.shape[1:])
    heads = t.shape[0] // d
    if _choice(to, ROPE_LAYOUTS, "rope_permute") == "rotate_half":
        # Meta's interleaved pairs → HF's halves (the permute of HF's llama conversion script)
        out = t.reshape(heads, d // 2, 2, *rest).transpose(1, 2)
    else:
        out = t.reshape(heads, 2, d // 2, *rest).transpose(1, 2)
    return [out.reshape(t.shape).contiguous()]


def _group_rows(
    ts: list[torch.Tensor], groups: int, sizes: Sequence[int], to: str, name: str
) -> list[torch.Tensor]:
    """Rows [A; B; C] (each ``groups`` blocks) ↔ per group [A_0 B_0 C_0 A_1 B_1 C_1 …]."""
    t = _single(ts, name)
    g, sizes = int(groups), [int(s) for s in sizes]
    if g < 1 or not sizes or min(sizes) < 1:
        raise TransformError(f"{name} needs groups >= 1 and positive sizes, got {g}, {sizes}")
    if t.dim() == 0 or t.shape[0] != g * sum(sizes):
        raise TransformError(
            f"{name}: {g} groups of sizes {sizes} make {g * sum(sizes)} rows, tensor of shape "
            f"{tuple(t.shape)} has {t.shape[0] if t.dim() else 0}"
        )
    rest = tuple(t.shape[1:])
    if _choice(to, ROW_ORDERS, name) == "concat":
        per_group = t.reshape(g, sum(sizes), *rest).split(sizes, dim=1)
        out = torch.cat([p.reshape(g * s, *rest) for p, s in zip(per_group, sizes, strict=True)])
    else:
        parts = t.split([g * s for s in sizes], dim=0)
        blocks = [p.reshape(g, s, *rest) for p, s in zip(parts, sizes, strict=True)]
        out = torch.cat(blocks, dim=1).reshape(t.shape)
    return [out.contiguous()]


def _interleave_kv_groups(
    ts: list[torch.Tensor], groups: int, sizes: Sequence[int], to: str
) -> list[torch.Tensor]:
    """Fused q/k/v rows per key/value group (GPT-NeoX/GQA style) ↔ concatenated [q; k; v]."""
    return _group_rows(ts, groups, sizes, to, "interleave_kv_groups")


def _interleave_heads(
    ts: list[torch.Tensor], heads: int, parts: int, to: str
) -> list[torch.Tensor]:
    """Fused rows per head [q_0 k_0 v_0 q_1 …] ↔ concatenated [q; k; v] (equal-sized parts)."""
    t = _single(ts, "interleave_heads")
    h, n = int(heads), int(parts)
    if h < 1 or n < 1:
        raise TransformError(f"interleave_heads needs heads >= 1 and parts >= 1, got {h}, {n}")
    _rows(t, h * n, "interleave_heads")
    size = t.shape[0] // (h * n)
    return _group_rows([t], h, [size] * n, to, "interleave_heads")


def _flip_to(params: dict[str, Any], allowed: Sequence[str]) -> dict[str, Any]:
    other = allowed[1] if params["to"] == allowed[0] else allowed[0]
    return {**params, "to": other}


def _offset(ts: list[torch.Tensor], value: float) -> list[torch.Tensor]:
    """Norm weight stored as an offset: ``w + value`` (``1 + w`` layouts use value 1 / -1)."""
    return [_single(ts, "offset") + float(value)]


register_transform(
    FunctionTransform(
        "rope_permute",
        "one",
        _rope_permute,
        lambda head_dim, to: TransformSpec(
            "rope_permute", _flip_to({"head_dim": head_dim, "to": to}, ROPE_LAYOUTS)
        ),
    )
)
register_transform(
    FunctionTransform(
        "interleave_heads",
        "one",
        _interleave_heads,
        lambda heads, parts, to: TransformSpec(
            "interleave_heads", _flip_to({"heads": heads, "parts": parts, "to": to}, ROW_ORDERS)
        ),
    )
)
register_transform(
    FunctionTransform(
        "interleave_kv_groups",
        "one",
        _interleave_kv_groups,
        lambda groups, sizes, to: TransformSpec(
            "interleave_kv_groups",
            _flip_to({"groups": groups, "sizes": list(sizes), "to": to}, ROW_ORDERS),
        ),
    )
)
# Adding and subtracting a float is not always bit-exact (rounding), unlike the permutations.
register_transform(
    FunctionTransform(
        "offset", "one", _offset, lambda value: TransformSpec("offset", {"value": -float(value)})
    )
)


# --- proposing a one-to-one transform ----------------------------------------------------

# Modules that store a 2-D weight as (in_features, out_features), transposed against Linear.
TRANSPOSED_LINEAR_TYPES = frozenset({"Conv1D", "TFConv1D"})
LINEAR_TYPES = frozenset(
    {"Linear", "NonDynamicallyQuantizableLinear", "LazyLinear", "Bilinear", "MultiheadAttention"}
)


def weight_layout(module_type: str | None) -> str | None:
    """Module class name → ``"in_out"`` (Conv1D), ``"out_in"`` (Linear) or None when unknown."""
    if module_type in TRANSPOSED_LINEAR_TYPES:
        return "in_out"
    if module_type in LINEAR_TYPES:
        return "out_in"
    return None


def infer_transform(
    source_shape: Sequence[int],
    target_shape: Sequence[int],
    *,
    source_type: str | None = None,
    target_type: str | None = None,
    param: str = "weight",
    source_param: str | None = None,
    target_param: str | None = None,
) -> tuple[TransformSpec, str] | None:
    """Source and target shape (+ module class names, parameter names) → (transform, confidence).

    Confidence is ``"high"`` when shapes or module types settle the layout and ``"low"``
    when they cannot: a square 2-D weight where one side is known to be ``Conv1D`` and the
    other side's type is unknown. None means no registered one-to-one transform fits.
    ``source_param`` / ``target_param`` (default ``param``) name each side's parameter: a
    2-D ``kernel`` (Flax, Keras ``Dense``) is stored (in, out) like ``Conv1D``.
    """
    src, tgt = tuple(int(d) for d in source_shape), tuple(int(d) for d in target_shape)
    src_param, tgt_param = source_param or param, target_param or param
    src_layout = weight_layout(source_type) or _param_layout(src_param, len(src))
    tgt_layout = weight_layout(target_type) or _param_layout(tgt_param, len(tgt))
    is_matrix_weight = len(src) == 2 and all(
        p.endswith(("weight", "kernel")) for p in (src_param, tgt_param)
    )
    if is_matrix_weight and src_layout and tgt_layout and src_layout != tgt_layout:
        if src[::-1] == tgt:
            return TransformSpec("transpose", {"dim0": 0, "dim1": 1}), "high"
        return None
    if src == tgt:
        one_side_transposed = (src_layout == "in_out") != (tgt_layout == "in_out")
        unknown_side = src_layout is None or tgt_layout is None
        if is_matrix_weight and src[0] == src[1] and one_side_transposed and unknown_side:
            return IDENTITY, "low"
        return IDENTITY, "high"
    if len(src) == 2 and src[::-1] == tgt:
        return TransformSpec("transpose", {"dim0": 0, "dim1": 1}), "high"
    squeezed_src = tuple(d for d in src if d != 1)
    squeezed_tgt = tuple(d for d in tgt if d != 1)
    if squeezed_src == squeezed_tgt:
        # (C,1,1) ↔ (C,), (O,I,1,1) ↔ (O,I): the same elements in the same order.
        return TransformSpec("reshape", {"shape": list(tgt), "from_shape": list(src)}), "high"
    return None


def _param_layout(param: str, ndim: int) -> str | None:
    """Parameter name + rank → ``"in_out"`` for a 2-D ``kernel`` (Flax/Keras Dense), else None."""
    if ndim == 2 and param.endswith("kernel"):
        return "in_out"
    return None


def refine_by_param_names(
    spec: TransformSpec,
    confidence: str,
    source_key: str,
    target_key: str,
    source_shape: Sequence[int],
    target_shape: Sequence[int],
    *,
    source_type: str | None = None,
    target_type: str | None = None,
) -> tuple[TransformSpec, str]:
    """A one-to-one pair's transform + keys, shapes, types → the transform parameter names imply.

    Shapes alone cannot tell whether a square matrix is transposed. A 2-D Flax/Keras
    ``kernel`` is stored (in, out) whatever its module's class is called, so a square
    ``kernel`` ↔ ``Linear`` ``weight`` pair is transposed; against a side of unknown layout
    it stays as it is but low confidence. Any other pair is returned unchanged.
    """
    src_param, tgt_param = source_key.rsplit(".", 1)[-1], target_key.rsplit(".", 1)[-1]
    if len(source_shape) != 2 or spec.name not in ("identity", "transpose"):
        return spec, confidence
    if not (src_param.endswith("kernel") or tgt_param.endswith("kernel")):
        return spec, confidence
    inferred = infer_transform(
        source_shape,
        target_shape,
        source_type=source_type,
        target_type=target_type,
        source_param=src_param,
        target_param=tgt_param,
    )
    return inferred if inferred is not None else (spec, confidence)
