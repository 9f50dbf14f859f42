"""The versioned JSON report of a mapping: build it, write it, load it back, render Markdown.

A report is the record of one mapping run. Its ``mapping`` section is exactly
``MappingResult.to_dict()``, so ``MappingResult.from_dict(report)`` reads a report as a
mapping. Around it the report keeps the inputs (path as given, sha256, architecture
signature, tensor count), the settings, both module hierarchies, and the validation and
functional-check results when present. Reports hold no timestamps and no paths the user
did not give, so the same inputs give a byte-identical file.

The schema lives in ``report_schema.json`` next to this module and is documented in
``docs/report-schema.md``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from weightmapper._version import __version__
from weightmapper.atomic import atomic_write_text
from weightmapper.bounded_json import loads_bounded
from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import (
    CheckpointFormatError,
    CheckpointNotFoundError,
    MappingError,
    WeightMapperError,
)
from weightmapper.hashing import files_sha256
from weightmapper.inventory import natural_key, tensors_signature
from weightmapper.progress import stage
from weightmapper.result import (
    MappingResult,
    MappingStatus,
    check_verdict,
    diff_text,
    status_of,
)
from weightmapper.review import (
    REASON_TEXT,
    band_counts,
    flagged,
    multi_layout,
    multi_parts,
    ordered,
    pair_band,
    pair_groups,
    pair_notes,
    score_band,
    unmatched_by_reason,
)
from weightmapper.sanitize import md_code, md_text

logger = logging.getLogger(__name__)

REPORT_SCHEMA_VERSION = "1.1"
"""Version of the report layout; the major number changes when a reader must change."""

REPORT_KIND = "weightmapper-report"

__all__ = [
    "REPORT_KIND",
    "REPORT_SCHEMA_VERSION",
    "build_report",
    "check_headline",
    "dumps_report",
    "load_report",
    "module_links",
    "render_markdown",
    "report_from_dict",
    "result_from_report",
    "score_band",
    "transform_badge",
    "validate_report",
    "write_markdown",
    "write_report",
]


# --- building --------------------------------------------------------------------------------


def build_report(
    mapper_or_result: Any,
    *,
    source_path: str | Path | None = None,
    target_path: str | Path | None = None,
    validation: Any = None,
    functional_check: Any = None,
    hash_inputs: bool = True,
    result: MappingResult | None = None,
    proof: Any = None,
) -> dict[str, Any]:
    """WeightMapper or MappingResult (+ optional paths and checks) → the report as a dict.

    The dict is canonical: it has been through JSON once, so it equals what
    :func:`load_report` reads back from the written file. ``validation`` and
    ``functional_check`` take a result object with ``to_dict()`` or a plain dict; the
    functional check defaults to ``result.metadata["functional_check"]``. ``hash_inputs=False``
    skips hashing the checkpoint files (views that only display a mapping); ``result``
    replaces the mapper's own result (a mapping made with other settings). ``proof`` (a
    :class:`~weightmapper.proof.Proof`) records a search: its mapping, check and status win.
    ``status`` (top level and in ``mapping``) says what is known: proven equal, loads but
    not proven, differs at a module, or does not load.
    """
    if proof is not None:
        result = proof.mapping
        functional_check = proof.check
    if result is None:
        result = _result_of(mapper_or_result)
    src_inv = getattr(mapper_or_result, "source_inventory", None)
    tgt_inv = getattr(mapper_or_result, "target_inventory", None)
    if source_path is None:
        source_path = getattr(mapper_or_result, "source_path", None)
    if target_path is None:
        target_path = getattr(mapper_or_result, "target_path", None)
    if functional_check is None:
        functional_check = result.metadata.get("functional_check")
    if validation is None:
        validation = result.metadata.get("validation")

    status = mapping_status(result, validation, functional_check).to_dict()
    mapping_section = _mapping_dict(result)
    mapping_section["status"] = status
    report: dict[str, Any] = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "status": status,
        "proof": _as_dict(proof),
        "kind": REPORT_KIND,
        "tool_version": __version__,
        "inputs": {
            "source": _input_section(
                result.source_name, src_inv, source_path, result.source_count, hash_inputs
            ),
            "target": _input_section(
                result.target_name, tgt_inv, target_path, result.target_count, hash_inputs
            ),
        },
        "settings": _jsonable(result.settings),
        "mapping": mapping_section,
        "hierarchy": {
            "source": _hierarchy(src_inv, result, "source"),
            "target": _hierarchy(tgt_inv, result, "target"),
        },
        "validation": _as_dict(validation),
        "functional_check": _as_dict(functional_check),
    }
    # One trip through JSON makes tuples lists and floats canonical, so the in-memory
    # report equals the file read back (renderers then give identical output either way).
    return json.loads(json.dumps(report, sort_keys=True, ensure_ascii=False))


def mapping_status(
    result: MappingResult, validation: Any = None, functional_check: Any = None
) -> MappingStatus:
    """Mapping + its load and output checks (objects, dicts or None) → its one status.

    An output comparison decides (a search's own status is kept, it says more); without
    one, a status the mapping already carries stands, else the load check's.
    """
    own = result.status
    if functional_check is not None:
        derived = status_of(validation, functional_check)
        if own is not None and own.state == derived.state:
            return own
        return derived
    if own is not None and own.state != "loads_not_proven":
        return own
    unmapped = result.get_unmatched()["target"]
    if own is not None and validation is None and not unmapped:
        return own  # its detail may know more, e.g. that the target is only a checkpoint
    return status_of(validation, None, unmapped)


def dumps_report(report: Mapping[str, Any]) -> str:
    """Report dict (as built by :func:`build_report`) → canonical JSON text.

    Sorted keys, indent 2, trailing newline; the text never depends on dict order.
    """
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _mapping_dict(result: MappingResult) -> dict[str, Any]:
    mapping = result.to_dict()
    # Pairs are JSON-ready already; settings and metadata may hold tuples or numpy scalars.
    mapping["settings"] = _jsonable(mapping["settings"])
    mapping["metadata"] = _jsonable(mapping["metadata"])
    return mapping


def write_report(mapper_or_result: Any, path: str | Path, **kw: Any) -> Path:
    """WeightMapper or MappingResult (or a built report dict) → JSON report at path, atomically.

    Keyword arguments go to :func:`build_report`. Returns the path written.
    """
    if isinstance(mapper_or_result, Mapping) and mapper_or_result.get("kind") == REPORT_KIND:
        report = _jsonable(mapper_or_result)
    else:
        report = build_report(mapper_or_result, **kw)
    out = atomic_write_text(path, dumps_report(report))
    logger.info("wrote mapping report %s", out)
    return out


def write_markdown(report: Mapping[str, Any], path: str | Path) -> Path:
    """Report dict → its Markdown rendering (:func:`render_markdown`) at path, atomically."""
    return atomic_write_text(path, render_markdown(report))


def _result_of(obj: Any) -> MappingResult:
    if isinstance(obj, MappingResult):
        return obj
    result = getattr(obj, "result", None)
    if result is None and callable(getattr(obj, "suggest_mapping", None)):
        # A mapper that has not been asked yet: use its defaults rather than fail.
        result = obj.suggest_mapping()
    if not isinstance(result, MappingResult):
        raise MappingError(
            f"cannot build a report from {type(obj).__name__}: expected a WeightMapper (after "
            "suggest_mapping) or a MappingResult."
        )
    return result


def _input_section(
    name: str, inventory: Any, path: str | Path | None, count: int, hash_inputs: bool
) -> dict[str, Any]:
    signature = None
    if inventory is not None and callable(getattr(inventory, "signature", None)):
        signature = str(inventory.signature())
    elif inventory is not None and getattr(inventory, "tensors", None):
        signature = tensors_signature(inventory.tensors)
    tensors = getattr(inventory, "tensors", None)
    return {
        "name": str(getattr(inventory, "name", None) or name),
        "path": None if path is None else str(path),
        "sha256": _hashed(path) if path is not None and hash_inputs else None,
        "signature": signature,
        "tensor_count": len(tensors) if tensors is not None else int(count),
    }


def _hashed(path: str | Path) -> str | None:
    with stage(f"hash {Path(path).name}"):
        return input_sha256(path)


def input_sha256(path: str | Path) -> str | None:
    """Checkpoint file or directory of shards → its sha256; None when it is absent.

    The checkpoint's own hash (:func:`weightmapper.hashing.files_sha256`), so reports,
    converted outputs and the pipeline agree; a file or directory that is not a readable
    checkpoint is hashed by the same definition over its regular files.
    """
    p = Path(path)
    try:
        return open_checkpoint(p).content_hash()
    except WeightMapperError:
        pass  # not a checkpoint we can read (or refused): hash the bytes as they are
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
    return files_sha256(files) if files else None


def _hierarchy(inventory: Any, result: MappingResult, side: str) -> list[dict[str, Any]]:
    """Inventory (or, without one, the keys the mapping names) → module groups in order."""
    groups = getattr(inventory, "groups", None)
    if groups:
        out = []
        for path, group in groups.items():
            buffers = set(getattr(group, "buffers", ()) or ())
            tensors = []
            for local, info in group.tensors.items():
                is_buffer = info.is_buffer if info.is_buffer is not None else local in buffers
                tensors.append(
                    {
                        "name": local,
                        "shape": [int(d) for d in info.shape],
                        "dtype": info.dtype,
                        "buffer": bool(is_buffer),
                    }
                )
            out.append(
                {
                    "path": str(path),
                    "module_type": getattr(group, "module_type", None),
                    "tensors": tensors,
                }
            )
        return out
    return _hierarchy_from_keys(_keys_with_shapes(result, side))


def _keys_with_shapes(result: MappingResult, side: str) -> dict[str, list[int]]:
    keys: dict[str, list[int]] = {}
    for p in result.pairs:
        if side == "source":
            keys[p.source] = list(p.source_shape)
        else:
            keys[p.target] = list(p.target_shape)
    for m in result.multi:
        for k in m.sources if side == "source" else m.targets:
            keys.setdefault(k, [])
    for u in result.unmatched_source if side == "source" else result.unmatched_target:
        keys[u.name] = list(u.shape)
    return keys


def _hierarchy_from_keys(keys: dict[str, list[int]]) -> list[dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for key in sorted(keys, key=natural_key):
        path, _, local = key.rpartition(".")
        groups.setdefault(path, []).append(
            {"name": local, "shape": keys[key], "dtype": None, "buffer": None}
        )
    return [{"path": p, "module_type": None, "tensors": t} for p, t in groups.items()]


def _as_dict(obj: Any) -> dict[str, Any] | None:
    if obj is None:
        return None
    if callable(getattr(obj, "to_dict", None)):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return _jsonable(dict(obj))
    raise MappingError(
        f"cannot store a {type(obj).__name__} in a report: expected a dict or an object "
        "with to_dict() (ValidationResult, FunctionalCheck)."
    )


def _jsonable(obj: Any) -> Any:
    """Nested data → plain JSON types (tuples to lists, numpy/torch scalars to numbers)."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        seq = sorted(obj, key=str) if isinstance(obj, set | frozenset) else obj
        return [_jsonable(v) for v in seq]
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        # JSON has no NaN/inf; keep them readable rather than emit invalid JSON.
        return obj if math.isfinite(obj) else str(obj)
    if callable(getattr(obj, "to_dict", None)):
        return _jsonable(obj.to_dict())
    if callable(getattr(obj, "item", None)):
        return _jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "value") and isinstance(obj.value, str | int):  # enums
        return obj.value
    return str(obj)


