"""Registered tensor transforms: named, parameterised, invertible operations on tensors.

A transform is recorded in a mapping as a :class:`TransformSpec` (a name and JSON-ready
parameters), so a mapping file says exactly how each source tensor becomes its target.
New transforms register with :func:`register_transform`.

One-to-one transforms take one tensor and return one. Multi-tensor transforms
(``split``, ``merge``, ``stack``) take and return sequences of tensors.
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
    arity: str  # "one" (tensor → tensor), "split" (1 → n), "merge" (n → 1)

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
            f"transform {spec.name} with {spec.params} cannot apply to tensors of shape {shapes}: {e}. "
            "Check the mapping file was made for this checkpoint."
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


# --- one-to-one transforms ---------------------------------------------------------------


def _identity(ts: list[torch.Tensor]) -> list[torch.Tensor]:
    return ts


def _transpose(ts: list[torch.Tensor], dim0: int = 0, dim1: int = 1) -> list[torch.Tensor]:
    # contiguous() so the result can be written to safetensors as-is.
    return [ts[0].transpose(dim0, dim1).contiguous()]


def _reshape(
    ts: list[torch.Tensor], shape: Sequence[int], from_shape: Sequence[int] | None = None
) -> list[torch.Tensor]:
    t = ts[0]
    if t.numel() != _prod(shape):
        raise TransformError(
            f"reshape to {tuple(shape)} needs {_prod(shape)} elements, tensor of shape "
            f"{tuple(t.shape)} has {t.numel()}"
        )
    return [t.reshape(tuple(shape)).contiguous()]


def _prod(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


register_transform(FunctionTransform("identity", "one", _identity, lambda: IDENTITY))
register_transform(
    FunctionTransform(
        "transpose",
        "one",
        _transpose,
        lambda dim0=0, dim1=1: TransformSpec("transpose", {"dim0": dim0, "dim1": dim1}),
    )
)
register_transform(
    FunctionTransform(
        "reshape",
        "one",
        _reshape,
        lambda shape, from_shape=None: TransformSpec(
            "reshape", {"shape": list(from_shape or []), "from_shape": list(shape)}
        ),
    )
)
