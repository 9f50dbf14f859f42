"""Pipeline stages: cached library functions, each inputs → one artifact in an ArtifactStore.

Every stage has a key function (``key_<stage>``) and a stage function taking the same
arguments. The key is a sha256 over the stage name and version, the library version, the
digests of the input artifacts and the stage's own settings, never a path or an object id.
A stage returns an :class:`ArtifactRef`; ``ref.cached`` says whether it was reused.

Per checkpoint: load → inventory → score → assign → convert → validate → verify →
report → export. Per migration (once for the whole batch): the target's architecture
inventory and its execution-order trace, and the same for the source architecture when
one is given (it enables the functional check).

Identical architectures share artifacts: the inventory, score and assign stages key on
the checkpoint's header (names, shapes, dtypes), so twenty checkpoints of one sweep are
scored once; convert and the checks key on the checkpoint's bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError
from weightmapper.inventory import Inventory
from weightmapper.pipeline import ops
from weightmapper.pipeline.codec import inventory_from_json, inventory_to_json, table_to_json
from weightmapper.pipeline.config import InputSpec, ModuleSpec, TargetSpec
from weightmapper.pipeline.keys import digest_json, stage_key
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.result import MappingResult
from weightmapper.targets import build_module

log = logging.getLogger(__name__)

# A stage's version changes when its output for the same inputs changes.
STAGE_VERSIONS: dict[str, int] = {
    "load": 1,
    "inventory": 1,
    "architecture": 1,
    "trace": 1,
    "score": 1,
    "assign": 1,
    "convert": 1,
    "validate": 1,
    "verify": 1,
    "report": 1,
}


def _key(stage: str, inputs: dict[str, str | None], settings: dict[str, Any] | None = None) -> str:
    return stage_key(
        stage,
        STAGE_VERSIONS[stage],
        inputs={k: v for k, v in inputs.items() if v is not None},
        settings=settings,
    )


def _digest(ref: ArtifactRef | None) -> str | None:
    return None if ref is None else ref.digest


# --- inputs --------------------------------------------------------------------------------


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint path (file, shard index or directory of shards) → the files holding it."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and not f.name.startswith("."))
        if files:
            return files
    elif p.is_file():
        if p.name.endswith(".index.json"):
            with contextlib.suppress(OSError, ValueError, AttributeError):
                shards = set(json.loads(p.read_text()).get("weight_map", {}).values())
                return [p, *sorted(p.parent / s for s in shards)]
        return [p]
    raise CheckpointNotFoundError(
        f"checkpoint {p} does not exist (or is an empty directory); check the job's "
        "'sources' paths and patterns."
    )


def make_dummy_input(spec: InputSpec) -> torch.Tensor:
    """InputSpec → a deterministic tensor (same seed, same values, on every machine)."""
    gen = torch.Generator().manual_seed(spec.seed)
    dtype = getattr(torch, spec.dtype)
    if spec.kind == "randint":
        return torch.randint(0, spec.high, spec.shape, generator=gen, dtype=dtype)
    return torch.randn(spec.shape, generator=gen).to(dtype)


def build_architecture(spec: ModuleSpec, *, meta: bool = False) -> nn.Module:
    """ModuleSpec → a fresh module in eval mode (on the meta device when ``meta``)."""
    if meta:
        with torch.device("meta"):
            module = build_module(spec.spec, spec.kwargs)
    else:
        module = build_module(spec.spec, spec.kwargs)
    return module.eval()


# --- load ------------------------------------------------------------------------------------


def key_load(store: ArtifactStore, path: str, trusted: bool = False) -> str:
    """Checkpoint bytes + loading settings → the load stage's key."""
    digest = store.file_digest(checkpoint_files(path))
    return _key("load", {"checkpoint": digest}, {"trusted": bool(trusted)})