# --- loading ---------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def report_schema() -> dict[str, Any]:
    """() → the report's JSON Schema (shipped as package data)."""
    text = resources.files("weightmapper").joinpath("report_schema.json").read_text("utf-8")
    return json.loads(text)


def load_report(path: str | Path) -> dict[str, Any]:
    """Report (or bare mapping) JSON file → validated report dict.

    A bare mapping file (``MappingResult.to_json()``) is wrapped into a report without
    inventories. Raises CheckpointNotFoundError for a missing file, CheckpointFormatError
    for a file that is not a report, MappingError for a report from a newer major version.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointNotFoundError(
            f"report {p} does not exist; write one with `weightmapper map SOURCE --target "
            "SPEC --report report.json`."
        )
    try:
        data = loads_bounded(p.read_bytes())
    except (OSError, ValueError) as e:
        raise CheckpointFormatError(
            f"{p} is not JSON ({e}); expected a weightmapper report or mapping file."
        ) from e
    return report_from_dict(data, origin=str(p))


def report_from_dict(data: Any, *, origin: str = "report") -> dict[str, Any]:
    """Parsed JSON (a report or a bare mapping) → validated report dict."""
    if not isinstance(data, dict):
        raise CheckpointFormatError(
            f"{origin} holds a JSON {type(data).__name__}, expected an object "
            "(a weightmapper report or mapping file)."
        )
    if data.get("kind") != REPORT_KIND and "pairs" in data and "mapping" not in data:
        # A mapping file: give it the report's frame so every renderer can read it.
        try:
            result = MappingResult.from_dict(data)
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointFormatError(
                f"{origin} looks like a mapping file but an entry is malformed ({e!r}); "
                "regenerate it with `weightmapper map`."
            ) from e
        data = build_report(result)
    _check_version(data, origin)
    validate_report(data, origin=origin)
    return data


def _check_version(data: dict[str, Any], origin: str) -> None:
    version = data.get("schema_version")
    if not isinstance(version, str) or not re.fullmatch(r"\d+\.\d+", version):
        raise CheckpointFormatError(
            f"{origin} has no valid schema_version (found {version!r}, expected e.g. "
            f"{REPORT_SCHEMA_VERSION!r}); is it a weightmapper report?"
        )
    major = int(version.split(".")[0])
    if major > int(REPORT_SCHEMA_VERSION.split(".")[0]):
        raise MappingError(
            f"{origin} uses report schema {version}, newer than this weightmapper "
            f"({__version__}, schema {REPORT_SCHEMA_VERSION}); upgrade weightmapper to read it."
        )


def validate_report(data: dict[str, Any], *, origin: str = "report") -> None:
    """Report dict → None, or CheckpointFormatError naming the first problems found.

    Uses jsonschema when installed; otherwise a structural check of the required parts.
    """
    try:
        import jsonschema
    except ImportError:  # a runtime install without the dev extras
        problems = _structural_problems(data)
    else:
        validator = jsonschema.Draft202012Validator(report_schema())
        problems = [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
            for e in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
        ]
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointFormatError(
            f"{origin} is not a valid weightmapper report: {shown}{more}. Regenerate it with "
            "`weightmapper map ... --report`."
        )


def _structural_problems(data: dict[str, Any]) -> list[str]:
    problems = []
    for key, kind in (
        ("schema_version", str),
        ("kind", str),
        ("inputs", dict),
        ("settings", dict),
        ("mapping", dict),
        ("hierarchy", dict),
    ):
        if not isinstance(data.get(key), kind):
            problems.append(f"{key}: missing or not a {kind.__name__}")
    mapping = data.get("mapping")
    if isinstance(mapping, dict):
        for key, kind in (("pairs", list), ("multi", list), ("unmatched", dict)):
            if not isinstance(mapping.get(key), kind):
                problems.append(f"mapping/{key}: missing or not a {kind.__name__}")
    return problems


def result_from_report(report: Mapping[str, Any]) -> MappingResult:
    """Report dict → the MappingResult it records."""
    return MappingResult.from_dict(dict(report))


def module_links(report: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Report → per side, module path → {"partners": sorted partner paths, "matched", "total"}."""
    mapping = report["mapping"]
    out: dict[str, dict[str, dict[str, Any]]] = {"source": {}, "target": {}}

    def note(side: str, key: str, partner: str | None) -> None:
        path = key.rpartition(".")[0]
        entry = out[side].setdefault(path, {"partners": set(), "matched": 0, "total": 0})
        entry["total"] += 1
        if partner is not None:
            entry["matched"] += 1
            entry["partners"].add(partner.rpartition(".")[0])

    for p in mapping["pairs"]:
        note("source", p["source"], p["target"])
        note("target", p["target"], p["source"])
    for m in mapping.get("multi", []):
        for s in m["sources"]:
            note("source", s, m["targets"][0])
        for t in m["targets"]:
            note("target", t, m["sources"][0])
    for side in ("source", "target"):
        for u in mapping["unmatched"][side]:
            note(side, u["name"], None)
    for side in out.values():
        for entry in side.values():
            entry["partners"] = sorted(entry["partners"], key=natural_key)
    return out


