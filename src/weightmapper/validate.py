"""Load-into-target check: checkpoint + target → ValidationResult, instead of a raised error.

``validate_state_dict`` compares names, shapes and dtypes with ``strict=True`` semantics, and
when the target is a real module also loads the tensors into a copy of it, so a target with
its own loading hooks reports their complaints too. Tied target parameters (one tensor, two
names) count as present when one of their names is, as after ``tie_weights``.
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightmapper.errors import CheckpointFormatError
from weightmapper.tensor_info import TensorInfo

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationResult:
    """What loading a checkpoint into a target found; ``ok`` when it would load strictly."""

    missing: tuple[str, ...] = ()
    """Target keys the checkpoint does not provide."""
    unexpected: tuple[str, ...] = ()
    """Checkpoint keys the target has no place for."""
    shape_mismatches: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict
    )
    """Key → (shape in the checkpoint, shape the target expects)."""
    dtype_changes: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Key → (checkpoint dtype, target dtype); loading casts these, so they are warnings."""
    errors: tuple[str, ...] = ()
    """Other errors the target's own ``load_state_dict`` raised."""
    tied_filled: tuple[str, ...] = ()
    """Missing target keys that share storage with a key the checkpoint does provide."""
    checked: int = 0
    """Number of target keys checked."""

    @property
    def ok(self) -> bool:
        """True when nothing is missing, unexpected, mis-shaped or otherwise failing to load."""
        return not (self.missing or self.unexpected or self.shape_mismatches or self.errors)

    def summary(self, max_items: int = 10) -> str:
        """ValidationResult → a few human lines, each list capped at ``max_items``."""
        head = (
            f"OK: all {self.checked} target tensors load strictly"
            if self.ok
            else f"FAILED: the checkpoint does not load strictly into the target "
            f"({self.checked} target tensors)"
        )
        lines = [head]

        def listing(title: str, items: list[str]) -> None:
            if not items:
                return
            lines.append(f"{title} ({len(items)}):")
            lines.extend(f"  {i}" for i in items[:max_items])
            if len(items) > max_items:
                lines.append(f"  ... and {len(items) - max_items} more")

        listing("missing", list(self.missing))
        listing("unexpected", list(self.unexpected))
        listing(
            "shape mismatches (checkpoint vs target)",
            [f"{k}: {list(g)} vs {list(e)}" for k, (g, e) in self.shape_mismatches.items()],
        )
        listing("load errors", list(self.errors))
        listing(
            "dtype changes (cast on load)",
            [f"{k}: {g} → {e}" for k, (g, e) in self.dtype_changes.items()],
        )
        listing("tied, filled from their partner", list(self.tied_filled))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """ValidationResult → JSON-ready dict."""
        return {
            "ok": self.ok,
            "checked": self.checked,
            "missing": list(self.missing),
            "unexpected": list(self.unexpected),
            "shape_mismatches": {
                k: {"checkpoint": list(g), "target": list(e)}
                for k, (g, e) in self.shape_mismatches.items()
            },
            "dtype_changes": {
                k: {"checkpoint": g, "target": e} for k, (g, e) in self.dtype_changes.items()
            },
            "errors": list(self.errors),
            "tied_filled": list(self.tied_filled),
        }


