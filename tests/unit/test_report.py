"""The JSON report: built from a mapping run, valid against its schema, stable, loadable."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest

from weightmapper.engine import map_inventories
from weightmapper.errors import CheckpointFormatError, CheckpointNotFoundError, MappingError
from weightmapper.examples.cnn import OldCNN, RefactoredCNN
from weightmapper.inventory import Inventory
from weightmapper.report import (
    REPORT_SCHEMA_VERSION,
    build_report,
    dumps_report,
    load_report,
    render_markdown,
    report_schema,
    validate_report,
    write_report,
)
from weightmapper.result import MappingResult


def _run() -> SimpleNamespace:
    """A real mapping run: a CNN refactor whose classifier was resized (10 → 5 classes)."""
    src = Inventory.from_module(OldCNN(num_classes=10, width=8))
    tgt = Inventory.from_module(RefactoredCNN(num_classes=5, width=8))
    result = map_inventories(src, tgt)
    return SimpleNamespace(result=result, source_inventory=src, target_inventory=tgt)


def test_report_validates_against_schema_and_holds_the_mapping() -> None:
    run = _run()
    report = build_report(run)
    jsonschema.Draft202012Validator(report_schema()).validate(report)
    assert report["schema_version"] == REPORT_SCHEMA_VERSION
    assert report["mapping"] == json.loads(run.result.to_json())
    assert dict(MappingResult.from_dict(report)) == dict(run.result)
    src = report["inputs"]["source"]
    assert src["signature"] == run.source_inventory.signature()
    assert src["tensor_count"] == len(run.source_inventory.tensors)
    assert src["path"] is None and src["sha256"] is None
    reasons = {u["name"]: u["reason"] for u in report["mapping"]["unmatched"]["source"]}
    # The resized classifier (10 → 5 classes) can have no partner, and the report says why.
    assert reasons["classifier.weight"] == reasons["classifier.bias"] == "no_shape_partner"
    assert report["validation"] is None and report["functional_check"] is None


def test_hierarchy_lists_groups_in_order_with_types_and_buffers() -> None:
    run = _run()
    report = build_report(run)
    groups = report["hierarchy"]["source"]
    assert [g["path"] for g in groups] == list(run.source_inventory.groups)
    by_path = {g["path"]: g for g in groups}
    bn = next(g for g in groups if g["module_type"] == "BatchNorm2d")
    names = {t["name"]: t["buffer"] for t in bn["tensors"]}
    assert names["weight"] is False and names["running_mean"] is True
    conv = next(g for g in by_path.values() if g["module_type"] == "Conv2d")
    assert conv["tensors"][0]["shape"] == list(
        run.source_inventory.tensors[f"{conv['path']}.weight"].shape
    )


def test_report_without_inventories_derives_the_trees_from_keys() -> None:
    run = _run()
    report = build_report(run.result)
    validate_report(report)
    paths = [g["path"] for g in report["hierarchy"]["target"]]
    assert "head" in paths and all(g["module_type"] is None for g in report["hierarchy"]["target"])
    assert report["inputs"]["source"]["signature"] is None


def test_written_report_is_byte_identical_across_runs_and_has_no_machine_paths(
    tmp_path: Path,
) -> None:
    a = write_report(_run(), tmp_path / "a.json")
    b = write_report(_run(), tmp_path / "b.json")
    assert a.read_bytes() == b.read_bytes()
    text = a.read_text()
    assert str(tmp_path) not in text and str(Path.home()) not in text
    assert json.loads(text) == load_report(a)
    assert text == dumps_report(json.loads(text))


def test_given_paths_are_kept_as_given_and_hashed(tmp_path: Path, monkeypatch) -> None:
    ckpt = tmp_path / "model.bin"
    ckpt.write_bytes(b"weights" * 100)
    monkeypatch.chdir(tmp_path)
    report = build_report(_run(), source_path="model.bin")
    assert report["inputs"]["source"]["path"] == "model.bin"
    assert report["inputs"]["source"]["sha256"] == hashlib.sha256(b"weights" * 100).hexdigest()
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "a.safetensors").write_bytes(b"1")
    before = build_report(_run(), target_path="shards")["inputs"]["target"]["sha256"]
    (shards / "a.safetensors").write_bytes(b"2")
    after = build_report(_run(), target_path="shards")["inputs"]["target"]["sha256"]
    assert before and after and before != after


def test_checks_come_from_arguments_or_result_metadata() -> None:
    run = _run()

    class Check:
        def to_dict(self) -> dict:
            return {"passed": True, "max_abs_diff": 0.0}

    report = build_report(run, validation={"ok": True, "missing": []}, functional_check=Check())
    assert report["validation"] == {"ok": True, "missing": []}
    assert report["functional_check"] == {"passed": True, "max_abs_diff": 0.0}
    run.result.metadata["functional_check"] = {"passed": False, "first_diverging_module": "head"}
    assert build_report(run)["functional_check"]["first_diverging_module"] == "head"
    with pytest.raises(MappingError, match="to_dict"):
        build_report(run, validation=42)


def test_load_report_wraps_a_bare_mapping_file(tmp_path: Path) -> None:
    path = tmp_path / "mapping.json"
    result = _run().result
    path.write_text(result.to_json())
    report = load_report(path)
    assert report["kind"] == "weightmapper-report"
    assert len(report["mapping"]["pairs"]) == len(result)


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        ("{not json", CheckpointFormatError, "is not JSON"),
        ("[1, 2]", CheckpointFormatError, "expected an object"),
        ('{"schema_version": "x"}', CheckpointFormatError, "schema_version"),
        ('{"schema_version": "9.0", "kind": "weightmapper-report"}', MappingError, "upgrade"),
    ],
)
def test_load_report_rejects_bad_files_with_clear_messages(
    tmp_path: Path, content: str, error: type[Exception], message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(error, match=message):
        load_report(path)


def test_load_report_names_schema_violations(tmp_path: Path) -> None:
    report = build_report(_run())
    report["mapping"]["pairs"][0]["score"] = "high"
    del report["inputs"]["target"]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(report))
    with pytest.raises(CheckpointFormatError) as info:
        load_report(path)
    assert "inputs" in str(info.value) and "score" in str(info.value)
    with pytest.raises(CheckpointNotFoundError, match="weightmapper map"):
        load_report(tmp_path / "missing.json")


def test_structural_check_is_used_without_jsonschema(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    report = build_report(_run())
    validate_report(report)
    del report["mapping"]["pairs"]
    with pytest.raises(CheckpointFormatError, match="mapping/pairs"):
        validate_report(report)


def test_markdown_lists_every_pair_and_unmatched_reason() -> None:
    run = _run()
    report = build_report(run)
    text = render_markdown(report)
    pairs = text.split("## Mapping")[1].split("\n## ")[0]
    rows = [line for line in pairs.splitlines() if line.startswith("| `")]
    assert len(rows) == len(run.result)
    unmatched = text.split("## Unmatched source keys")[1]
    rows = [line for line in unmatched.splitlines() if line.startswith("| `")]
    assert len(rows) == len(run.result.unmatched_source) + len(run.result.unmatched_target)
    cov = run.result.coverage()
    assert "no_shape_partner" in text and f"{cov['source_coverage']:.1%}" in text
    assert "✓ exact" in text and "GROUP" in text
    capped = render_markdown(report, max_rows=5)
    assert f"… {len(run.result) - 5} more pairs" in capped
    assert render_markdown(report) == render_markdown(json.loads(dumps_report(report)))


def test_weightmapper_export_mapping_report_writes_this_schema(tmp_path: Path) -> None:
    from weightmapper.mapper import WeightMapper

    mapper = WeightMapper(OldCNN(num_classes=10, width=8), RefactoredCNN(num_classes=5, width=8))
    mapper.suggest_mapping()
    path = mapper.export_mapping_report(tmp_path / "report.json")
    report = load_report(path)
    assert report["inputs"]["target"]["name"] == "RefactoredCNN"
    assert report["mapping"] == json.loads(mapper.result.to_json())
    assert report["hierarchy"]["source"][0]["module_type"] is not None


def test_checks_are_rendered_with_a_headline() -> None:
    check = {"equal": False, "max_abs_diff": 0.5, "max_rel_diff": 0.1, "first_diverging": "head"}
    report = build_report(_run(), validation={"ok": True}, functional_check=check)
    text = render_markdown(report)
    assert "✓ loads strictly" in text
    assert (
        "✗ outputs DIFFER: max abs diff 0.5, max rel diff 0.1; first diverging module head" in text
    )
    failed = build_report(_run(), validation={"ok": False, "missing": ["a", "b"], "unexpected": []})
    assert "does not load strictly: 2 missing, 0 unexpected, 0 shape mismatches" in render_markdown(
        failed
    )
