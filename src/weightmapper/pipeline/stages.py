"""Pipeline stages: each a small frozen input whose ``key`` and ``run`` read the same fields.

A stage's input object holds everything the stage reads (paths, settings, the
:class:`ArtifactRef` of each earlier artifact). ``key(store)`` is a sha256 over the stage
name and version, the library version, the digests of the input artifacts and the stage's
own settings, never a path or an object id; ``run(store)`` returns the artifact's
:class:`ArtifactRef` (``ref.cached`` says whether it was reused). The order in which a
batch runs them lives in :mod:`weightmapper.pipeline.graph`.

Identical architectures share artifacts: the inventory, score and assign stages key on
the checkpoint's header (names, shapes, dtypes), so twenty checkpoints of one sweep are
scored once; convert and the checks key on the checkpoint's bytes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from weightmapper.dataflow import dataflow_roles
from weightmapper.engine.calibration import calibration_digest
from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError
from weightmapper.inventory import Inventory
from weightmapper.pipeline import ops, recall
from weightmapper.pipeline.codec import (
    inventory_from_json,
    inventory_to_json,
    roles_from_json,
    roles_to_json,
    table_to_json,
)
from weightmapper.pipeline.config import InputSpec, ModuleSpec, TargetSpec
from weightmapper.pipeline.keys import digest_json, stage_key
from weightmapper.pipeline.store import ArtifactRef, ArtifactStore
from weightmapper.result import MappingResult
from weightmapper.settings import MapperSettings
from weightmapper.targets import build_module

log = logging.getLogger(__name__)


def _key(
    stage: str, version: int, inputs: dict[str, str | None], settings: dict[str, Any] | None = None
) -> str:
    return stage_key(
        stage,
        version,
        inputs={k: v for k, v in inputs.items() if v is not None},
        settings=settings,
    )


def _digest(ref: ArtifactRef | None) -> str | None:
    return None if ref is None else ref.digest


class Stage:
    """Base of every stage input: ``key(store)`` and ``run(store)`` over the same fields.

    Subclasses are frozen dataclasses whose fields are the stage's inputs; ``name`` is the
    artifact folder in the store, ``version`` changes when the output for the same inputs
    changes (it is part of the key).
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1

    def key(self, store: ArtifactStore) -> str:
        """Store → this stage's content key for these inputs."""
        raise NotImplementedError

    def present(self, store: ArtifactStore, key: str) -> bool:
        """Store + this stage's key → True when its (verified) result is already there."""
        return store.lookup(self.name, key) is not None

    def run(self, store: ArtifactStore) -> Any:
        """Store → this stage's result (an ArtifactRef), computed or reused."""
        raise NotImplementedError


# --- inputs --------------------------------------------------------------------------------

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Suffixes of files that may hold a checkpoint's tensors when it is given as a folder."""


def checkpoint_files(path: str | os.PathLike[str]) -> list[Path]:
    """Checkpoint path (file, shard index or folder) → the files holding its tensors.

    A checkpoint's identity (its hash, hence every key) is its weight files only: the file
    the readers pick in a folder, or an index and the shards it names. READMEs, configs and
    logs beside it are not part of it, so editing or growing them changes nothing.
    """
    from weightmapper.checkpoint import resolve_checkpoint

    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(
            f"checkpoint {p} does not exist; check the job's 'sources' paths and patterns."
        )
    resolved, _ = resolve_checkpoint(p)
    if resolved.name.endswith(".json"):
        return [resolved, *_shards(resolved)]
    return [resolved]


def _shards(index: Path) -> list[Path]:
    """Shard index → the shard files it names, each checked to be a regular file inside the
    index's folder before it is hashed (hashing ``/dev/zero`` would never end)."""
    from weightmapper.checkpoint import shard_files

    return shard_files(index)


def make_dummy_input(spec: InputSpec) -> torch.Tensor:
    """InputSpec → a deterministic tensor (same seed, same values, on every machine)."""
    gen = torch.Generator().manual_seed(spec.seed)
    dtype = getattr(torch, spec.dtype)
    if spec.kind == "randint":
        return torch.randint(0, spec.high, spec.shape, generator=gen, dtype=dtype)
    return torch.randn(spec.shape, generator=gen).to(dtype)


def build_architecture(spec: ModuleSpec, *, meta: bool = False) -> nn.Module:
    """ModuleSpec → a fresh module in eval mode (on the meta device when ``meta``)."""
    return build_module(spec.spec, spec.kwargs, config=spec.config, meta=meta).eval()