def load(store: ArtifactStore, path: str, trusted: bool = False) -> ArtifactRef:
    """Checkpoint path → JSON artifact of its normalized tensor table (names, shapes, dtypes).

    ``info["checkpoint_sha256"]`` carries the checkpoint's content digest to the stages
    that read its tensor data.
    """
    digest = store.file_digest(checkpoint_files(path))
    key = _key("load", {"checkpoint": digest}, {"trusted": bool(trusted)})

    def compute() -> dict[str, Any]:
        table = ops.open_table(path, trusted=trusted)
        return table_to_json(table)

    return store.produce_json(
        "load",
        key,
        compute,
        lambda d: {
            "checkpoint_sha256": digest,
            "tensors": len(d["tensors"]),
            "trusted": bool(trusted),
        },
    )


# --- inventory -------------------------------------------------------------------------------


def key_inventory(store: ArtifactStore, load_ref: ArtifactRef) -> str:
    """Load artifact → the inventory stage's key (the header only, not the tensor data)."""
    return _key("inventory", {"table": load_ref.digest})


def inventory(store: ArtifactStore, load_ref: ArtifactRef) -> ArtifactRef:
    """Load artifact → JSON artifact of the checkpoint's Inventory (groups, buffers, ties)."""

    def compute() -> dict[str, Any]:
        table = store.read_json(load_ref)
        inv = ops.inventory_from_table_json(table)
        return inventory_to_json(inv)

    return store.produce_json(
        "inventory",
        key_inventory(store, load_ref),
        compute,
        lambda d: {"tensors": len(d["tensors"])},
    )


# --- architecture (once per batch) ----------------------------------------------------------


def _architecture_inventory(store: ArtifactStore, target: TargetSpec) -> tuple[Inventory, str]:
    if target.module is not None:
        inv = Inventory.from_module(build_architecture(target.module, meta=True))
        # The signature covers names, shapes and dtypes; module types and registration
        # order also steer the mapper, so they are part of the identity too.
        ident = digest_json(
            {
                "signature": inv.signature(),
                "types": inv.module_types,
                "order": inv.order,
                "spec": target.module.to_dict(),
            }
        )
        return inv, ident
    assert target.checkpoint is not None
    digest = store.file_digest(checkpoint_files(target.checkpoint))
    table = ops.open_table(str(target.checkpoint), trusted=False)
    return Inventory.from_table(table), digest


def key_architecture(store: ArtifactStore, target: TargetSpec) -> str:
    """Target spec → the architecture stage's key (its architecture signature)."""
    _, ident = _architecture_inventory(store, target)
    return _key("architecture", {"architecture": ident})


def architecture(store: ArtifactStore, target: TargetSpec) -> ArtifactRef:
    """Target (module spec, or target checkpoint) → JSON artifact of its Inventory.

    The module is built on the meta device: no memory, no weights.
    """
    inv, ident = _architecture_inventory(store, target)
    return store.produce_json(
        "architecture",
        _key("architecture", {"architecture": ident}),
        lambda: inventory_to_json(inv),
        lambda d: {"tensors": len(d["tensors"]), "signature": inv.signature()},
    )


# --- trace (once per batch) -----------------------------------------------------------------


def key_trace(
    store: ArtifactStore, arch_ref: ArtifactRef, spec: ModuleSpec, dummy: InputSpec
) -> str:
    """Architecture artifact + dummy input → the trace stage's key."""
    return _key("trace", {"architecture": arch_ref.digest}, {"input": dummy.to_dict()})


def trace(
    store: ArtifactStore, arch_ref: ArtifactRef, spec: ModuleSpec, dummy: InputSpec
) -> ArtifactRef:
    """Architecture + dummy input → JSON artifact ``{"order": {module path: rank} | null}``.

    Runs one forward pass of a freshly built module; a failing forward gives ``null`` and
    the mapper falls back to registration order.
    """

    def compute() -> dict[str, Any]:
        module = build_architecture(spec)
        order = ops.trace_order(module, make_dummy_input(dummy))
        return {"order": order}

    return store.produce_json(
        "trace",
        key_trace(store, arch_ref, spec, dummy),
        compute,
        lambda d: {"traced": d["order"] is not None},
    )


# --- score and assign -----------------------------------------------------------------------


def _ordered(
    store: ArtifactStore, inv_ref: ArtifactRef, trace_ref: ArtifactRef | None
) -> Inventory:
    inv = inventory_from_json(store.read_json(inv_ref))
    if trace_ref is not None:
        order = store.read_json(trace_ref).get("order")
        if order:
            inv = inv.with_order(order, traced=True)
    return inv


