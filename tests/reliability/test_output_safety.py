"""Outputs that would write over an input are refused before anything is written.

Every command that writes resolves its inputs to their real files (folders, shard indexes
and their shards, symlinks, hard links) with ``weightmapper.io_safety`` and refuses an output
that is one of them with exit 2, the output and the input named; the input stays intact.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import OutputError
from weightmapper.examples.cnn import OldCNN
from weightmapper.io_safety import ensure_outputs_safe, input_files, spec_files
from weightmapper.renamer import WeightRenamer

pytestmark = pytest.mark.reliability

TARGET = "weightmapper.examples.cnn:RefactoredCNN"
KWARGS = '{"num_classes": 10, "width": 8}'
KIND = "output would overwrite an input"


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {k: v.contiguous() for k, v in OldCNN(num_classes=10, width=8).state_dict().items()}


def _sharded(folder: Path) -> tuple[Path, list[Path]]:
    """State dict → a two-shard safetensors checkpoint in ``folder``; (index, shards)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = _state()
    names = list(state)
    half = len(names) // 2
    shards = [
        folder / "model-00001-of-00002.safetensors",
        folder / "model-00002-of-00002.safetensors",
    ]
    save_file({k: state[k] for k in names[:half]}, str(shards[0]))
    save_file({k: state[k] for k in names[half:]}, str(shards[1]))
    weight_map = {k: shards[0].name if i < half else shards[1].name for i, k in enumerate(names)}
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return index, shards


def _fill(arg: str, **values: Path) -> str:
    """``{name}`` placeholders in an argument → the given paths (JSON braces left alone)."""
    for name, value in values.items():
        arg = arg.replace(f"{{{name}}}", str(value))
    return arg


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_input_files_resolves_folders_indexes_shards_and_symlinks(tmp_path: Path) -> None:
    index, shards = _sharded(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "README.md").write_text("notes")
    expected = {index.resolve(), *(s.resolve() for s in shards)}
    assert input_files(index) == frozenset(expected)
    assert input_files(tmp_path / "ckpt") == frozenset(
        expected | {(tmp_path / "ckpt" / "README.md").resolve()}
    )
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "ckpt")
    assert input_files(link / index.name) == frozenset(expected)
    assert input_files(tmp_path / "missing.pt") == frozenset()
    os.mkfifo(tmp_path / "ckpt" / "fifo")  # never opened: not a regular file
    assert (tmp_path / "ckpt" / "fifo").resolve() not in input_files(tmp_path / "ckpt")


@pytest.mark.parametrize("flag", ["--out", "--report", "--html", "--markdown"])
@pytest.mark.parametrize("given", ["folder", "index"])
def test_map_never_overwrites_a_shard_of_a_folder_or_index_source(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally, flag: str, given: str
) -> None:
    with tally.attack(KIND):
        index, shards = _sharded(tmp_path / "ckpt")
        before = _digest([index, *shards])
        source = index.parent if given == "folder" else index
        victim = shards[1] if flag != "--report" else index
        code = main(["map", str(source), "--target", TARGET, "--target-kwargs", KWARGS,
                     "--quiet", flag, str(victim)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2
        assert flag in err and str(victim.resolve()) in err and "choose another output" in err
        assert "Traceback" not in err
        assert _digest([index, *shards]) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_map_never_overwrites_an_input_through_a_link(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally, link: str
) -> None:
    with tally.attack(KIND):
        src = tmp_path / "old.safetensors"
        save_file(_state(), str(src))
        before = _digest([src])
        alias = tmp_path / "alias.json"
        if link == "symlink":
            alias.symlink_to(src)
        else:
            os.link(src, alias)
        code = main(["map", str(src), "--target", TARGET, "--target-kwargs", KWARGS, "--quiet",
                     "--out", str(alias)])  # fmt: skip
        err = capsys.readouterr().err
        assert code == 2
        assert ("symlink to" if link == "symlink" else "hard link of") in err
        assert _digest([src]) == before


def test_apply_never_overwrites_a_shard_or_the_mapping(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    index, shards = _sharded(tmp_path / "ckpt")
    mapping = tmp_path / "mapping.json"
    assert main(["map", str(index.parent), "--target", TARGET, "--target-kwargs", KWARGS,
                 "--quiet", "--out", str(mapping)]) == 0  # fmt: skip
    before = _digest([index, *shards, mapping])
    for out in (shards[0], mapping, index.parent):  # a folder output writes model.safetensors*
        with tally.attack(KIND):
            code = main(["apply", str(index.parent), str(mapping), "--out", str(out), "--force",
                         "--quiet", "--shard-size", "20KB"])  # fmt: skip
            err = capsys.readouterr().err
            assert code == 2, err
            assert "input file" in err and "Traceback" not in err
            assert _digest([index, *shards, mapping]) == before


def test_convert_refuses_to_delete_an_input_as_an_earlier_layout(tmp_path: Path, tally) -> None:
    """--force removes shards of an earlier layout: never when they are the source's."""
    with tally.attack(KIND):
        index, shards = _sharded(tmp_path / "ckpt")
        before = _digest([index, *shards])
        mapping = {k: k for k in _state()}
        with pytest.raises(OutputError, match="input file"):
            convert_checkpoint(index, mapping, index.parent / "model.safetensors", overwrite=True)
        assert _digest([index, *shards]) == before


def test_report_and_rules_never_overwrite_their_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally
) -> None:
    src = tmp_path / "old.safetensors"
    save_file(_state(), str(src))
    report = tmp_path / "report.json"
    assert main(["map", str(src), "--target", TARGET, "--target-kwargs", KWARGS, "--quiet",
                 "--report", str(report)]) == 0  # fmt: skip
    link = tmp_path / "report-link.md"
    os.link(report, link)
    before = _digest([report])
    for argv in (
        ["report", str(report), "--markdown", str(link)],
        ["report", str(report), "--html", str(report)],
        ["rules", str(report), "--out", str(link)],
    ):
        with tally.attack(KIND):
            assert main(argv) == 2
            assert "input file" in capsys.readouterr().err
            assert _digest([report]) == before


def test_renamer_never_saves_over_a_shard(tmp_path: Path, tally) -> None:
    with tally.attack(KIND):
        index, shards = _sharded(tmp_path / "ckpt")
        before = _digest([index, *shards])
        renamer = WeightRenamer(index.parent).add_prefix("model.")
        with pytest.raises(OutputError, match="overwrite_input=True"):
            renamer.save(shards[1])
        assert _digest([index, *shards]) == before


def test_ensure_outputs_safe_allows_new_files_and_refuses_folders_replaced_whole(
    tmp_path: Path,
) -> None:
    index, _shards = _sharded(tmp_path / "ckpt")
    inputs = input_files(index.parent)
    ensure_outputs_safe({"--out": tmp_path / "ckpt" / "converted.safetensors"}, inputs)
    ensure_outputs_safe([None, tmp_path / "elsewhere.json"], inputs)
    ensure_outputs_safe([index.parent], inputs)  # files written into it are checked one by one
    with pytest.raises(OutputError, match="folder holding"):
        ensure_outputs_safe([index.parent], inputs, replace_folders=True)


def test_map_never_overwrites_the_spec_file_or_config_it_reads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tally
) -> None:
    """A model's .py file (by path or as a module beside the user) and a config are inputs."""
    src = tmp_path / "old.safetensors"
    save_file(_state(), str(src))
    nets = tmp_path / "mynets.py"
    nets.write_text("from weightmapper.examples.cnn import RefactoredCNN as Net\n")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"model_type": "bert"}))
    before = _digest([nets, config])
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["--target", f"{nets}:Net", "--target-kwargs", KWARGS, "--out", str(nets)],
        ["--target", "mynets:Net", "--target-kwargs", KWARGS, "--html", "mynets.py"],
        ["--target", "transformers:BertModel", "--target-config", str(config), "--out",
         str(config)],
    ):  # fmt: skip
        with tally.attack(KIND):
            assert main(["map", str(src), "--quiet", *argv]) == 2
            err = capsys.readouterr().err
            assert "input file" in err and "Traceback" not in err
            assert _digest([nets, config]) == before