def validate_state_dict(
    checkpoint: Mapping[str, torch.Tensor] | Mapping[str, TensorInfo] | str | os.PathLike[str],
    target: nn.Module | Mapping[str, TensorInfo] | Mapping[str, torch.Tensor],
) -> ValidationResult:
    """Checkpoint (state dict, TensorTable or path) + target (module or names-and-shapes) → result.

    Never raises for a mismatch; raises our errors only when the checkpoint cannot be read.
    """
    got, loader = _checkpoint_side(checkpoint)
    expected, tied = _target_side(target)
    missing = [k for k in expected if k not in got]
    tied_filled = []
    for k in list(missing):
        partner = next((p for p in tied.get(k, ()) if p in got), None)
        if partner is not None:
            tied_filled.append(k)
            missing.remove(k)
    unexpected = [k for k in got if k not in expected]
    shape_mismatches = {
        k: (tuple(got[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in got and tuple(got[k].shape) != tuple(expected[k].shape)
    }
    dtype_changes = {
        k: (got[k].dtype, expected[k].dtype)
        for k in expected
        if k in got and k not in shape_mismatches and got[k].dtype != expected[k].dtype
    }
    errors: list[str] = []
    loadable = isinstance(target, nn.Module) and loader is not None
    if loadable and not (missing or unexpected or shape_mismatches):
        errors = _real_load(target, expected, tied, tied_filled, loader)
    result = ValidationResult(
        missing=tuple(sorted(missing)),
        unexpected=tuple(sorted(unexpected)),
        shape_mismatches=dict(sorted(shape_mismatches.items())),
        dtype_changes=dict(sorted(dtype_changes.items())),
        errors=tuple(errors),
        tied_filled=tuple(sorted(tied_filled)),
        checked=len(expected),
    )
    log.info("validation: %s", result.summary(3).splitlines()[0])
    return result


def _checkpoint_side(checkpoint: Any) -> tuple[dict[str, TensorInfo], Any]:
    """Checkpoint in any accepted form → (name → TensorInfo, name → tensor loader or None)."""
    if isinstance(checkpoint, (str, os.PathLike)):
        return _open_path(Path(checkpoint))
    if isinstance(checkpoint, Mapping):
        if all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            infos = {k: TensorInfo.from_tensor(k, v) for k, v in checkpoint.items()}
            has_data = not any(v.device.type == "meta" for v in checkpoint.values())
            return infos, (checkpoint.__getitem__ if has_data else None)
        if all(isinstance(v, TensorInfo) for v in checkpoint.values()):
            load = getattr(checkpoint, "load", None)
            return dict(checkpoint), (load if callable(load) else None)
    raise CheckpointFormatError(
        f"cannot validate a {type(checkpoint).__name__}; pass a state dict, a TensorTable "
        "(weightmapper.open_checkpoint) or a checkpoint path"
    )


def _open_path(path: Path) -> tuple[dict[str, TensorInfo], Any]:
    """Checkpoint path → infos and loader; aliases written by ``convert`` count as present."""
    from weightmapper.checkpoint import open_checkpoint
    from weightmapper.convert import read_aliases

    table = open_checkpoint(path)
    infos = dict(table.items())
    aliases: dict[str, str] = {}
    if path.suffix in (".safetensors", ".json") or path.is_dir():
        try:
            aliases = read_aliases(path)
        except (OSError, CheckpointFormatError, ValueError) as e:
            log.debug("no weightmapper aliases read from %s: %s", path, e)
    for alias, name in aliases.items():
        if name in infos and alias not in infos:
            infos[alias] = replace(infos[name], name=alias)

    def load(name: str) -> torch.Tensor:
        return table.load(name if name in table else aliases.get(name, name))

    return infos, load


def _target_side(target: Any) -> tuple[dict[str, TensorInfo], dict[str, list[str]]]:
    """Target → (expected name → TensorInfo, name → other names sharing its storage)."""
    if isinstance(target, nn.Module):
        sd = target.state_dict(keep_vars=True)
        expected = {k: TensorInfo.from_tensor(k, v) for k, v in sd.items()}
        groups: dict[Any, list[str]] = {}
        for k, v in sd.items():
            # Meta tensors have no storage to compare; the Parameter object itself is shared.
            sig = id(v) if v.device.type == "meta" else (v.untyped_storage().data_ptr(), v.shape)
            groups.setdefault(sig, []).append(k)
        tied = {k: [p for p in g if p != k] for g in groups.values() if len(g) > 1 for k in g}
        return expected, tied
    if isinstance(target, Mapping):
        if all(isinstance(v, TensorInfo) for v in target.values()):
            return dict(target.items()), {}
        if all(isinstance(v, torch.Tensor) for v in target.values()):
            return {k: TensorInfo.from_tensor(k, v) for k, v in target.items()}, {}
    raise CheckpointFormatError(
        f"cannot validate against a {type(target).__name__}; pass an nn.Module or a "
        "name → TensorInfo mapping (e.g. a TensorTable of the target's checkpoint)"
    )


def _real_load(
    target: nn.Module,
    expected: Mapping[str, TensorInfo],
    tied: Mapping[str, list[str]],
    tied_filled: list[str],
    loader: Any,
) -> list[str]:
    """Load every tensor into a copy of the target with strict=True; → error messages, if any."""
    state: dict[str, torch.Tensor] = {}
    for k in expected:
        src = k if k not in tied_filled else next(p for p in tied[k] if p not in tied_filled)
        state[k] = loader(src)
    on_meta = any(t.device.type == "meta" for t in target.state_dict().values())
    clone = copy.deepcopy(target)
    try:
        # assign=True on a meta target: there is no memory to copy into.
        clone.load_state_dict(state, strict=True, assign=on_meta)
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        return [str(e).strip()]
    return []


def load_checkpoint_into(
    module: nn.Module,
    checkpoint: Mapping[str, Any] | str | os.PathLike[str],
    *,
    trusted: bool = False,
    role: str = "source",
) -> nn.Module:
    """Module + checkpoint (path or state dict) → the module holding its weights (strict).

    CheckpointFormatError listing what is missing or unexpected when it does not fit, so a
    wrong architecture spec is named before anything is compared.
    """
    if isinstance(checkpoint, (str, os.PathLike)):
        from weightmapper.checkpoint import open_checkpoint

        table = open_checkpoint(checkpoint, trusted=trusted)
        state, where = {k: table.load(k) for k in table}, str(checkpoint)
    elif callable(getattr(checkpoint, "load", None)):  # a TensorTable: names now, data here
        state = {k: checkpoint.load(k) for k in checkpoint}
        where = str(getattr(checkpoint, "path", None) or "the checkpoint")
    else:
        state, where = dict(checkpoint), "the state dict"
    check = validate_state_dict(state, module)
    if not check.ok:
        raise CheckpointFormatError(
            f"{where} does not load into the {role} module ({type(module).__name__}):\n"
            f"{check.summary(5)}\nCheck the module spec and its keyword arguments."
        )
    on_meta = any(t.device.type == "meta" for t in module.state_dict().values())
    tied = {k for k in check.tied_filled}
    module.load_state_dict(
        {k: v for k, v in state.items() if k not in tied}, strict=False, assign=on_meta
    )
    return module
