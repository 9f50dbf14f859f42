"""Inventory: a model's tensors (names, shapes, dtypes), parameter groups, buffers and order.

Built from an ``nn.Module`` (meta device included), a state dict, or any
``Mapping[str, TensorInfo]`` such as a checkpoint's TensorTable. No tensor data is read:
mapping needs names, shapes and dtypes only.
"""

from __future__ import annotations

import hashlib
import itertools
import operator
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from weightmapper.dataflow import FlowRole
from weightmapper.errors import MappingError
from weightmapper.natural_sort import natural_key, natural_order
from weightmapper.tensor_info import TensorInfo, dtype_name

# Local names that are buffers in every common layer; used only when a bare state dict
# cannot say which tensors are buffers.
BUFFER_NAMES: frozenset[str] = frozenset(
    {
        "running_mean",
        "running_var",
        "num_batches_tracked",
        "moving_mean",
        "moving_variance",
        "position_ids",
        "token_type_ids",
        "inv_freq",
        "relative_position_index",
        "attn_mask",
        "masked_bias",
        "anchor_grid",
        "freqs_cis",
        "pos_ids",
    }
)

# Local names that carry learned values even when registered as buffers (FrozenBatchNorm).
LEARNED_NAMES: frozenset[str] = frozenset({"weight", "bias", "gamma", "beta", "scale", "shift"})


def split_key(key: str) -> tuple[str, str]:
    """``a.b.weight`` → (``a.b``, ``weight``); a top-level key has module path ``""``."""
    path, _, local = key.rpartition(".")
    return path, local


def guess_is_buffer(local_name: str) -> bool:
    """Local tensor name → True when it is a buffer in every common layer type."""
    return local_name in BUFFER_NAMES