def key_score(
    store: ArtifactStore,
    source_inv: ArtifactRef,
    target_inv: ArtifactRef,
    source_trace: ArtifactRef | None = None,
    target_trace: ArtifactRef | None = None,
    settings: dict[str, Any] | None = None,
) -> str:
    """Both inventories, both traces and the scoring settings → the score stage's key."""
    return _key(
        "score",
        {
            "source": source_inv.digest,
            "target": target_inv.digest,
            "source_trace": _digest(source_trace),
            "target_trace": _digest(target_trace),
        },
        ops.scoring_settings(settings or {}),
    )


def score(
    store: ArtifactStore,
    source_inv: ArtifactRef,
    target_inv: ArtifactRef,
    source_trace: ArtifactRef | None = None,
    target_trace: ArtifactRef | None = None,
    settings: dict[str, Any] | None = None,
) -> ArtifactRef:
    """Inventories (+ traces) + scoring settings → JSON artifact of the scored candidates.

    Independent of the threshold and strategy: changing those reruns ``assign`` only.
    """

    def compute() -> dict[str, Any]:
        src = _ordered(store, source_inv, source_trace)
        tgt = _ordered(store, target_inv, target_trace)
        return ops.score_candidates(src, tgt, settings or {})

    key = key_score(store, source_inv, target_inv, source_trace, target_trace, settings)
    return store.produce_json("score", key, compute, ops.score_info)


def key_assign(
    store: ArtifactStore, score_ref: ArtifactRef, settings: dict[str, Any] | None = None
) -> str:
    """Score artifact + assignment settings (threshold, strategy) → the assign stage's key."""
    return _key("assign", {"score": score_ref.digest}, ops.assignment_settings(settings or {}))


def assign(
    store: ArtifactStore, score_ref: ArtifactRef, settings: dict[str, Any] | None = None
) -> ArtifactRef:
    """Score artifact + threshold/strategy → JSON artifact of the MappingResult."""

    def compute() -> dict[str, Any]:
        result = ops.assign_candidates(store.read_json(score_ref), settings or {})
        return result.to_dict()

    def info(d: dict[str, Any]) -> dict[str, Any]:
        cov = d.get("coverage") or {}
        return {
            "pairs": len(d.get("pairs") or []),
            "mapping_sha256": ops.mapping_digest(d),
            "source_coverage": cov.get("source_coverage"),
            "target_coverage": cov.get("target_coverage"),
        }

    return store.produce_json("assign", key_assign(store, score_ref, settings), compute, info)


def read_mapping(store: ArtifactStore, assign_ref: ArtifactRef) -> MappingResult:
    """Assign artifact → the MappingResult it holds."""
    return MappingResult.from_dict(store.read_json(assign_ref))


# --- convert ---------------------------------------------------------------------------------


def key_convert(
    store: ArtifactStore, path: str, load_ref: ArtifactRef, assign_ref: ArtifactRef
) -> str:
    """Checkpoint bytes + what the mapping does → the convert stage's key.

    Only the pairs and their transforms count, not scores or settings: a new threshold
    that leaves the pairs unchanged reuses the converted checkpoint.
    """
    return _key(
        "convert",
        {
            "checkpoint": load_ref.info["checkpoint_sha256"],
            "mapping": assign_ref.info["mapping_sha256"],
        },
    )


def convert(
    store: ArtifactStore, path: str, load_ref: ArtifactRef, assign_ref: ArtifactRef
) -> ArtifactRef:
    """Checkpoint + mapping → safetensors artifact of the target-named state dict."""
    _check_unchanged(store, path, load_ref)

    def write(tmp: Path) -> dict[str, Any]:
        mapping = read_mapping(store, assign_ref)
        return ops.convert_to_file(path, mapping, tmp, trusted=bool(load_ref.info.get("trusted")))

    key = key_convert(store, path, load_ref, assign_ref)
    return store.produce("convert", key, "safetensors", write)


