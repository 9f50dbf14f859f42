"""Checkpoint doctor: a checkpoint path in, a JSON-ready health report out (``weightmapper inspect``).

Reads headers only (see ``open_checkpoint``). A pickle that would be refused as unsafe is
reported (its offending globals listed) instead of raising, so the report can say why.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from weightmapper.checkpoint import (
    TensorTable,
    open_checkpoint,
    read_shard_index,
    resolve_checkpoint,
)
from weightmapper.errors import UnsafeCheckpointError
from weightmapper.pickle_safety import scan_file

REPORT_VERSION = "1.0"


def inspect_checkpoint(
    path: str | os.PathLike[str], *, trusted: bool = False, max_depth: int = 3
) -> dict[str, Any]:
    """Checkpoint path → JSON-ready report with a stable key order.

    Keys: ``version``, ``path``, ``format``, ``safe``, ``unsafe_globals``, ``files``,
    ``tensor_count``, ``parameter_count``, ``total_bytes``, ``dtypes``,
    ``stripped_prefixes``, ``suggested_prefix``, ``tied``, ``metadata``, ``tree``.
    For a refused pickle ``safe`` is False and the tensor fields are None.
    Raises our errors for missing, unreadable or corrupt checkpoints.
    """
    max_depth = max(0, int(max_depth))
    try:
        table = open_checkpoint(path, trusted=trusted)
    except UnsafeCheckpointError as e:
        return _unsafe_report(Path(path), e)
    names = list(table)
    unique = set(table.unique_names())
    dtypes = Counter(table[n].dtype for n in names)
    per_file = Counter(table[n].file for n in names)
    root = _relative_root(table)
    return {
        "version": REPORT_VERSION,
        "path": str(table.path),
        "format": table.format,
        "safe": True,
        "unsafe_globals": list(table.metadata.get("unsafe_globals", [])),
        "files": [
            {
                "name": _rel(f, root),
                "bytes": f.stat().st_size,
                "tensors": per_file.get(str(f), 0),
            }
            for f in table.files
        ],
        "tensor_count": len(names),
        "parameter_count": sum(table[n].numel for n in unique),
        "total_bytes": table.total_bytes,
        "dtypes": dict(sorted(dtypes.items())),
        "stripped_prefixes": list(table.stripped_prefixes),
        "suggested_prefix": table.suggested_prefix,
        "tied": [list(g) for g in table.tied],
        "metadata": table.metadata,
        "tree": module_tree(table, max_depth=max_depth),
    }


def module_tree(table: TensorTable, *, max_depth: int = 3) -> dict[str, Any]:
    """TensorTable → nested {name, path, tensors, params, children} down to ``max_depth``.

    Counts cover everything below a node, however deep; tied names under one node count
    their shared storage once. Children keep checkpoint order.
    """
    owner = {n: g[0] for g in table.tied for n in g}  # tied name → its group's first name

    def new_node(name: str, path: str) -> dict[str, Any]:
        return {"name": name, "path": path, "tensors": 0, "params": 0, "children": {}, "_s": set()}

    def count(node: dict[str, Any], name: str, numel: int) -> None:
        node["tensors"] += 1
        storage = owner.get(name, name)
        if storage not in node["_s"]:
            node["_s"].add(storage)
            node["params"] += numel

    root = new_node("", "")
    for name, info in table.items():
        node = root
        count(node, name, info.numel)
        parts = name.split(".")[:-1]  # the last component is the tensor (weight, bias, ...)
        for depth, part in enumerate(parts[:max_depth]):
            children = node["children"]
            if part not in children:
                children[part] = new_node(part, ".".join(parts[: depth + 1]))
            node = children[part]
            count(node, name, info.numel)
    return _listify(root)


def _listify(node: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in node.items() if k != "_s"}
    out["children"] = [_listify(c) for c in node["children"].values()]
    return out


def _unsafe_report(path: Path, error: UnsafeCheckpointError) -> dict[str, Any]:
    resolved, kind = resolve_checkpoint(path)
    files = [resolved]
    if kind == "index":
        weight_map, _meta = read_shard_index(resolved)
        files = [resolved.parent / s for s in sorted(set(weight_map.values()))]
    entries = []
    for f in files:
        scan = scan_file(f)
        entries.append(
            {"name": f.name, "bytes": f.stat().st_size, "unsafe_globals": list(scan.unsafe)}
        )
    return {
        "version": REPORT_VERSION,
        "path": str(resolved),
        "format": None,
        "safe": False,
        "unsafe_globals": list(error.globals),
        "error": str(error),
        "files": entries,
        "tensor_count": None,
        "parameter_count": None,
        "total_bytes": None,
        "dtypes": {},
        "stripped_prefixes": [],
        "suggested_prefix": None,
        "tied": [],
        "metadata": {},
        "tree": None,
    }


def _relative_root(table: TensorTable) -> Path:
    return table.path.parent


def _rel(f: Path, root: Path) -> str:
    try:
        return str(f.relative_to(root))
    except ValueError:
        return str(f)
