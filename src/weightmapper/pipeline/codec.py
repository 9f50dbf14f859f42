"""JSON forms of the pipeline's intermediate values: tensor tables and inventories.

Artifacts hold only what later stages need and never a path, so two copies of one
checkpoint produce byte-identical artifacts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from weightmapper.dataflow import FlowRole
from weightmapper.inventory import Inventory, ParameterGroup, split_key
from weightmapper.tensor_info import TensorInfo


def info_to_json(info: TensorInfo) -> dict[str, Any]:
    """TensorInfo → JSON-ready dict (without the file it came from)."""
    return {
        "name": info.name,
        "shape": list(info.shape),
        "dtype": info.dtype,
        "nbytes": info.nbytes,
        "is_buffer": info.is_buffer,
    }


def info_from_json(d: Mapping[str, Any]) -> TensorInfo:
    """JSON dict → TensorInfo."""
    return TensorInfo(
        name=d["name"],
        shape=tuple(int(x) for x in d["shape"]),
        dtype=d["dtype"],
        nbytes=int(d.get("nbytes", 0)),
        is_buffer=d.get("is_buffer"),
    )


def table_to_json(table: Mapping[str, TensorInfo]) -> dict[str, Any]:
    """TensorTable (or any Mapping name → TensorInfo) → JSON-ready dict, keys in order."""
    tied = getattr(table, "tied", None) or []
    return {
        "tensors": [info_to_json(i) for i in table.values()],
        "tied": [list(t) for t in tied],
    }


def inventory_to_json(inv: Inventory) -> dict[str, Any]:
    """Inventory → JSON-ready dict that :func:`inventory_from_json` turns back into it."""
    return {
        "name": inv.name,
        "tensors": [info_to_json(i) for i in inv.tensors.values()],
        "groups": [[p, g.module_type] for p, g in inv.groups.items()],
        "module_types": dict(inv.module_types),
        "order": dict(inv.order),
        "tied": [list(t) for t in inv.tied],
        "traced": inv.traced,
        "sorted_keys": inv.sorted_keys,
        "roles": roles_to_json(inv.roles),
        "head_dims": dict(inv.head_dims),
    }


def roles_to_json(roles: Mapping[str, FlowRole]) -> dict[str, dict[str, Any]]:
    """Key → FlowRole → JSON-ready dict (the pipeline's trace and inventory artifacts)."""
    return {k: asdict(r) for k, r in roles.items()}


def roles_from_json(d: Mapping[str, Mapping[str, Any]] | None) -> dict[str, FlowRole]:
    """JSON dict → key → FlowRole."""
    return {k: FlowRole(**v) for k, v in (d or {}).items()}


def inventory_from_json(d: Mapping[str, Any]) -> Inventory:
    """JSON dict → Inventory, groups and their order as they were."""
    tensors = {t["name"]: info_from_json(t) for t in d["tensors"]}
    by_path: dict[str, dict[str, TensorInfo]] = {}
    for key, info in tensors.items():
        path, local = split_key(key)
        by_path.setdefault(path, {})[local] = info
    groups = {p: ParameterGroup(p, mt, by_path.get(p, {})) for p, mt in d["groups"]}
    return Inventory(
        name=d["name"],
        tensors=tensors,
        groups=groups,
        module_types=dict(d.get("module_types") or {}),
        order={k: int(v) for k, v in (d.get("order") or {}).items()},
        tied=[tuple(t) for t in d.get("tied") or []],
        traced=bool(d.get("traced", False)),
        sorted_keys=bool(d.get("sorted_keys", False)),
        roles=roles_from_json(d.get("roles")),
        head_dims={k: int(v) for k, v in (d.get("head_dims") or {}).items()},
    )