def tensors_signature(tensors: Mapping[str, TensorInfo]) -> str:
    """Name → TensorInfo mapping → sha256 hex over (name, shape, dtype) of each, in key order."""
    h = hashlib.sha256()
    for key, info in tensors.items():
        h.update(f"{key}\t{','.join(map(str, info.shape))}\t{info.dtype}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class ParameterGroup:
    """The tensors of one module (``weight``, ``bias``, buffers...), matched as a unit."""

    path: str
    """Module path (``encoder.layers.0.attn.q_proj``); ``""`` for the root module."""
    module_type: str | None
    """Class name of the module (``Linear``), None when built from a state dict."""
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    """Local name (``weight``) → TensorInfo, in registration/key order."""

    @property
    def params(self) -> dict[str, TensorInfo]:
        """Local name → TensorInfo for tensors that are (or look like) parameters."""
        return {k: v for k, v in self.tensors.items() if not tensor_is_buffer(v)}

    @property
    def buffers(self) -> dict[str, TensorInfo]:
        """Local name → TensorInfo for tensors that are (or look like) buffers."""
        return {k: v for k, v in self.tensors.items() if tensor_is_buffer(v)}

    def key(self, local_name: str) -> str:
        """Local name → the full state-dict key."""
        return f"{self.path}.{local_name}" if self.path else local_name


def tensor_is_buffer(info: TensorInfo) -> bool:
    """TensorInfo → True for a buffer (known, or guessed from its local name)."""
    if info.is_buffer is not None:
        return info.is_buffer
    return guess_is_buffer(split_key(info.name)[1])


@dataclass(frozen=True)
class Inventory:
    """Everything the mapper knows about one side: tensors, groups, module types, order, ties.

    Treat as read-only; build with :meth:`from_module`, :meth:`from_state_dict` or
    :meth:`from_table`.
    """

    name: str
    """Display name: the module's class name, a file name, or ``state_dict``."""
    tensors: dict[str, TensorInfo]
    """Full key → TensorInfo, in registration/key order."""
    groups: dict[str, ParameterGroup]
    """Module path → ParameterGroup, in order of first appearance."""
    module_types: dict[str, str] = field(default_factory=dict)
    """Module path → class name for every submodule; empty when built from a state dict."""
    order: dict[str, int] = field(default_factory=dict)
    """Module path → rank: execution order when traced, else registration/key order."""
    tied: list[tuple[str, ...]] = field(default_factory=list)
    """Groups of keys that share one tensor (tied embedding and LM head)."""
    traced: bool = False
    """True when ``order`` comes from a forward pass rather than registration/key order."""
    sorted_keys: bool = False
    """True when the keys came sorted (alphabetically or naturally, as safetensors stores
    them) or shuffled: ``order`` is then a natural sort of the names, which keeps the order
    of numbered siblings (``layers.2`` before ``layers.10``) and nothing else, so it is never
    read as the architecture's order."""
    head_dims: dict[str, int] = field(default_factory=dict)
    """Key → the head size of the attention module it belongs to, as the module states it
    (``head_dim`` and kin), read without running anything; empty for a checkpoint."""
    roles: dict[str, FlowRole] = field(default_factory=dict)
    """Key → the role its tensor plays, read from a forward pass
    (:func:`weightmapper.dataflow.dataflow_roles`); empty when no pass was made, and the
    engine falls back on naming conventions."""

    # --- constructors -----------------------------------------------------------------------
    @classmethod
    def from_module(cls, module: nn.Module, name: str | None = None) -> Inventory:
        """nn.Module (any device, meta included) → Inventory of its state-dict tensors.

        Buffers are known exactly: persistent buffers only, since non-persistent ones never
        appear in a state dict. Module order is registration order.
        """
        if not isinstance(module, nn.Module):
            raise MappingError(
                f"expected a torch.nn.Module, got {type(module).__name__}. Pass a state dict "
                "to Inventory.from_state_dict or a checkpoint table to Inventory.from_table."
            )
        modules: dict[str, nn.Module] = {}
        module_types: dict[str, str] = {}
        order: dict[str, int] = {}
        for rank, (path, sub) in enumerate(module.named_modules(remove_duplicate=False)):
            if path not in modules:
                modules[path] = sub
                module_types[path] = type(sub).__name__
                order[path] = rank
        infos: dict[str, TensorInfo] = {}
        by_identity: dict[int, list[str]] = {}
        for key, t, is_buffer in _state_tensors(module, modules):
            infos[key] = _info(key, t, is_buffer)
            by_identity.setdefault(id(t), []).append(key)
        tied = [tuple(keys) for keys in by_identity.values() if len(keys) > 1]
        groups = _build_groups(infos, module_types)
        # Groups are listed by module registration order, not by key order.
        groups = dict(
            sorted(groups.items(), key=lambda kv: order.get(kv[0], len(order)))  # stable
        )
        return cls(
            name=name or type(module).__name__,
            tensors=infos,
            groups=groups,
            module_types=module_types,
            order={p: order.get(p, len(order) + i) for i, p in enumerate(groups)},
            tied=tied,
            head_dims=_head_dims(modules, infos),
        )

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any], name: str | None = None) -> Inventory:
        """State dict (name → tensor, meta tensors fine) → Inventory; order is key order.

        Buffers are guessed from local names (``running_mean``, ``num_batches_tracked``...);
        tensors that share storage are recorded as tied.
        """
        if not isinstance(state_dict, Mapping):
            raise MappingError(
                f"expected a state dict (a mapping of names to tensors), got "
                f"{type(state_dict).__name__}"
            )
        infos: dict[str, TensorInfo] = {}
        by_storage: dict[tuple[Any, ...], list[str]] = {}
        skipped = []
        for key, t in state_dict.items():
            if not isinstance(t, torch.Tensor):
                skipped.append(key)
                continue
            infos[key] = _info(key, t, None)
            by_storage.setdefault(_storage_key(t), []).append(key)
        if not infos and skipped:
            raise MappingError(
                f"the state dict holds no tensors (keys {skipped[:5]} hold other objects). "
                "Was a training checkpoint passed without unwrapping its 'state_dict'?"
            )
        tied = [tuple(keys) for keys in by_storage.values() if len(keys) > 1]
        return cls._from_infos(infos, name or "state_dict", tied)

    @classmethod
    def from_table(cls, table: Mapping[str, TensorInfo], name: str | None = None) -> Inventory:
        """TensorTable (or any Mapping name → TensorInfo) → Inventory; order is key order."""
        read = getattr(table, "infos", None)  # a TensorTable hands its rows over at once
        infos: dict[str, TensorInfo] = read() if callable(read) else dict(table.items())
        if not set(map(type, infos.values())) <= {TensorInfo}:  # else name the first other row
            for key, info in infos.items():
                if not isinstance(info, TensorInfo):
                    raise MappingError(
                        f"table entry {key!r} is {type(info).__name__}, expected TensorInfo. "
                        "Use Inventory.from_state_dict for a dict of tensors."
                    )
        tied_attr = getattr(table, "tied", None) or []
        tied = [tuple(t) for t in tied_attr if len(tuple(t)) > 1]
        tname = name or getattr(table, "name", None) or "checkpoint"
        return cls._from_infos(infos, str(tname), tied)

    @classmethod
    def _from_infos(
        cls, infos: dict[str, TensorInfo], name: str, tied: list[tuple[str, ...]]
    ) -> Inventory:
        keys = list(infos)
        unordered = len(keys) > 2 and (is_sorted_order(keys) or not is_registration_order(keys))
        # Sorted keys (safetensors writes them so) carry no order of their own, and neither
        # do shuffled ones (no module's keys are contiguous): a natural sort puts layer10
        # after layer9 and makes every shuffle of one checkpoint map identically.
        groups = _build_groups(infos, {}, natural=unordered)
        return cls(
            name=name,
            tensors=infos,
            groups=groups,
            module_types={},
            order=dict(zip(groups, range(len(groups)), strict=True)),
            tied=tied,
            sorted_keys=unordered,
        )

    # --- queries ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.tensors)

    def group_of(self, key: str) -> ParameterGroup:
        """Full key → the ParameterGroup that holds it."""
        return self.groups[split_key(key)[0]]

    def is_buffer(self, key: str) -> bool:
        """Full key → True for a buffer (known from the module, or guessed from the name)."""
        return tensor_is_buffer(self.tensors[key])

    def module_type(self, path: str) -> str | None:
        """Module path → class name, or None when unknown."""
        return self.module_types.get(path)

    def with_order(self, order: Mapping[str, int], *, traced: bool = True) -> Inventory:
        """Module path → rank map (e.g. from a trace) → a copy whose groups follow that order.

        Groups the order does not mention (modules never called) keep their relative
        registration order after the ones it ranks.
        """
        base = len(order) + 1
        ranked = sorted(
            self.groups,
            key=lambda p: (_rank_for(p, order, base), self.order.get(p, 0)),
        )
        return replace(
            self,
            groups={p: self.groups[p] for p in ranked},
            order={p: i for i, p in enumerate(ranked)},
            traced=traced,
            sorted_keys=self.sorted_keys and not traced,
        )

    def with_roles(self, roles: Mapping[str, FlowRole]) -> Inventory:
        """Key → role (from :func:`weightmapper.dataflow.dataflow_roles`) → a copy that has them.

        Roles of keys this inventory does not hold (non-persistent buffers) are dropped.
        """
        return replace(self, roles={k: r for k, r in roles.items() if k in self.tensors})

    def signature(self) -> str:
        """Inventory → :func:`tensors_signature` of its tensors (an architecture's id).

        Two inventories with the same signature map identically; use it as a cache key.
        """
        return tensors_signature(self.tensors)

    def summary(self) -> dict[str, Any]:
        """Inventory → counts for logs and reports."""
        n_buf = sum(1 for k in self.tensors if self.is_buffer(k))
        return {
            "name": self.name,
            "tensors": len(self.tensors),
            "parameters": len(self.tensors) - n_buf,
            "buffers": n_buf,
            "groups": len(self.groups),
            "tied": len(self.tied),
            "traced": self.traced,
            "sorted_keys": self.sorted_keys,
        }