# --- Markdown --------------------------------------------------------------------------------

TRANSFORM_BADGES: dict[str, str] = {
    "identity": "✓ exact",
    "transpose": "🔄 transpose",
    "reshape": "📐 reshape",
    "split": "split",
    "merge": "merge",
    "stack": "merge",
}


def transform_badge(transform: Mapping[str, Any] | None) -> str:
    """Transform dict (``{"name", "params"}``) → its short badge text (``🔄 transpose``)."""
    name = (transform or {}).get("name", "identity")
    return TRANSFORM_BADGES.get(name, name)


def _shape(shape: Iterable[int] | None) -> str:
    dims = list(shape or [])
    return "×".join(str(d) for d in dims) if dims else "scalar"


def render_markdown(report: Mapping[str, Any], *, max_rows: int | None = None) -> str:
    """Report dict → Markdown text: summary with status, groups, pairs, splits, unmatched, checks.

    The summary gives the mapping's status and the pairs to review per colour band; pairs
    are listed by layer template (one row per rename rule), then one by one riskiest
    first; splits and merges with their parts in order; unmatched keys grouped by reason.
    ``max_rows`` caps the pair table (None: every pair). Output depends only on the report.
    """
    mapping = report["mapping"]
    cov = mapping.get("coverage", {})
    src, tgt = report["inputs"]["source"], report["inputs"]["target"]
    lines = [
        f"# Weight mapping: {md_text(src['name'])} → {md_text(tgt['name'])}",
        "",
        f"weightmapper {report.get('tool_version', '?')}, report schema "
        f"{report.get('schema_version', '?')}",
        "",
        f"**Status: {md_text(status_label(report))}**"
        + (
            f" — {md_text(report_status(report).get('detail'))}"
            if report_status(report).get("detail")
            else ""
        ),
        "",
        "## Summary",
        "",
        "| | source | target |",
        "|---|---:|---:|",
        f"| tensors | {cov.get('source_total', 0)} | {cov.get('target_total', 0)} |",
        f"| mapped | {cov.get('source_mapped', 0)} | {cov.get('target_mapped', 0)} |",
        f"| unmatched | {cov.get('source_unmatched', 0)} | {cov.get('target_unmatched', 0)} |",
        f"| coverage | {cov.get('source_coverage', 0):.1%} | {cov.get('target_coverage', 0):.1%} |",
        f"| confident coverage | {cov.get('source_confident_coverage', 0):.1%} | "
        f"{cov.get('target_confident_coverage', 0):.1%} |",
        "",
        f"{cov.get('mapped_pairs', 0)} one-to-one pairs, {cov.get('multi_pairs', 0)} splits/merges.",
        "",
        _md_bands(report),
        "",
        "## Inputs",
        "",
        "| side | name | path | sha256 | signature | tensors |",
        "|---|---|---|---|---|---:|",
    ]
    for side, inp in (("source", src), ("target", tgt)):
        lines.append(
            f"| {side} | {md_text(inp['name'])} | {md_text(inp.get('path') or '—')} | "
            f"{_short(inp.get('sha256'))} | {_short(inp.get('signature'))} | "
            f"{inp.get('tensor_count', 0)} |"
        )
    settings = report.get("settings") or {}
    if settings:
        lines += ["", "## Settings", ""]
        lines += [
            f"- {md_code(k)}: {md_code(json.dumps(settings[k], sort_keys=True))}"
            for k in sorted(settings)
        ]
    groups = pair_groups(report)
    if groups:
        lines += [
            "",
            f"## By layer template ({len(groups)} groups)",
            "",
            "Riskiest first. `{n}` is a layer index, `*` the rest of the key.",
            "",
            "| source template | target template | pairs | lowest score | to review |",
            "|---|---|---:|---:|---:|",
        ]
        for g in groups:
            review = sum(1 for e in g.entries if pair_band(e) != "high")
            lines.append(
                f"| {md_code(g.source) if g.target else md_text(g.source)} | "
                f"{md_code(g.target) if g.target else '—'} | "
                f"{len(g.entries)} | {float(g.worst['score']):.3f} ({pair_band(g.worst)}) | "
                f"{review} |"
            )
    pairs = ordered(mapping.get("pairs", []))
    shown = pairs if max_rows is None else pairs[:max_rows]
    lines += [
        "",
        "## Mapping",
        "",
        "Riskiest first: red, then yellow (flagged `?` first), lowest score first. `?` marks "
        "a pair flagged low confidence or ambiguous; *Pairs to check* below says why.",
        "",
        "| source | target | score | transform | match | shapes |",
        "|---|---|---:|---|---|---|",
    ]
    for p in shown:
        flag = " ?" if flagged(p) else ""
        lines.append(
            f"| {md_code(p['source'])} | {md_code(p['target'])} | "
            f"{p['score']:.3f} ({pair_band(p)}){flag} | "
            f"{md_text(transform_badge(p.get('transform')))} | "
            f"{'GROUP' if p.get('group', True) else 'INDIV'} | "
            f"{_shape(p.get('source_shape'))} → {_shape(p.get('target_shape'))} |"
        )
    if len(shown) < len(pairs):
        lines.append(f"| … {len(pairs) - len(shown)} more pairs | | | | | |")
    noted = [(e, pair_notes(e)) for e in ordered([*pairs, *mapping.get("multi", [])])]
    noted = [(e, n) for e, n in noted if n]
    if noted:
        lines += [
            "",
            f"## Pairs to check ({len(noted)})",
            "",
            "Flags and what a pair rests on beyond its score (e.g. a layout assumed from names).",
            "",
            "| source | target | why |",
            "|---|---|---|",
        ]
        for e, notes in noted:
            lines.append(
                f"| {md_code(', '.join(e.get('sources') or [e.get('source', '')]))} | "
                f"{md_code(', '.join(e.get('targets') or [e.get('target', '')]))} | "
                f"{'<br>'.join(md_text(n) for n in notes)} |"
            )
    multi = ordered(mapping.get("multi", []))
    if multi:
        lines += [
            "",
            "## Splits and merges",
            "",
            "Parts in fused order, each with its slice of the fused tensor.",
            "",
            "| kind | fused | parts (in order) | layout | score |",
            "|---|---|---|---|---:|",
        ]
        for m in multi:
            fused = m["sources"] if m["kind"] == "split" else m["targets"]
            parts = "<br>".join(
                f"{i}. {md_code(k)}" + (f" {md_text(where)}" if where else "")
                for i, (k, where) in enumerate(multi_parts(m), 1)
            )
            lines.append(
                f"| {md_text(m['kind'])} | {md_code(', '.join(fused))} | {parts} | "
                f"{md_text(multi_layout(m))} | {m['score']:.3f} ({pair_band(m)}) |"
            )
    for side in ("source", "target"):
        unmatched = mapping.get("unmatched", {}).get(side, [])
        lines += ["", f"## Unmatched {side} keys ({len(unmatched)})", ""]
        if not unmatched:
            lines.append("None.")
            continue
        for reason, keys in unmatched_by_reason(unmatched):
            lines += [
                f"### {md_code(reason)} ({len(keys)})",
                "",
                md_text(REASON_TEXT[reason]) if reason in REASON_TEXT else md_code(reason),
                "",
                "| key | shape | detail |",
                "|---|---|---|",
            ]
            for u in keys:
                lines.append(
                    f"| {md_code(u['name'])} | {_shape(u.get('shape'))} | "
                    f"{md_text(u.get('detail') or '')} |"
                )
            lines.append("")
        lines.pop()
    proof = report.get("proof")
    if proof:
        lines += ["", "## Proof", ""]
        lines.append(
            f"{proof.get('alternatives_tried', 0)} alternative(s) tried in "
            f"{proof.get('forward_passes', 0)} forward pass(es) (budget "
            f"{proof.get('budget', 0)}); input: {md_text(proof.get('source_input', ''))}"
        )
        lines += [f"- fixed: {md_text(f)}" for f in proof.get("fixes") or []]
        if proof.get("module") is not None:
            lines += [
                f"- pair feeding `{proof['module']}`: {md_text(p)}" for p in proof["pairs_at"]
            ]
            lines += [f"- tried there: {md_text(t)}" for t in proof.get("tried_at") or []]
    for title, key in (("Validation", "validation"), ("Functional check", "functional_check")):
        section = report.get(key)
        if section:
            ok, headline = check_headline(key, section)
            lines += [
                "",
                f"## {title}",
                "",
                f"{'✓' if ok else '✗'} {md_text(headline)}",
                "",
                "```json",
            ]
            lines += json.dumps(section, indent=2, sort_keys=True).splitlines()
            lines.append("```")
    return "\n".join(lines) + "\n"


