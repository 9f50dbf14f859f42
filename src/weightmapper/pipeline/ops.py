"""The library calls behind each pipeline stage, in one place, with JSON-ready results.

Stages (``stages.py``) decide keys and caching; this module only calls weightmapper's
own functions (checkpoint reading, inventories, tracing, scoring, assignment, conversion,
validation, the functional check) and turns their answers into JSON-ready data.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from weightmapper.atomic import private_workdir
from weightmapper.inventory import Inventory
from weightmapper.pipeline.codec import info_from_json
from weightmapper.result import MappingResult
from weightmapper.settings import MapperSettings, changed_fields
from weightmapper.tensor_info import TensorInfo

# One output file whatever the checkpoint size: the store holds one artifact per key.
_NO_SHARDING = 1 << 62


def open_table(path: str, *, trusted: bool = False) -> Any:
    """Checkpoint path → its lazy, normalized TensorTable."""
    from weightmapper.checkpoint import open_checkpoint

    return open_checkpoint(path, trusted=trusted)


class _JsonTable(dict[str, TensorInfo]):
    """name → TensorInfo, plus the ``tied`` groups Inventory.from_table reads."""

    tied: list[tuple[str, ...]]


def inventory_from_table_json(data: Mapping[str, Any]) -> Inventory:
    """JSON tensor table (from the load stage) → Inventory of the checkpoint."""
    table = _JsonTable((t["name"], info_from_json(t)) for t in data["tensors"])
    table.tied = [tuple(t) for t in data.get("tied") or []]
    return Inventory.from_table(table, name="checkpoint")


def trace_order(module: nn.Module, dummy: Any) -> dict[str, int] | None:
    """Module + dummy input → module path → first-call rank, or None when forward fails."""
    from weightmapper.trace import trace_execution_order

    return trace_execution_order(module, dummy)


def score_key_settings(settings: MapperSettings | None) -> dict[str, Any]:
    """Mapper settings → what enters the score stage's key (ScoreSettings fields not at default)."""
    return changed_fields((settings or MapperSettings()).score)


def assign_key_settings(settings: MapperSettings | None) -> dict[str, Any]:
    """Mapper settings → what enters the assign stage's key (AssignSettings fields not at default)."""
    return changed_fields((settings or MapperSettings()).assign)


def score_candidates(
    source: Inventory, target: Inventory, settings: MapperSettings | None
) -> dict[str, Any]:
    """Both inventories + mapper settings → JSON form of the engine's Candidates."""
    from weightmapper.engine import score_inventories

    return score_inventories(source, target, (settings or MapperSettings()).score).to_dict()


def score_info(data: Mapping[str, Any]) -> dict[str, Any]:
    """JSON Candidates → small facts for the artifact record."""
    return {"proposals": len(data.get("proposals") or [])}


def assign_from_json(data: Mapping[str, Any], settings: MapperSettings | None) -> MappingResult:
    """JSON Candidates + mapper settings (threshold, strategy) → MappingResult."""
    from weightmapper.engine import Candidates, assign

    return assign(Candidates.from_dict(dict(data)), (settings or MapperSettings()).assign)


def mapping_digest(data: Mapping[str, Any]) -> str:
    """JSON mapping → sha256 of what it does (pairs, transforms, splits/merges), not its scores."""
    from weightmapper.convert import mapping_sha256

    return mapping_sha256(MappingResult.from_dict(dict(data)))


def convert_to_file(
    path: str, mapping: MappingResult, dest: Path, *, trusted: bool = False
) -> dict[str, Any]:
    """Source checkpoint + mapping → one safetensors file written at ``dest``; facts about it."""
    from weightmapper.convert import convert_checkpoint

    # convert_checkpoint names its output by suffix, so write under a proper name in a
    # private directory beside dest (same file system), then move it onto dest. No fsync
    # here: the store fsyncs dest before committing it.
    work = private_workdir(dest.parent, "convert")
    try:
        out = work / "converted.safetensors"
        rep = convert_checkpoint(
            open_table(path, trusted=trusted),
            mapping,
            out,
            shard_size=_NO_SHARDING,
            overwrite=True,
            durable=False,
        )
        out.replace(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        "tensors": rep.tensor_count,
        "bytes": rep.bytes_written,
        "dropped_source_keys": len(rep.dropped_source_keys),
    }


def validate_file(path: str, target: nn.Module | Mapping[str, TensorInfo]) -> dict[str, Any]:
    """Converted checkpoint + target (module, or names and shapes) → JSON ValidationResult."""
    from weightmapper.validate import validate_state_dict

    result = validate_state_dict(path, target)
    return {**result.to_dict(), "ok": bool(result.ok), "summary": result.summary()}


def validate_against_table(path: str, target: Inventory) -> dict[str, Any]:
    """Converted checkpoint + the target checkpoint's Inventory → JSON ValidationResult."""
    return validate_file(path, dict(target.tensors))


def source_state(path: str, module: nn.Module, *, trusted: bool = False) -> dict[str, torch.Tensor]:
    """Source checkpoint + the module it was trained as → its tensors named as the module names them.

    Wrapper prefixes are already stripped by the reader; a prefix every key shares
    (Lightning's ``model.``, :func:`weightmapper.checkpoint.suggest_prefix`) is removed too
    when the module's own names do not carry it. Buffers the module computes itself
    (non-persistent, e.g. BERT's ``position_ids`` in transformers 5, which older versions
    saved) are left out: they are not weights and a strict load would refuse them.
    """
    from weightmapper.checkpoint import open_checkpoint

    table = open_checkpoint(path, trusted=trusted)
    state = table.to_state_dict()
    own = module.state_dict()
    prefix = table.suggested_prefix
    if prefix and not any(k.startswith(prefix) for k in own):
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    computed = {n for n, _ in module.named_buffers()} - set(own)
    return {k: v for k, v in state.items() if k not in computed}