def is_registration_order(keys: Sequence[str]) -> bool:
    """State-dict keys in file order → True when they could be a module's registration order.

    ``state_dict()`` walks modules depth first, so the keys under every module path are
    contiguous; a shuffled key order breaks that for some path.
    """
    first: dict[str, int] = {}
    count: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, key in enumerate(keys):
        parts = key.split(".")
        for depth in range(1, len(parts)):
            prefix = ".".join(parts[:depth])
            first.setdefault(prefix, i)
            last[prefix] = i
            count[prefix] = count.get(prefix, 0) + 1
    return all(last[p] - first[p] + 1 == count[p] for p in first)


def is_sorted_order(keys: Sequence[str]) -> bool:
    """Keys in file order → True when they are sorted alphabetically or naturally.

    A module's registration order is its author's choice (``conv1, bn1, conv2``); sorted
    keys (``bn1, bn2, conv1``) are what a writer like safetensors produces, and their order
    says nothing about the architecture.
    """
    keys = list(keys)
    # pairwise, so an unsorted list stops at its first step down (no sort, no key for the rest)
    if all(map(operator.le, keys, keys[1:])):
        return True
    behind, ahead = itertools.tee(map(natural_key, keys))
    next(ahead, None)
    return all(map(operator.le, behind, ahead))