def _check_unchanged(store: ArtifactStore, path: str, load_ref: ArtifactRef) -> None:
    now = store.file_digest(checkpoint_files(path))
    if now != load_ref.info.get("checkpoint_sha256"):
        raise CheckpointFormatError(
            f"checkpoint {path} changed while the batch was running (its sha256 is now "
            f"{now[:12]}, it was {str(load_ref.info.get('checkpoint_sha256'))[:12]}); "
            "rerun the batch once writing has finished."
        )


# --- validate and verify --------------------------------------------------------------------


def key_validate(
    store: ArtifactStore, convert_ref: ArtifactRef, target: TargetSpec, arch_ref: ArtifactRef
) -> str:
    """Converted checkpoint + target architecture → the validate stage's key."""
    return _key("validate", {"converted": convert_ref.digest, "architecture": arch_ref.digest})


def validate(
    store: ArtifactStore, convert_ref: ArtifactRef, target: TargetSpec, arch_ref: ArtifactRef
) -> ArtifactRef:
    """Converted checkpoint + target → JSON artifact of the strict load-into-target check."""

    def compute() -> dict[str, Any]:
        if target.module is None:
            return ops.validate_against_table(
                convert_ref.path, inventory_from_json(store.read_json(arch_ref))
            )
        return ops.validate_file(convert_ref.path, build_architecture(target.module))

    return store.produce_json(
        "validate",
        key_validate(store, convert_ref, target, arch_ref),
        compute,
        lambda d: {"ok": bool(d.get("ok"))},
    )


def key_verify(
    store: ArtifactStore,
    path: str,
    load_ref: ArtifactRef,
    convert_ref: ArtifactRef,
    assign_ref: ArtifactRef,
    source: ModuleSpec,
    target: ModuleSpec,
    source_arch: ArtifactRef,
    target_arch: ArtifactRef,
    dummy: InputSpec,
    trusted: bool = False,
) -> str:
    """Source bytes, converted bytes, both architectures, the input → the verify stage's key."""
    return _key(
        "verify",
        {
            "checkpoint": load_ref.info["checkpoint_sha256"],
            "converted": convert_ref.digest,
            "mapping": assign_ref.info["mapping_sha256"],
            "source_architecture": source_arch.digest,
            "target_architecture": target_arch.digest,
        },
        {"input": dummy.to_dict()},
    )


def verify(
    store: ArtifactStore,
    path: str,
    load_ref: ArtifactRef,
    convert_ref: ArtifactRef,
    assign_ref: ArtifactRef,
    source: ModuleSpec,
    target: ModuleSpec,
    source_arch: ArtifactRef,
    target_arch: ArtifactRef,
    dummy: InputSpec,
    trusted: bool = False,
) -> ArtifactRef:
    """Source and converted checkpoints in their architectures → JSON functional check.

    Both run on the dummy input; when the outputs differ, the mapping locates the first
    target module whose output diverges.
    """
    _check_unchanged(store, path, load_ref)

    def compute() -> dict[str, Any]:
        return ops.functional_check(
            path,
            convert_ref.path,
            build_architecture(source),
            build_architecture(target),
            make_dummy_input(dummy),
            read_mapping(store, assign_ref),
            trusted=trusted,
        )

    key = key_verify(
        store,
        path,
        load_ref,
        convert_ref,
        assign_ref,
        source,
        target,
        source_arch,
        target_arch,
        dummy,
        trusted,
    )
    return store.produce_json("verify", key, compute, _check_info)


def _check_info(d: dict[str, Any]) -> dict[str, Any]:
    return {"ok": bool(d.get("ok")), "max_abs_diff": d.get("max_abs_diff")}


# --- report and export ----------------------------------------------------------------------


def key_report(
    store: ArtifactStore,
    load_ref: ArtifactRef,
    source_inv: ArtifactRef,
    target_arch: ArtifactRef,
    assign_ref: ArtifactRef,
    validate_ref: ArtifactRef | None = None,
    verify_ref: ArtifactRef | None = None,
) -> str:
    """Every input of the report → the report stage's key."""
    return _key(
        "report",
        {
            "checkpoint": load_ref.info["checkpoint_sha256"],
            "source": source_inv.digest,
            "target": target_arch.digest,
            "mapping": assign_ref.digest,
            "validation": _digest(validate_ref),
            "functional": _digest(verify_ref),
        },
    )


