"""WeightRenamer: a checkpoint (or state dict) in, keys renamed, a safetensors or .pt file out.

Every renaming method changes the renamer in place and returns it, so calls chain::

    WeightRenamer("old.pt").remove_prefix("model.").rename_keys(mapping).save("new.safetensors")

Keys a mapping does not mention are kept unchanged. A rename that would put two tensors
under one name is refused with the full list of collisions. Saving is atomic and never
overwrites the input checkpoint unless asked to.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from weightmapper.atomic import atomic_path
from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import CheckpointFormatError, KeyCollisionError, MappingError, OutputError
from weightmapper.io_safety import ensure_outputs_safe, input_files

logger = logging.getLogger(__name__)

SAFETENSORS_SUFFIXES = (".safetensors",)
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


class WeightRenamer:
    """Checkpoint path or state dict → an editable, ordered set of named tensors.

    A path is read with ``open_checkpoint`` (wrapper prefixes stripped, pickles scanned;
    ``trusted`` as there). A state dict is used as given and never modified.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Mapping[str, torch.Tensor],
        *,
        trusted: bool = False,
        strip_prefixes: bool = True,
    ) -> None:
        self.input_files: list[Path] = []
        """Files the tensors were read from; ``save`` refuses to overwrite them by default."""
        if isinstance(source, Mapping):
            bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
            if bad:
                raise CheckpointFormatError(
                    f"state dict values must be tensors, but {bad[:5]} are not; pass a "
                    "{name: torch.Tensor} dict or a checkpoint path."
                )
            self._tensors: dict[str, torch.Tensor] = {str(k): v for k, v in source.items()}
        else:
            table = open_checkpoint(source, trusted=trusted, strip_prefixes=strip_prefixes)
            self._tensors = table.to_state_dict()
            self.input_files = sorted(input_files(table.index or table.path).union(table.files))

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tensors))

    def list_keys(self) -> list[str]:
        """() → every key, in checkpoint order."""
        return list(self._tensors)

    def search_keys(self, pattern: str) -> list[str]:
        """Regular expression → keys it matches anywhere (``re.search``), in checkpoint order."""
        rx = _compile(pattern)
        return [k for k in self._tensors if rx.search(k)]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """() → a new {key: tensor} dict (the tensors themselves are shared, not copied)."""
        return dict(self._tensors)

    def rename_keys(self, mapping: Mapping[str, str], *, strict: bool = True) -> WeightRenamer:
        """{old key: new key} (any Mapping, a MappingResult too) → self, renamed in place.

        Keys the mapping does not mention keep their names. All renames happen at once,
        so swaps work. ``strict`` refuses mapping keys that are not in the checkpoint.
        Raises KeyCollisionError when two tensors would end up under one name.
        """
        bad_values = [k for k, v in mapping.items() if not isinstance(v, str) or not v]
        if bad_values:
            raise MappingError(
                f"mapping values must be non-empty key strings; {bad_values[:5]} map to something "
                "else. Pass {old key: new key}."
            )
        unknown = [k for k in mapping if k not in self._tensors]
        if strict and unknown:
            raise MappingError(
                f"{len(unknown)} mapping key(s) are not in the checkpoint: {unknown[:10]}. "
                "Expected keys from list_keys(); fix the mapping or pass strict=False to skip them."
            )
        return self._apply(lambda k: mapping.get(k, k), what="rename_keys")

    def replace(self, pattern: str, repl: str) -> WeightRenamer:
        """Regex and replacement (``re.sub`` syntax) → self with every key rewritten."""
        rx = _compile(pattern)
        return self._apply(lambda k: rx.sub(repl, k), what=f"replace({pattern!r})")

    def add_prefix(self, prefix: str) -> WeightRenamer:
        """Prefix (``backbone.``) → self with it put in front of every key."""
        if not prefix:
            raise MappingError("add_prefix got an empty prefix; expected text such as 'model.'.")
        return self._apply(lambda k: prefix + k, what="add_prefix")

    def remove_prefix(self, prefix: str) -> WeightRenamer:
        """Prefix → self with it removed from every key that starts with it; others are kept.

        Raises MappingError when no key starts with the prefix (a typo, most likely).
        """
        if not prefix or not any(k.startswith(prefix) for k in self._tensors):
            firsts = sorted({k.split(".", 1)[0] + "." for k in self._tensors})
            raise MappingError(
                f"no key starts with {prefix!r}; keys start with {firsts[:10]}. Pass one of those."
            )
        empty = [k for k in self._tensors if k == prefix]
        if empty:
            raise MappingError(f"removing {prefix!r} would leave key {empty[0]!r} with no name.")
        return self._apply(lambda k: k.removeprefix(prefix), what="remove_prefix")

    def save(
        self,
        path: str | os.PathLike[str],
        *,
        format: str | None = None,
        overwrite_input: bool = False,
        metadata: Mapping[str, str] | None = None,
    ) -> Path:
        """Output path → the written file; format from the extension or ``format``.

        ``.safetensors`` (the default for any other extension) or ``.pt``/``.pth``/``.bin``
        (``torch.save``); ``format`` is ``"safetensors"`` or ``"pt"``. Written atomically.
        Tied tensors are stored once in safetensors, the other names recorded in its
        metadata ({alias: kept name}, as ``safetensors.torch.save_model`` does) so
        ``open_checkpoint`` restores the tie. Refuses to overwrite an input file unless
        ``overwrite_input=True``.
        """
        dest = Path(path)
        fmt = _output_format(dest, format)
        if not overwrite_input:
            try:
                ensure_outputs_safe([dest], self.input_files)
            except OutputError as e:
                raise OutputError(f"{e} (or pass overwrite_input=True to replace it)") from e
        with atomic_path(dest) as tmp:
            if fmt == "safetensors":
                tensors, aliases = dedupe_shared_tensors(self._tensors)
                meta = {"format": "pt", **dict(metadata or {})}
                meta.update({a: k for a, k in aliases.items() if a not in meta})
                save_file(tensors, str(tmp), metadata=meta)
            else:
                torch.save(dict(self._tensors), tmp)
        logger.info("wrote %d tensors to %s (%s)", len(self._tensors), dest, fmt)
        return dest

    def _apply(self, fn: Callable[[str], str], *, what: str) -> WeightRenamer:
        new_names = [fn(k) for k in self._tensors]
        counts = Counter(new_names)
        if any(c > 1 for c in counts.values()):
            collisions: dict[str, list[str]] = {}
            for old, new in zip(self._tensors, new_names, strict=True):
                if counts[new] > 1:
                    collisions.setdefault(new, []).append(old)
            listed = "; ".join(f"{t} ← {', '.join(s)}" for t, s in list(collisions.items())[:10])
            raise KeyCollisionError(
                f"{what} would put several tensors under one name ({len(collisions)} "
                f"collision(s)): {listed}. Expected one tensor per name; change the mapping so "
                "each target is used once. Nothing was renamed.",
                collisions,
            )
        self._tensors = dict(zip(new_names, self._tensors.values(), strict=True))
        return self