def _rank_for(path: str, order: Mapping[str, int], base: int) -> int:
    # A group the trace never saw ranks like its closest traced ancestor (a parameter
    # used directly by a parent module's forward, e.g. a cls token), else after all.
    p = path
    while True:
        if p in order:
            return order[p]
        if not p:
            return base
        p = p.rpartition(".")[0]


def _state_tensors(
    module: nn.Module, modules: Mapping[str, nn.Module]
) -> list[tuple[str, torch.Tensor, bool | None]]:
    """Module → [(state-dict key, tensor, is_buffer)] in state-dict order, without copying.

    Walks the module tree directly (much faster than ``state_dict`` on large models) unless
    some module customises how it saves itself; then ``state_dict(keep_vars=True)`` decides.
    """
    base_save = nn.Module._save_to_state_dict
    base_sd = nn.Module.state_dict
    out: list[tuple[str, torch.Tensor, bool | None]] = []
    for path, sub in module.named_modules(remove_duplicate=False):
        cls = type(sub)
        if (
            cls._save_to_state_dict is not base_save
            or cls.state_dict is not base_sd
            or getattr(sub, "_state_dict_hooks", None)
            or getattr(sub, "_state_dict_pre_hooks", None)
        ):
            return _state_tensors_slow(module, modules)
        prefix = f"{path}." if path else ""
        for n, p in sub._parameters.items():
            if p is not None:
                out.append((prefix + n, p, False))
        skip = sub._non_persistent_buffers_set
        for n, b in sub._buffers.items():
            if b is not None and n not in skip:
                out.append((prefix + n, b, True))
    return out


def _state_tensors_slow(
    module: nn.Module, modules: Mapping[str, nn.Module]
) -> list[tuple[str, torch.Tensor, bool | None]]:
    out: list[tuple[str, torch.Tensor, bool | None]] = []
    for key, t in module.state_dict(keep_vars=True).items():
        if not isinstance(t, torch.Tensor):
            continue  # _extra_state and other non-tensor entries
        path, local = split_key(key)
        sub = modules.get(path)
        is_buffer: bool | None = None  # renamed in _save_to_state_dict: guess by name
        if sub is not None and local in sub._buffers:
            is_buffer = True
        elif sub is not None and local in sub._parameters:
            is_buffer = False
        out.append((key, t, is_buffer))
    return out


