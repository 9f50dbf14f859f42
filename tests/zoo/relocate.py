"""Refactoring a model without changing its function: wrapper prefixes, moved and renamed tensors.

These build the targets (or sources) of the ``refactor`` cases from any model:

- :class:`Wrapped` nests the model under a prefix (``module.``, ``backbone.body.``).
- :class:`Relocated` re-registers the model's layers under new module paths, in any order
  (flattened names, synonyms, ``Sequential`` indices → names, shuffled registration), while
  ``forward`` still runs the original graph; the layers are shared, so forward hooks on the
  new tree fire in execution order.
- :func:`rename_leaf_tensors` swaps layers for :class:`RenamedLeaf` views whose tensors carry
  other names (TF-style ``kernel``/``gamma``/``beta``).

Each records ``key_map``: original state-dict key → new key.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from weightmapper.errors import MappingError


def _own_tensor_names(module: nn.Module) -> list[str]:
    """Module → names of its own persistent parameters and buffers (not its children's)."""
    names = [n for n, p in module._parameters.items() if p is not None]
    names += [
        n
        for n, b in module._buffers.items()
        if b is not None and n not in module._non_persistent_buffers_set
    ]
    return names


def _attach(root: nn.Module, path: str, module: nn.Module) -> None:
    """Place ``module`` at dotted ``path`` under ``root``, creating empty containers."""
    *parents, leaf = path.split(".")
    node = root
    for p in parents:
        child = node._modules.get(p)
        if child is None:
            child = nn.Module()
            node.add_module(p, child)
        elif type(child) is not nn.Module:
            raise MappingError(f"cannot nest {path!r} under the layer already at {p!r}")
        node = child
    if leaf in node._modules:
        raise MappingError(f"two layers relocated onto the same path {path!r}")
    node.add_module(leaf, module)


class StandIn(nn.Module):
    """A module standing in for another: calls and train/eval go to the original, which it
    holds without registering it (its own tree decides the state-dict keys)."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "_original", original)

    def train(self, mode: bool = True) -> StandIn:
        """Set train/eval here and on the original (dropout and BatchNorm read it there)."""
        super().train(mode)
        self._original.train(mode)
        return self

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Same call as the original."""
        return self._original(*args, **kwargs)


class Wrapped(StandIn):
    """Model + dotted prefix → a wrapper whose keys are ``prefix.<original key>``."""

    def __init__(self, model: nn.Module, prefix: str) -> None:
        super().__init__(model)
        _attach(self, prefix, model)
        self.key_map = {k: f"{prefix}.{k}" for k in model.state_dict()}


class Relocated(StandIn):
    """Model + a module-path renamer → the same layers registered under new paths.

    Layers holding tensors (and no children) move whole, so their type and hooks survive;
    a module holding its own tensors *and* children shares its tensors into a plain holder.
    ``order_seed`` shuffles the registration order (and so the state-dict key order).
    """

    def __init__(
        self,
        model: nn.Module,
        rename: Callable[[str], str],
        *,
        order_seed: int | None = None,
    ) -> None:
        super().__init__(model)  # the original tree only drives forward
        moves: list[tuple[str, str, nn.Module]] = []
        for path, mod in model.named_modules():
            own = _own_tensor_names(mod)
            if not own:
                continue
            if not list(mod.children()):
                moves.append((path, rename(path), mod))
                continue
            holder = nn.Module()
            for n in own:
                if n in mod._parameters:
                    holder.register_parameter(n, mod._parameters[n])
                else:
                    holder.register_buffer(n, mod._buffers[n])
            moves.append((path, rename(path), holder))
        if order_seed is not None:
            random.Random(order_seed).shuffle(moves)
        self.key_map: dict[str, str] = {}
        for old, new, mod in moves:
            _attach(self, new, mod)
            src_mod = model.get_submodule(old) if old else model
            for n in _own_tensor_names(src_mod):
                self.key_map[f"{old}.{n}" if old else n] = f"{new}.{n}"


class RenamedLeaf(StandIn):
    """Layer + {old tensor name: new name} → a view of the layer whose tensors have new names."""

    def __init__(self, layer: nn.Module, names: Mapping[str, str]) -> None:
        super().__init__(layer)
        for n in _own_tensor_names(layer):
            new = names.get(n, n)
            if n in layer._parameters:
                self.register_parameter(new, layer._parameters[n])
            else:
                self.register_buffer(new, layer._buffers[n])
        self.names = {n: names.get(n, n) for n in _own_tensor_names(layer)}


TF_NAMES_DENSE = {"weight": "kernel"}
TF_NAMES_NORM = {
    "weight": "gamma",
    "bias": "beta",
    "running_mean": "moving_mean",
    "running_var": "moving_variance",
}
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)


def rename_leaf_tensors(model: nn.Module) -> dict[str, str]:
    """Model → the same model, changed in place to TF-style tensor names; returns the key map.

    Convolutions and linears call their weight ``kernel``; norms use ``gamma``/``beta`` and
    ``moving_mean``/``moving_variance``.
    """
    key_map: dict[str, str] = {}
    leaves = [(p, m) for p, m in model.named_modules() if p and not list(m.children())]
    for path, layer in leaves:
        if not _own_tensor_names(layer):
            continue
        names = TF_NAMES_NORM if isinstance(layer, _NORM_TYPES) else TF_NAMES_DENSE
        view = RenamedLeaf(layer, names)
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        setattr(parent, attr, view)
        for old, new in view.names.items():
            key_map[f"{path}.{old}"] = f"{path}.{new}"
    return key_map