@pytest.mark.parametrize(
    ("argv", "second"),
    [
        (["map", "{src}", "--target", TARGET, "--target-kwargs", KWARGS, "--quiet",
          "--out", "{d}/x.json", "--html", "{d}/./x.json"], "--html"),
        (["map", "{src}", "--target", TARGET, "--target-kwargs", KWARGS, "--quiet",
          "--report", "{d}/x.json", "--markdown", "{d}/link.md"], "--markdown"),
        (["report", "{report}", "--html", "{d}/page", "--markdown", "{d}/page"], "--markdown"),
    ],
)  # fmt: skip
def test_two_outputs_of_one_command_on_one_file_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tally, argv: list[str], second: str
) -> None:
    """Else the second output silently replaces the first while both are reported written."""
    with tally.attack("two outputs on one file"):
        src = tmp_path / "old.safetensors"
        save_file(_state(), str(src))
        report = tmp_path / "in-report.json"
        assert main(["map", str(src), "--target", TARGET, "--target-kwargs", KWARGS, "--quiet",
                     "--report", str(report)]) == 0  # fmt: skip
        (tmp_path / "link.md").symlink_to(tmp_path / "x.json")
        filled = [_fill(a, src=src, d=tmp_path, report=report) for a in argv]
        assert main(filled) == 2
        err = capsys.readouterr().err
        assert f"{second} " in err and "is the same file as" in err and "Traceback" not in err
        assert not (tmp_path / "x.json").exists() and not (tmp_path / "page").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["map", "{src}", "--target", TARGET, "--target-kwargs", KWARGS, "--out", ""],
        ["apply", "{src}", "{src}", "--out", ""],
        ["report", "{src}", "--html", " "],
        ["rules", "{src}", "--out", ""],
    ],
)
def test_an_empty_output_path_is_refused_not_taken_as_the_current_folder(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tally,
    argv: list[str],
) -> None:
    with tally.attack("empty output path"):
        src = tmp_path / "old.safetensors"
        save_file(_state(), str(src))
        monkeypatch.chdir(tmp_path)
        with pytest.raises(SystemExit) as exc:
            main([_fill(a, src=src) for a in argv])
        assert exc.value.code == 2
        assert "empty path" in capsys.readouterr().err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["old.safetensors"]


def test_spec_files_lists_what_a_spec_reads_without_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise SystemExit('imported')\n")
    (pkg / "nets.py").write_text("")
    (tmp_path / "solo.py").write_text("")
    config = tmp_path / "config.json"
    config.write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert spec_files("pkg.nets:Net") == {(pkg / "nets.py").resolve()}
    assert spec_files("solo:Net", config) == {(tmp_path / "solo.py").resolve(), config.resolve()}
    assert spec_files(f"{tmp_path / 'solo.py'}:Net") == {(tmp_path / "solo.py").resolve()}
    assert spec_files("nowhere.to.be:Found") == frozenset()
    assert spec_files(str(pkg)) == input_files(pkg)