_DTYPE_NAMES: dict[torch.dtype, str] = {}


def _info(key: str, t: torch.Tensor, is_buffer: bool | None) -> TensorInfo:
    """Tensor → TensorInfo without the per-call overhead of TensorInfo.from_tensor."""
    name = _DTYPE_NAMES.get(t.dtype)
    if name is None:
        name = _DTYPE_NAMES[t.dtype] = dtype_name(t.dtype)
    return TensorInfo(key, tuple(t.shape), name, t.numel() * t.element_size(), None, is_buffer)


def _build_groups(
    infos: dict[str, TensorInfo], module_types: Mapping[str, str], *, natural: bool = False
) -> dict[str, ParameterGroup]:
    """Key → TensorInfo + module types → module path → ParameterGroup, in order of first
    appearance (or, when ``natural``, naturally sorted by path, stable), locals in key order."""
    by_path: defaultdict[str, dict[str, TensorInfo]] = defaultdict(dict)
    last_dot = map(str.rpartition, infos, itertools.repeat("."))
    for (path, _, local), info in zip(last_dot, infos.values(), strict=True):
        by_path[path][local] = info
    paths: Iterable[str] = by_path
    if natural:
        found = list(by_path)
        paths = map(found.__getitem__, natural_order(found))
    # A large checkpoint has tens of thousands of groups; a frozen dataclass's ``__init__``
    # sets each field through ``object.__setattr__``, so the groups are filled in directly
    # (equal to ``ParameterGroup(path, module_types.get(path), by_path[path])``).
    new = object.__new__
    groups: dict[str, ParameterGroup] = {}
    for path in paths:
        fields = (group := new(ParameterGroup)).__dict__
        fields["path"], fields["module_type"] = path, module_types.get(path)
        fields["tensors"] = by_path[path]
        groups[path] = group
    return groups


def _storage_key(t: torch.Tensor) -> tuple[Any, ...]:
    # Meta tensors have no storage address; only the very same object counts as tied.
    if t.device.type == "meta":
        return ("id", id(t))
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return ("id", id(t))
    if ptr == 0:
        return ("id", id(t))
    return ("ptr", ptr, t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


_HEAD_ATTRS = ("head_dim", "head_size", "attention_head_size", "d_head")


_QUERY_NAMES = frozenset({"q", "qkv", "query", "q_proj", "in_proj_weight", "c_attn", "attn", "wq"})


def _attention_like(module: nn.Module) -> bool:
    """A module with a query-like projection of its own (so a config it keeps is its own)."""
    names = {n for n, _ in module.named_children()} | {
        n for n, _ in module.named_parameters(recurse=False)
    }
    return bool(names & _QUERY_NAMES)


def _head_dims(modules: Mapping[str, nn.Module], infos: Mapping[str, TensorInfo]) -> dict[str, int]:
    """Modules by path + the state's keys → key → the head size its attention module states."""
    sizes: dict[str, int] = {}
    for path, sub in modules.items():
        # on the module itself, or on the config it keeps (litgpt's attention: config.head_size)
        owners = (sub, getattr(sub, "config", None)) if _attention_like(sub) else (sub,)
        for owner in owners:
            value = next(
                (
                    v
                    for v in (getattr(owner, a, None) for a in _HEAD_ATTRS)
                    if isinstance(v, int) and not isinstance(v, bool) and v > 0
                ),
                None,
            )
            if value is not None:
                sizes[path] = value
                break
    if not sizes:
        return {}
    out: dict[str, int] = {}
    for key in infos:
        parts = key.split(".")
        for cut in range(len(parts) - 1, -1, -1):
            size = sizes.get(".".join(parts[:cut]))
            if size is not None:
                out[key] = size
                break
    return out