# --- load ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadStage(Stage):
    """Checkpoint path → JSON artifact of its normalized tensor table (names, shapes, dtypes).

    Keyed on the checkpoint's bytes; ``info["checkpoint_sha256"]`` carries that digest to
    the stages that read its tensor data.
    """

    name: ClassVar[str] = "load"
    path: str
    trusted: bool = False

    def key(self, store: ArtifactStore) -> str:
        """Checkpoint bytes + loading settings → the load stage's key."""
        return self._key(store.file_digest(checkpoint_files(self.path)))

    def _key(self, digest: str) -> str:
        return _key(self.name, self.version, {"checkpoint": digest}, {"trusted": self.trusted})

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the load artifact."""
        digest = store.file_digest(checkpoint_files(self.path))

        def compute() -> dict[str, Any]:
            return table_to_json(ops.open_table(self.path, trusted=self.trusted))

        def info(d: dict[str, Any]) -> dict[str, Any]:
            return {
                "checkpoint_sha256": digest,
                "tensors": len(d["tensors"]),
                "trusted": self.trusted,
            }

        return store.produce_json(self.name, self._key(digest), compute, info)


def check_unchanged(store: ArtifactStore, path: str, load: ArtifactRef) -> None:
    """Checkpoint path + its load artifact → None, or CheckpointFormatError if it changed since."""
    now = store.file_digest(checkpoint_files(path))
    if now != load.info.get("checkpoint_sha256"):
        raise CheckpointFormatError(
            f"checkpoint {path} changed while the batch was running (its sha256 is now "
            f"{now[:12]}, it was {str(load.info.get('checkpoint_sha256'))[:12]}); "
            "rerun the batch once writing has finished."
        )


# --- inventory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class InventoryStage(Stage):
    """Load artifact → JSON artifact of the checkpoint's Inventory (groups, buffers, ties).

    Keyed on the table (names, shapes, dtypes), not the tensor data.
    """

    name: ClassVar[str] = "inventory"
    version: ClassVar[int] = 2  # 2: records whether the keys came sorted
    load: ArtifactRef

    def key(self, store: ArtifactStore) -> str:
        """Store → the inventory stage's key."""
        return _key(self.name, self.version, {"table": self.load.digest})

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the inventory artifact."""

        def compute() -> dict[str, Any]:
            inv = ops.inventory_from_table_json(store.read_json(self.load))
            return inventory_to_json(inv)

        return store.produce_json(
            self.name, self.key(store), compute, lambda d: {"tensors": len(d["tensors"])}
        )


# --- architecture and trace (once per migration) --------------------------------------------


@dataclass(frozen=True)
class ArchitectureStage(Stage):
    """Target (module spec, or target checkpoint) → JSON artifact of its Inventory.

    Keyed on the architecture signature. The module is built on the meta device: no
    memory, no weights; and only when its identity is not remembered from an earlier build
    with the same spec, code and packages (:mod:`weightmapper.pipeline.recall`).
    """

    name: ClassVar[str] = "architecture"
    target: TargetSpec

    def _inventory(self, store: ArtifactStore) -> tuple[Inventory, str]:
        target = self.target
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
            recall.remember(store, target.module, ident)
            return inv, ident
        if target.checkpoint is None:  # TargetSpec refuses this; kept for type checkers
            raise CheckpointNotFoundError("a target needs a module or a checkpoint")
        digest = store.file_digest(checkpoint_files(target.checkpoint))
        table = ops.open_table(str(target.checkpoint), trusted=False)
        return Inventory.from_table(table), digest

    def _recalled(self, store: ArtifactStore) -> str | None:
        """Store → the module's remembered identity (:mod:`weightmapper.pipeline.recall`),
        or None when it must be built (or the target is a checkpoint)."""
        module = self.target.module
        return None if module is None else recall.recall(store, module)

    def _key_of(self, identity: str) -> str:
        return _key(self.name, self.version, {"architecture": identity})

    def key(self, store: ArtifactStore) -> str:
        """Store → the architecture stage's key (nothing built when it is remembered)."""
        return self._key_of(self._recalled(store) or self._inventory(store)[1])

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the architecture artifact (the module built only when not stored)."""
        ident = self._recalled(store)
        if ident is not None:
            hit = store.lookup(self.name, self._key_of(ident))
            if hit is not None:
                return replace(hit, cached=True)
        inv, ident = self._inventory(store)
        return store.produce_json(
            self.name,
            self._key_of(ident),
            lambda: inventory_to_json(inv),
            lambda d: {"tensors": len(d["tensors"]), "signature": inv.signature()},
        )


@dataclass(frozen=True)
class TraceStage(Stage):
    """Architecture + dummy input → JSON artifact ``{"order": {path: rank} | null, "roles": …}``.

    Runs a freshly built module forward: once for the order of its modules, once recording
    the dataflow the roles of its tensors are read from. A failing forward gives ``null``
    and no roles; the mapper falls back to registration order and naming conventions.
    """

    name: ClassVar[str] = "trace"
    version: ClassVar[int] = 3  # 3: RoPE's style read by probes, with what showed it
    architecture: ArtifactRef
    module: ModuleSpec
    dummy: InputSpec

    def key(self, store: ArtifactStore) -> str:
        """Store → the trace stage's key."""
        return _key(
            self.name,
            self.version,
            {"architecture": self.architecture.digest},
            {"input": self.dummy.to_dict()},
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the trace artifact."""

        def compute() -> dict[str, Any]:
            module = build_architecture(self.module)
            dummy = make_dummy_input(self.dummy)
            return {
                "order": ops.trace_order(module, dummy),
                "roles": roles_to_json(dataflow_roles(module, dummy)),
            }

        return store.produce_json(
            self.name, self.key(store), compute, lambda d: {"traced": d["order"] is not None}
        )


# --- score and assign -----------------------------------------------------------------------


def _ordered(
    store: ArtifactStore, inv_ref: ArtifactRef, trace_ref: ArtifactRef | None
) -> Inventory:
    inv = inventory_from_json(store.read_json(inv_ref))
    if trace_ref is not None:
        trace = store.read_json(trace_ref)
        if trace.get("order"):
            inv = inv.with_order(trace["order"], traced=True)
        if trace.get("roles"):
            inv = inv.with_roles(roles_from_json(trace["roles"]))
    return inv


@dataclass(frozen=True)
class ScoreStage(Stage):
    """Inventories (+ traces) + scoring settings → JSON artifact of the scored candidates.

    Independent of the threshold and strategy: changing those reruns ``assign`` only.
    """

    name: ClassVar[str] = "score"
    version: ClassVar[int] = 11
    # 2: roles, layouts; 3: evidence; 4, 5: sorted order; 6: name margin; 7: shifted blocks;
    # 8: lone roles (role_unique), layouts assumed from names are ambiguous
    # 9: context from anchors; 10: learned index offsets; 11: RoPE read from both forward
    # passes is written on the pair, one a forward pass could not read is said
    source: ArtifactRef
    target: ArtifactRef
    source_trace: ArtifactRef | None = None
    target_trace: ArtifactRef | None = None
    settings: MapperSettings = field(default_factory=MapperSettings)

    def key(self, store: ArtifactStore) -> str:
        """Store → the score stage's key."""
        return _key(
            self.name,
            self.version,
            {
                "source": self.source.digest,
                "target": self.target.digest,
                "source_trace": _digest(self.source_trace),
                "target_trace": _digest(self.target_trace),
            },
            ops.score_key_settings(self.settings),
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the score artifact."""

        def compute() -> dict[str, Any]:
            src = _ordered(store, self.source, self.source_trace)
            tgt = _ordered(store, self.target, self.target_trace)
            return ops.score_candidates(src, tgt, self.settings)

        return store.produce_json(self.name, self.key(store), compute, ops.score_info)


@dataclass(frozen=True)
class AssignStage(Stage):
    """Score artifact + threshold/strategy → JSON artifact of the MappingResult."""

    name: ClassVar[str] = "assign"
    version: ClassVar[int] = 7
    # 2: scores are calibrated probabilities; 3: ambiguous by names; 4: shifted blocks;
    # 5: class estimates of lone roles and of layouts assumed from names
    # 6: context agreement lifts the shape-only cap; 7: RoPE notes
    score: ArtifactRef
    settings: MapperSettings = field(default_factory=MapperSettings)

    def key(self, store: ArtifactStore) -> str:
        """Store → the assign stage's key."""
        return _key(
            self.name,
            self.version,
            # a refitted calibration map changes the scores of the same candidates
            {"score": self.score.digest, "calibration": calibration_digest()},
            ops.assign_key_settings(self.settings),
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the assign artifact (``info``: pairs, coverage, mapping digest)."""

        def compute() -> dict[str, Any]:
            return ops.assign_from_json(store.read_json(self.score), self.settings).to_dict()

        def info(d: dict[str, Any]) -> dict[str, Any]:
            cov = d.get("coverage") or {}
            return {
                "pairs": len(d.get("pairs") or []),
                "mapping_sha256": ops.mapping_digest(d),
                "source_coverage": cov.get("source_coverage"),
                "target_coverage": cov.get("target_coverage"),
                "source_confident_coverage": cov.get("source_confident_coverage"),
                "target_confident_coverage": cov.get("target_confident_coverage"),
            }

        return store.produce_json(self.name, self.key(store), compute, info)


def read_mapping(store: ArtifactStore, assign_ref: ArtifactRef) -> MappingResult:
    """Assign artifact → the MappingResult it holds."""
    return MappingResult.from_dict(store.read_json(assign_ref))


# --- prove (when the job names the source architecture) -------------------------------------


@dataclass(frozen=True)
class _BothNetworks(Stage):
    """Fields and key parts shared by the stages that run both networks (prove, verify): the
    source checkpoint in its architecture, the mapping, the target architecture, the input."""

    path: str
    load: ArtifactRef
    assign: ArtifactRef
    source_architecture: ArtifactRef
    target_architecture: ArtifactRef
    source: ModuleSpec
    target: ModuleSpec
    dummy: InputSpec
    trusted: bool

    def _inputs(self) -> dict[str, str | None]:
        """→ the key parts both stages share: checkpoint bytes, mapping, both architectures."""
        return {
            "checkpoint": self.load.info["checkpoint_sha256"],
            "mapping": self.assign.info["mapping_sha256"],
            "source_architecture": self.source_architecture.digest,
            "target_architecture": self.target_architecture.digest,
        }

    def _networks(self, store: ArtifactStore) -> tuple[Any, Any, Any, MappingResult]:
        """Store → (source module, target module, dummy input, mapping), built fresh."""
        return (
            build_architecture(self.source),
            build_architecture(self.target),
            make_dummy_input(self.dummy),
            read_mapping(store, self.assign),
        )


@dataclass(frozen=True)
class ProveStage(_BothNetworks):
    """Source checkpoint in its architecture + mapping + target architecture + dummy input →
    JSON artifact of the mapping the proof's search leaves, with its status.

    Both networks run on the dummy input; where their outputs differ, the search tries the
    alternatives the engine kept (:func:`weightmapper.proof.prove`) and keeps those that make
    the outputs equal. The artifact is a mapping like the assign stage's (``info`` carries its
    ``mapping_sha256``), so the conversion that follows is of the proven mapping; its
    ``metadata["proof"]`` holds the search's record (fixes, alternatives tried, diagnosis).
    Keyed on the checkpoint's bytes (the weights decide where the outputs differ), the
    mapping, both architectures (specs, kwargs and configs), the input and the search's
    budget and tolerances.
    """

    name: ClassVar[str] = "prove"

    def key(self, store: ArtifactStore) -> str:
        """Store → the prove stage's key."""
        return _key(
            self.name,
            self.version,
            self._inputs(),
            {"input": self.dummy.to_dict(), "search": ops.SEARCH_SETTINGS},
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the prove artifact (``info``: mapping_sha256, state, fixes, status)."""
        check_unchanged(store, self.path, self.load)

        def compute() -> dict[str, Any]:
            return ops.prove_mapping(self.path, *self._networks(store), trusted=self.trusted)

        def info(d: dict[str, Any]) -> dict[str, Any]:
            proof = (d.get("metadata") or {}).get("proof") or {}
            return {
                "pairs": len(d.get("pairs") or []),
                "mapping_sha256": ops.mapping_digest(d),
                "state": proof.get("state"),
                "fixes": len(proof.get("fixes") or []),
                "status": (d.get("status") or {}).get("label"),
            }

        return store.produce_json(self.name, self.key(store), compute, info)


# --- convert ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConvertStage(Stage):
    """Checkpoint + mapping (the assign stage's, or the prove stage's) → safetensors artifact
    of the target-named state dict.

    Keyed on the checkpoint's bytes and what the mapping does (pairs and transforms), not
    scores or settings: a new threshold that leaves the pairs unchanged reuses it.
    """

    name: ClassVar[str] = "convert"
    path: str
    load: ArtifactRef
    assign: ArtifactRef

    def key(self, store: ArtifactStore) -> str:
        """Store → the convert stage's key."""
        return _key(
            self.name,
            self.version,
            {
                "checkpoint": self.load.info["checkpoint_sha256"],
                "mapping": self.assign.info["mapping_sha256"],
            },
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the converted safetensors artifact."""
        check_unchanged(store, self.path, self.load)

        def write(tmp: Path) -> dict[str, Any]:
            mapping = read_mapping(store, self.assign)
            trusted = bool(self.load.info.get("trusted"))
            return ops.convert_to_file(self.path, mapping, tmp, trusted=trusted)

        return store.produce(self.name, self.key(store), "safetensors", write)


# --- validate and verify --------------------------------------------------------------------


@dataclass(frozen=True)
class ValidateStage(Stage):
    """Converted checkpoint + target → JSON artifact of the strict load-into-target check."""

    name: ClassVar[str] = "validate"
    convert: ArtifactRef
    target: TargetSpec
    architecture: ArtifactRef

    def key(self, store: ArtifactStore) -> str:
        """Store → the validate stage's key (converted bytes, target architecture)."""
        return _key(
            self.name,
            self.version,
            {"converted": self.convert.digest, "architecture": self.architecture.digest},
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the validate artifact (``info["ok"]``)."""

        def compute() -> dict[str, Any]:
            if self.target.module is None:
                inv = inventory_from_json(store.read_json(self.architecture))
                return ops.validate_against_table(self.convert.path, inv)
            return ops.validate_file(self.convert.path, build_architecture(self.target.module))

        return store.produce_json(
            self.name, self.key(store), compute, lambda d: {"ok": bool(d.get("ok"))}
        )


@dataclass(frozen=True)
class VerifyStage(_BothNetworks):
    """Source and converted checkpoints in their architectures → JSON functional check.

    Both run on the dummy input; when the outputs differ, the mapping locates the first
    target module whose output diverges.
    """

    name: ClassVar[str] = "verify"
    version: ClassVar[int] = 3  # 3: a mapping the prove stage searched is not searched again
    convert: ArtifactRef

    def key(self, store: ArtifactStore) -> str:
        """Store → the verify stage's key (source and converted bytes, architectures, input)."""
        return _key(
            self.name,
            self.version,
            {**self._inputs(), "converted": self.convert.digest},
            {"input": self.dummy.to_dict()},
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the verify artifact (``info``: ok, max_abs_diff)."""
        check_unchanged(store, self.path, self.load)

        def compute() -> dict[str, Any]:
            source, target, dummy, mapping = self._networks(store)
            return ops.functional_check(
                self.path, self.convert.path, source, target, dummy, mapping, trusted=self.trusted
            )

        def info(d: dict[str, Any]) -> dict[str, Any]:
            return {
                "ok": bool(d.get("ok")),
                "max_abs_diff": d.get("max_abs_diff"),
                "status": (d.get("status") or {}).get("label"),
            }

        return store.produce_json(self.name, self.key(store), compute, info)


# --- report ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportStage(Stage):
    """Mapping, inventories and check results → JSON artifact of the weightmapper report."""

    name: ClassVar[str] = "report"
    load: ArtifactRef
    source: ArtifactRef
    target: ArtifactRef
    assign: ArtifactRef
    validate: ArtifactRef | None = None
    verify: ArtifactRef | None = None

    def key(self, store: ArtifactStore) -> str:
        """Store → the report stage's key (every input of the report)."""
        return _key(
            self.name,
            self.version,
            {
                "checkpoint": self.load.info["checkpoint_sha256"],
                "source": self.source.digest,
                "target": self.target.digest,
                "mapping": self.assign.digest,
                "validation": _digest(self.validate),
                "functional": _digest(self.verify),
            },
        )

    def run(self, store: ArtifactStore) -> ArtifactRef:
        """Store → the report artifact."""

        def compute() -> dict[str, Any]:
            from weightmapper.report import build_report

            return build_report(
                _ReportInputs(
                    read_mapping(store, self.assign),
                    inventory_from_json(store.read_json(self.source)),
                    inventory_from_json(store.read_json(self.target)),
                ),
                validation=store.read_json(self.validate) if self.validate else None,
                functional_check=store.read_json(self.verify) if self.verify else None,
                hash_inputs=False,
            )

        return store.produce_json(self.name, self.key(store), compute)


class _ReportInputs:
    """What build_report reads from a mapper: the result and both inventories."""

    def __init__(self, result: MappingResult, source: Inventory, target: Inventory) -> None:
        self.result = result
        self.source_inventory = source
        self.target_inventory = target