SEARCH_SETTINGS: dict[str, Any] = {"budget": 256, "atol": 1e-5, "rtol": 1e-4}
"""The proof search's bounds in the pipeline (part of the prove stage's key)."""


def prove_mapping(
    source_path: str,
    source: nn.Module,
    target: nn.Module,
    dummy: torch.Tensor,
    mapping: MappingResult,
    *,
    trusted: bool = False,
) -> dict[str, Any]:
    """Source checkpoint + both architectures + input + mapping → JSON of the mapping the
    proof's search leaves (its status set, ``metadata["proof"]`` the search's record).

    A source checkpoint that does not fit the source architecture, or a forward that fails,
    leaves the mapping as it was, with the reason in ``metadata["proof_error"]``: the verify
    stage then reports the failure on the converted file itself.
    """
    from weightmapper.errors import WeightMapperError
    from weightmapper.proof import prove

    try:
        source.load_state_dict(source_state(source_path, source, trusted=trusted), strict=True)
        proof = prove(source, target, mapping, dummy, **SEARCH_SETTINGS)
    except (WeightMapperError, RuntimeError) as e:  # strict load refused, or a forward failed
        data = mapping.to_dict()
        data["metadata"] = {**data["metadata"], "proof_error": f"{type(e).__name__}: {e}"[:2000]}
        return data
    data = proof.mapping.to_dict()
    data["metadata"] = {**data["metadata"], "proof": proof.to_dict()}
    return data


def functional_check(
    source_path: str,
    converted_path: str,
    source: nn.Module,
    target: nn.Module,
    dummy: torch.Tensor,
    mapping: MappingResult,
    *,
    trusted: bool = False,
) -> dict[str, Any]:
    """Source checkpoint in the source module vs converted file in the target → equal outputs?

    The converted file itself is what is proven: it is loaded (strictly) into the target,
    and the target's output is compared with the source module's on the same input. When
    they differ, the proof's search (``weightmapper.proof.prove``) runs through the mapping:
    it names the first target module whose output diverges and, when alternatives make the
    outputs equal, records the proven mapping (``proven_mapping``). ``status`` is the
    mapping's status.
    """
    from weightmapper.convert import load_converted
    from weightmapper.proof import prove
    from weightmapper.result import MappingStatus, status_of
    from weightmapper.verify import check_outputs

    source.load_state_dict(source_state(source_path, source, trusted=trusted), strict=True)
    fresh_target = copy.deepcopy(target)
    try:
        target.load_state_dict(load_converted(converted_path), strict=True)
    except RuntimeError as e:  # strict load refused: the check fails, it does not crash
        return {"ok": False, "equal": False, "max_abs_diff": None, "notes": [str(e)[:2000]]}
    with torch.no_grad():
        reference = source.eval()(dummy)
    check = check_outputs(None, target.eval(), {}, dummy, reference_output=reference)
    out = {**check.to_dict(), "ok": bool(check.equal)}
    searched = mapping.metadata.get("proof")
    if searched:
        out["proof"] = searched  # the prove stage searched this mapping already
    if not check.equal and searched:
        try:
            diagnosis = check_outputs(source, fresh_target, mapping, dummy)
        except Exception as e:  # the diagnosis is a bonus; the verdict above stands
            out["notes"] = [*out.get("notes", []), f"no diagnosis: {type(e).__name__}: {e}"]
        else:
            for k in ("first_diverging", "first_diverging_target", "first_diverging_source"):
                out[k] = diagnosis.to_dict()[k]
            out["compared_modules"] = diagnosis.compared_modules
    elif not check.equal:
        # The search says where the conversion goes wrong and, when a layout fixes it, keeps
        # the proven mapping in this (cached) artifact for the next conversion.
        try:
            diagnosis = check_outputs(source, fresh_target, mapping, dummy)
            proof = prove(source, fresh_target, mapping, dummy)
        except Exception as e:  # the diagnosis is a bonus; the verdict above stands
            out["notes"] = [*out.get("notes", []), f"no diagnosis: {type(e).__name__}: {e}"]
        else:
            for k in ("first_diverging", "first_diverging_target", "first_diverging_source"):
                out[k] = diagnosis.to_dict()[k]
            out["compared_modules"] = diagnosis.compared_modules
            out["proof"] = proof.to_dict()
            if proof.equal:
                out["proven_mapping"] = proof.mapping.to_dict()
    status = status_of({"ok": True}, check.to_dict())
    proof_dict = out.get("proof")
    if check.equal:
        if proof_dict and proof_dict.get("fixes"):
            status = MappingStatus(
                "proven_equal",
                f"{status.detail}; the search fixed {len(proof_dict['fixes'])} pair(s) of the "
                "first mapping: " + "; ".join(proof_dict["fixes"][:4]),
            )
    elif proof_dict and proof_dict["state"] == "differs":
        status = MappingStatus.from_dict(proof_dict["status"]) or status
    elif proof_dict and "proven_mapping" in out:
        status = MappingStatus(
            "differs",
            "the converted file's outputs differ; a search made the mapping proven equal "
            f"({len(proof_dict['fixes'])} fix(es)), kept as proven_mapping in this artifact",
        )
    elif proof_dict:
        status = MappingStatus(
            "differs",
            "the converted file's outputs differ from what the search proved with the same "
            "mapping in memory; check that the source checkpoint and the input are the ones "
            "the search ran on",
        )
    out["status"] = status.to_dict()
    return out