def dedupe_shared_tensors(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """State dict → (tensors safetensors accepts, {alias: kept name} for tied names).

    Names that are the same view of one storage (tied weights) keep only the first name;
    other views sharing a storage (overlapping slices) get their own copy; every tensor
    is made contiguous. The input is not modified.
    """
    kept: dict[tuple[Any, ...], str] = {}
    aliases: dict[str, str] = {}
    by_storage: dict[tuple[Any, ...], list[str]] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in state_dict.items():
        ident = _view_identity(t)
        if ident is None:
            out[name] = t
            continue
        if ident in kept:
            aliases[name] = kept[ident]
            continue
        kept[ident] = name
        out[name] = t
        by_storage.setdefault(ident[:2], []).append(name)
    for names in by_storage.values():
        if len(names) > 1:
            for n in names:
                out[n] = out[n].contiguous().clone()
    return {k: v.contiguous() for k, v in out.items()}, aliases


def _view_identity(t: torch.Tensor) -> tuple[Any, ...] | None:
    if t.device.type == "meta" or t.numel() == 0:
        return None
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    if ptr == 0:
        return None
    return (t.device, ptr, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)


def _output_format(dest: Path, requested: str | None) -> str:
    if requested is not None:
        fmt = {"safetensors": "safetensors", "pt": "pt", "torch": "pt"}.get(requested.lower())
        if fmt is None:
            raise OutputError(
                f"unknown output format {requested!r}; expected 'safetensors' or 'pt'."
            )
        return fmt
    return "pt" if dest.suffix.lower() in TORCH_SUFFIXES else "safetensors"


def _compile(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise MappingError(
            f"{pattern!r} is not a valid regular expression ({e}); escape special characters "
            "with re.escape or a backslash."
        ) from e