def report_status(report: Mapping[str, Any]) -> dict[str, Any]:
    """Report dict (any 1.x) → its status dict; reports before 1.1 get one from their checks."""
    status = report.get("status")
    if isinstance(status, Mapping) and status.get("state"):
        return dict(status)
    return status_of(report.get("validation"), report.get("functional_check")).to_dict()


def status_label(report: Mapping[str, Any]) -> str:
    """Report dict → ``proven equal``, ``loads, not proven``, ``differs at X`` …"""
    status = report_status(report)
    return str(status.get("label") or status.get("state"))


def _md_bands(report: Mapping[str, Any]) -> str:
    counts = band_counts(report)
    entries = [*report["mapping"].get("pairs", []), *report["mapping"].get("multi", [])]
    n_flagged = sum(1 for e in entries if flagged(e))
    text = (
        f"Scores: {counts['high']} green (> 0.8), {counts['medium']} yellow (0.6–0.8), "
        f"{counts['low']} red (< 0.6): **{counts['medium'] + counts['low']} to review**"
    )
    if n_flagged:
        text += f", {n_flagged} of them flagged low confidence or ambiguous"
    return text + "."


def check_headline(key: str, section: Mapping[str, Any]) -> tuple[bool, str]:
    """Check name + its dict → (passed, one sentence) for the validation or functional check."""
    if key == "functional_check":
        ok = bool(section.get("equal"))
        text = f"outputs {check_verdict(section)}: {diff_text(section)}"
        if section.get("first_diverging"):
            text += f"; first diverging module {section['first_diverging']}"
        return ok, text
    ok = bool(section.get("ok"))
    if ok:
        return True, "loads strictly: every target tensor present with the right shape"
    counts = ", ".join(
        f"{len(section.get(k) or [])} {k.replace('_', ' ')}"
        for k in ("missing", "unexpected", "shape_mismatches")
    )
    return False, f"does not load strictly: {counts}"


def _short(digest: str | None) -> str:
    return md_code(str(digest)[:12]) if digest else "—"
