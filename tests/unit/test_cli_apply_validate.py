"""`weightmapper apply` and `weightmapper validate`: exit codes, JSON output, files on disk."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file, save_file

from weightmapper.cli.main import main
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.transforms import TransformSpec

LINEAR = "torch.nn:Linear"
LINEAR_KWARGS = json.dumps({"in_features": 4, "out_features": 3})


def _setup(tmp_path):
    src = {"old.weight": torch.randn(4, 3), "old.bias": torch.randn(3), "junk": torch.zeros(1)}
    save_file(src, tmp_path / "src.safetensors")
    mapping = MappingResult(
        [
            MatchedPair("old.weight", "weight", 0.9, transform=TransformSpec("transpose", {})),
            MatchedPair("old.bias", "bias", 0.9),
        ]
    )
    (tmp_path / "mapping.json").write_text(mapping.to_json())
    return src, str(tmp_path / "src.safetensors"), str(tmp_path / "mapping.json")


def test_apply_writes_output_and_reports_json(tmp_path, capsys) -> None:
    src, source, mapping = _setup(tmp_path)
    out = tmp_path / "out.safetensors"
    code = main(["apply", source, mapping, "--out", str(out), "--quiet", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == [str(out)] and report["dropped_source_keys"] == ["junk"]
    sd = load_file(out)
    assert torch.equal(sd["weight"], src["old.weight"].T)


def test_apply_human_output_with_progress_bar(tmp_path, capsys) -> None:
    _, source, mapping = _setup(tmp_path)
    code = main(["apply", source, mapping, "--out", str(tmp_path / "o"), "--shard-size", "20B"])
    assert code == 0
    out = capsys.readouterr().out
    assert "wrote 2 tensors" in out and "model.safetensors.index.json" in out
    assert (tmp_path / "o" / "model-00001-of-00002.safetensors").exists()


def test_apply_names_the_target_keys_the_mapping_leaves_without_a_source(tmp_path, capsys) -> None:
    from weightmapper.result import UnmatchedKey, UnmatchedReason

    _, source, _ = _setup(tmp_path)
    head = UnmatchedKey("head.weight", "target", UnmatchedReason.NO_SHAPE_PARTNER)
    partial = MappingResult([MatchedPair("old.bias", "bias", 0.9)], unmatched_target=[head])
    (tmp_path / "partial.json").write_text(partial.to_json())
    out = tmp_path / "out.safetensors"
    assert main(["apply", source, str(tmp_path / "partial.json"), "--out", str(out)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "no source" in x)
    assert line == (
        "target keys the mapping gives no source, not written: 1 (head.weight); the output "
        "does not load strictly without them"
    )


def test_apply_into_a_folder_that_is_a_file_names_the_file(tmp_path, capsys) -> None:
    _, source, mapping = _setup(tmp_path)
    (tmp_path / "afile").write_text("keep")
    for out in (tmp_path / "afile", tmp_path / "afile" / "sub" / "x.safetensors"):
        assert main(["apply", source, mapping, "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{tmp_path / 'afile'} is a file, not a folder" in err and err.count("\n") == 1
        assert "choose another output path" in err
    assert (tmp_path / "afile").read_text() == "keep"


def test_apply_bad_input_exits_2_with_one_line(tmp_path, capsys) -> None:
    _, source, mapping = _setup(tmp_path)
    out = tmp_path / "out.safetensors"
    assert main(["apply", source, str(tmp_path / "none.json"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: mapping file") and err.count("\n") == 1
    out.write_bytes(b"x")
    assert main(["apply", source, mapping, "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["apply", source, mapping, "--out", str(out), "--quiet", "--force"]) == 0
    assert main(["apply", source, mapping, "--out", source, "--quiet", "--force"]) == 2
    assert "would destroy an input" in capsys.readouterr().err


def test_validate_against_a_module_spec(tmp_path, capsys) -> None:
    _, source, mapping = _setup(tmp_path)
    out = str(tmp_path / "out.safetensors")
    assert main(["apply", source, mapping, "--out", out, "--quiet"]) == 0
    capsys.readouterr()
    args = ["validate", out, "--target", LINEAR, "--target-kwargs", LINEAR_KWARGS]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["validate", source, "--target", LINEAR, "--target-kwargs", LINEAR_KWARGS]) == 1
    text = capsys.readouterr().out
    assert "FAILED" in text and "missing (2)" in text and "unexpected (3)" in text


def test_validate_against_a_checkpoint_json(tmp_path, capsys) -> None:
    save_file({"weight": torch.zeros(3, 4), "bias": torch.zeros(3)}, tmp_path / "ref.safetensors")
    save_file({"weight": torch.zeros(4, 3), "bias": torch.zeros(3)}, tmp_path / "bad.safetensors")
    code = main(
        [
            "validate",
            str(tmp_path / "bad.safetensors"),
            "--target",
            str(tmp_path / "ref.safetensors"),
            "--json",
        ]
    )
    assert code == 1
    result = json.loads(capsys.readouterr().out)
    assert result["shape_mismatches"] == {"weight": {"checkpoint": [4, 3], "target": [3, 4]}}


def test_validate_rejects_kwargs_for_a_path_target(tmp_path, capsys) -> None:
    save_file({"weight": torch.zeros(3, 4)}, tmp_path / "ref.safetensors")
    ref = str(tmp_path / "ref.safetensors")
    assert main(["validate", ref, "--target", ref]) == 0
    assert main(["validate", ref, "--target", ref, "--target-kwargs", '{"a": 1}']) == 2
    assert "--target-kwargs applies" in capsys.readouterr().err