def report(
    store: ArtifactStore,
    load_ref: ArtifactRef,
    source_inv: ArtifactRef,
    target_arch: ArtifactRef,
    assign_ref: ArtifactRef,
    validate_ref: ArtifactRef | None = None,
    verify_ref: ArtifactRef | None = None,
) -> ArtifactRef:
    """Mapping, inventories and check results → JSON artifact of the weightmapper report."""

    def compute() -> dict[str, Any]:
        from weightmapper.report import build_report

        return build_report(
            _ReportInputs(
                read_mapping(store, assign_ref),
                inventory_from_json(store.read_json(source_inv)),
                inventory_from_json(store.read_json(target_arch)),
            ),
            validation=store.read_json(validate_ref) if validate_ref else None,
            functional_check=store.read_json(verify_ref) if verify_ref else None,
            hash_inputs=False,
        )

    key = key_report(store, load_ref, source_inv, target_arch, assign_ref, validate_ref, verify_ref)
    return store.produce_json("report", key, compute)


class _ReportInputs:
    """What build_report reads from a mapper: the result and both inventories."""

    def __init__(self, result: MappingResult, source: Inventory, target: Inventory) -> None:
        self.result = result
        self.source_inventory = source
        self.target_inventory = target


def report_path_for(output: Path) -> Path:
    """Converted checkpoint path → the path of its JSON report beside it."""
    return output.with_name(output.name.removesuffix(".safetensors") + ".report.json")


def key_export(convert_ref: ArtifactRef, report_ref: ArtifactRef, output: str) -> str:
    """Converted and report artifacts + output path → the export step's key.

    Export places files at a path, so unlike every other key this one names the path.
    """
    return stage_key(
        "export",
        1,
        inputs={"converted": convert_ref.digest, "report": report_ref.digest},
        settings={"output": str(output)},
    )


def export_is_current(convert_ref: ArtifactRef, report_ref: ArtifactRef, output: str) -> bool:
    """True when the output and its report already hold the artifacts' bytes."""
    out = Path(output)
    return _same_content(out, convert_ref) and _same_content(report_path_for(out), report_ref)


def export(
    store: ArtifactStore, convert_ref: ArtifactRef, report_ref: ArtifactRef, output: str
) -> tuple[str, str, bool]:
    """Converted and report artifacts + output path → (output, report path, already there).

    The converted checkpoint is hard-linked from the store when both live on one file
    system (no copy, no extra space) and copied otherwise; either way the output appears
    atomically. An output that already holds the artifact's bytes is left alone.
    """
    out = Path(output)
    rep = report_path_for(out)
    same = export_is_current(convert_ref, report_ref, output)
    if not same:
        _place(Path(convert_ref.path), out)
        _place(Path(report_ref.path), rep)
    return str(out), str(rep), same


def _same_content(dest: Path, ref: ArtifactRef) -> bool:
    try:
        a, b = dest.stat(), Path(ref.path).stat()
    except FileNotFoundError:
        return False
    return (a.st_ino == b.st_ino and a.st_dev == b.st_dev) or (
        a.st_size == b.st_size and _sha256(dest) == ref.digest
    )


def _sha256(path: Path) -> str:
    from weightmapper.pipeline.keys import digest_file

    return digest_file(path)


def _place(src: Path, dest: Path) -> None:
    import shutil

    from weightmapper.atomic import atomic_path

    if dest.resolve() == src.resolve():
        return
    with atomic_path(dest) as tmp:
        try:
            tmp.unlink()
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


# Key functions by stage name, for orchestrators (the Prefect tasks) that need a stage's
# key before deciding whether to run it.
KEY_FUNCTIONS: dict[str, Callable[..., str]] = {
    "load": key_load,
    "inventory": key_inventory,
    "architecture": key_architecture,
    "trace": key_trace,
    "score": key_score,
    "assign": key_assign,
    "convert": key_convert,
    "validate": key_validate,
    "verify": key_verify,
    "report": key_report,
}
