"""`map`, `report` and `rules` end to end through the CLI entry point, files in tmp_path."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.cli.map import parse_shape
from weightmapper.examples.cnn import OldCNN
from weightmapper.html_report import render_html
from weightmapper.report import load_report, render_markdown, validate_report
from weightmapper.result import MappingResult

TARGET = "weightmapper.examples.cnn:RefactoredCNN"
KWARGS = '{"num_classes": 5, "width": 8}'


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    path = tmp_path / "old.safetensors"
    state = {k: v.contiguous() for k, v in OldCNN(num_classes=10, width=8).state_dict().items()}
    save_file(state, str(path))
    return path


def _map(ckpt: Path, out: Path, *extra: str) -> int:
    return main(["map", str(ckpt), "--target", TARGET, "--target-kwargs", KWARGS, *extra])


def test_map_prints_summary_table_and_unmatched_reasons(ckpt: Path, tmp_path: Path, capsys) -> None:
    assert _map(ckpt, tmp_path, "--report", str(tmp_path / "r.json"), "--max-rows", "100") == 0
    out = capsys.readouterr().out
    report = load_report(tmp_path / "r.json")
    cov = report["mapping"]["coverage"]
    assert "weightmapper: mapping summary" in out
    assert f"source {cov['source_coverage']:.1%}" in out
    assert f"{cov['mapped_pairs']} one-to-one" in out
    for pair in report["mapping"]["pairs"]:
        row = next(line for line in out.splitlines() if f" {pair['source']} " in line)
        assert pair["target"] in row and f"{pair['score']:.3f}" in row and "GROUP" in row
    unmatched = report["mapping"]["unmatched"]["source"]
    assert f"Unmatched source keys ({len(unmatched)})" in out
    for u in unmatched:  # the resized classifier has no partner, and says so
        assert u["reason"] in next(line for line in out.splitlines() if f" {u['name']} " in line)
    assert "classifier.weight" in {u["name"] for u in unmatched}
    assert "\x1b[" not in out  # plain text in a pipe


def test_map_writes_mapping_report_html_and_markdown(ckpt: Path, tmp_path: Path, capsys) -> None:
    files = {n: tmp_path / n for n in ("mapping.json", "report.json", "report.html", "report.md")}
    code = _map(
        ckpt, tmp_path,
        "--out", str(files["mapping.json"]), "--report", str(files["report.json"]),
        "--html", str(files["report.html"]), "--markdown", str(files["report.md"]),
        "--dummy-input", "1,3,16,16", "--quiet",
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out == ""
    mapping = MappingResult.from_dict(json.loads(files["mapping.json"].read_text()))
    report = load_report(files["report.json"])
    assert dict(MappingResult.from_dict(report)) == dict(mapping)
    src = report["inputs"]["source"]
    assert src["path"] == str(ckpt)
    assert src["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert report["inputs"]["target"]["path"] is None
    assert report["settings"]["dummy_input"] == {"shape": [1, 3, 16, 16], "dtype": "float32"}
    assert files["report.html"].read_text() == render_html(report)
    assert files["report.md"].read_text() == render_markdown(report)


def test_map_json_prints_the_report_and_is_stable(ckpt: Path, capsys) -> None:
    assert _map(ckpt, ckpt.parent, "--json") == 0
    first = capsys.readouterr().out
    assert _map(ckpt, ckpt.parent, "--json") == 0
    assert capsys.readouterr().out == first
    validate_report(json.loads(first))


def test_map_min_coverage_fails_with_exit_1(ckpt: Path, capsys) -> None:
    assert _map(ckpt, ckpt.parent, "--quiet", "--min-coverage", "1.0") == 1
    assert "below --min-coverage" in capsys.readouterr().err
    assert _map(ckpt, ckpt.parent, "--quiet", "--min-coverage", "0.0") == 0


def test_map_refuses_to_overwrite_its_input_and_bad_input_exits_2(
    ckpt: Path, tmp_path: Path, capsys
) -> None:
    before = ckpt.read_bytes()
    assert _map(ckpt, tmp_path, "--out", str(ckpt)) == 2
    assert "would destroy an input" in capsys.readouterr().err
    assert ckpt.read_bytes() == before
    assert main(["map", str(tmp_path / "missing.pt"), "--target", TARGET]) == 2
    assert main(["map", str(ckpt), "--target", "no.such.module:Thing"]) == 2
    with pytest.raises(SystemExit) as info:
        main(["map", str(ckpt), "--target", TARGET, "--dummy-input", "1,a"])
    assert info.value.code == 2


def test_parse_shape_reads_sizes_and_dtype() -> None:
    assert parse_shape("1,3,224,224") == ((1, 3, 224, 224), "float32")
    assert parse_shape("1,16:int64") == ((1, 16), "int64")
    with pytest.raises(Exception, match="positive integers"):
        parse_shape("0,3")
    with pytest.raises(Exception, match="unknown dtype"):
        parse_shape("1,3:complex7")


def test_report_rerenders_a_saved_report_identically(ckpt: Path, tmp_path: Path, capsys) -> None:
    _map(ckpt, tmp_path, "--report", str(tmp_path / "r.json"), "--html", str(tmp_path / "a.html"))
    capsys.readouterr()
    args = ["report", str(tmp_path / "r.json"), "--html", str(tmp_path / "b.html")]
    assert main([*args, "--markdown", str(tmp_path / "b.md")]) == 0
    assert (tmp_path / "a.html").read_bytes() == (tmp_path / "b.html").read_bytes()
    assert main(["report", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "c.md")]) == 0
    assert (tmp_path / "b.md").read_bytes() == (tmp_path / "c.md").read_bytes()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "r.json"), "--view", "all"]) == 0
    out = capsys.readouterr().out
    report = load_report(tmp_path / "r.json")
    assert f"{report['mapping']['coverage']['mapped_pairs']} one-to-one" in out
    assert "source: old.safetensors" in out and "✗ unmatched" in out
    pair = report["mapping"]["pairs"][0]
    assert main(["report", str(tmp_path / "r.json"), "--breakdown", pair["target"]]) == 0
    assert f"{pair['source']} → {pair['target']}" in capsys.readouterr().out


def test_report_rejects_bad_files_with_exit_2(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": "1.0", "kind": "weightmapper-report"}')
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a valid weightmapper report" in err
    assert main(["report", str(tmp_path / "none.json")]) == 2
    assert main(["report", str(bad), "--html", str(bad)]) == 2


def test_rules_prints_verified_rules_for_a_report(ckpt: Path, tmp_path: Path, capsys) -> None:
    _map(ckpt, tmp_path, "--report", str(tmp_path / "r.json"), "--quiet")
    assert main(["rules", str(tmp_path / "r.json"), "--format", "regex"]) == 0
    captured = capsys.readouterr()
    lines = [ln.split(" => ") for ln in captured.out.splitlines() if not ln.startswith("#")]
    assert 1 < len(lines) < len(load_report(tmp_path / "r.json")["mapping"]["pairs"])
    report = load_report(tmp_path / "r.json")
    n = len(report["mapping"]["pairs"])
    assert "verified" in captured.err and f"for {n} mapped key(s)" in captured.err
    for pair in report["mapping"]["pairs"]:
        match = next(m for p, r in lines if (m := re.fullmatch(p, pair["source"])))
        repl = next(r for p, r in lines if re.fullmatch(p, pair["source"]))
        assert match.expand(repl) == pair["target"]


def test_rules_writes_each_format_and_json(ckpt: Path, tmp_path: Path, capsys) -> None:
    _map(ckpt, tmp_path, "--out", str(tmp_path / "m.json"), "--quiet")
    for fmt in ("python", "regex", "hf-key-mapping", "mmengine"):
        out = tmp_path / f"rules.{fmt}.txt"
        assert main(["rules", str(tmp_path / "m.json"), "--format", fmt, "--out", str(out)]) == 0
        assert "weightmapper rename rules" in out.read_text()
    capsys.readouterr()
    assert main(["rules", str(tmp_path / "m.json"), "--json", "--quiet"]) == 0
    data = json.loads(capsys.readouterr().out)
    n = len(json.loads((tmp_path / "m.json").read_text())["pairs"])
    assert data["verified"] is True and data["mapping_size"] == n
    assert data["rule_count"] == len(data["rules"]) and "def rename" in data["text"]
    assert main(["rules", str(tmp_path / "m.json"), "--out", str(tmp_path / "m.json")]) == 2


def test_map_traces_two_modules_and_prints_both_trees(capsys) -> None:
    args = ["map", "weightmapper.examples.cnn:OldCNN", "--target", TARGET, "--source-kwargs"]
    code = main([*args, KWARGS.replace("5", "10"), "--target-kwargs", KWARGS])
    assert code == 0
    plain = capsys.readouterr().out
    code = main([*args, KWARGS.replace("5", "10"), "--target-kwargs", KWARGS,
                 "--dummy-input", "1,3,16,16", "--hierarchy", "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["settings"]["source_traced"] is True
    assert report["inputs"]["source"]["path"] is None
    assert main([*args, KWARGS, "--target-kwargs", KWARGS, "--hierarchy"]) == 0
    trees = capsys.readouterr().out
    assert "source: OldCNN" in trees and "target: RefactoredCNN" in trees and "✓" in trees
    assert "source: OldCNN" not in plain


def test_map_verify_records_the_functional_check(tmp_path: Path, capsys) -> None:
    src = ["map", "weightmapper.examples.cnn:OldCNN", "--source-kwargs", KWARGS]
    args = [*src, "--target", TARGET, "--target-kwargs", KWARGS, "--quiet"]
    assert main([*args, "--verify"]) == 2  # needs a dummy input
    assert "--verify runs both models" in capsys.readouterr().err
    out = tmp_path / "r.json"
    code = main([*args, "--verify", "--dummy-input", "1,3,16,16", "--report", str(out)])
    check = load_report(out)["functional_check"]
    assert check is not None and set(check) >= {"equal", "max_abs_diff", "first_diverging"}
    assert code == (0 if check["equal"] else 1)


@pytest.mark.parametrize(
    "argv",
    [
        ["report", "{report}", "--max-rows", "-5"],
        ["report", "{report}", "--view", "hierarchy", "--max-depth", "-1"],
        ["validate", "{ckpt}", "--target", "{ckpt}", "--max-items", "-1"],
    ],
)
def test_negative_row_and_depth_limits_are_refused(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    """A negative limit sliced the table from the end and printed a wrong "N more rows"."""
    report = tmp_path / "report.json"
    assert _map(ckpt, report, "--report", str(report), "--quiet") == 0
    filled = [a.replace("{report}", str(report)).replace("{ckpt}", str(ckpt)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        main(filled)
    assert exc.value.code == 2
    assert "expected a whole number ≥ 0" in capsys.readouterr().err


@pytest.mark.parametrize("side", ["source", "target"])
def test_a_side_without_tensors_is_bad_input_not_a_traceback(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], side: str
) -> None:
    """A safetensors file saved from an empty dict used to crash the engine (exit 1)."""
    empty = tmp_path / "empty.safetensors"
    save_file({}, str(empty))
    source, target = (empty, ckpt) if side == "source" else (ckpt, empty)
    assert main(["map", str(source), "--target", str(target), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"the {side} empty.safetensors holds no tensors" in err and "Traceback" not in err


def test_map_writes_no_output_when_one_cannot_be_rendered(
    ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """All outputs are rendered before the first is written: none, rather than some."""
    odd = tmp_path / "odd.safetensors"
    save_file({"": torch.zeros(3), "fc.weight": torch.zeros(2, 2)}, str(odd))
    outs = [tmp_path / n for n in ("m.json", "r.json", "r.html")]
    argv = ["map", str(odd), "--target", str(odd), "--quiet", "--min-coverage", "0"]
    code = main([*argv, "--out", str(outs[0]), "--report", str(outs[1]), "--html", str(outs[2])])
    assert code == 2, capsys.readouterr().err
    assert [p for p in outs if p.exists()] == []
