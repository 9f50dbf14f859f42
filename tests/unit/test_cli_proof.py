"""`--source-module` on `map`, `apply` and `validate`: a checkpoint proven against its target."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from weightmapper.cli.main import main
from weightmapper.examples.generate import trained_like
from weightmapper.examples.transformer import NewTransformer, OldTransformer
from weightmapper.result import MappingResult

KW = {"vocab_size": 64, "d_model": 16, "n_layer": 1, "n_head": 2, "max_len": 8}
OLD = "weightmapper.examples.transformer:OldTransformer"
NEW = "weightmapper.examples.transformer:NewTransformer"
PROOF = [
    "--source-module",
    OLD,
    "--source-kwargs",
    json.dumps(KW),
    "--dummy-input",
    "2,8:int64",
]
TARGET = ["--target", NEW, "--target-kwargs", json.dumps(KW)]


@pytest.fixture
def ckpt(tmp_path):
    path = tmp_path / "old.safetensors"
    save_file(trained_like(OldTransformer(**KW), seed=3).state_dict(), path)
    return path


def _mapping(tmp_path, ckpt, capsys) -> MappingResult:
    out = tmp_path / "mapping.json"
    assert main(["map", str(ckpt), *TARGET, *PROOF, "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    return MappingResult.from_dict(json.loads(out.read_text()))


def test_map_proves_a_checkpoint_and_records_the_status(tmp_path, ckpt, capsys) -> None:
    code = main(["map", str(ckpt), *TARGET, *PROOF, "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["status"]["state"] == "proven_equal"
    assert report["mapping"]["status"] == report["status"]
    assert report["proof"]["forward_passes"] >= 1
    assert report["functional_check"]["equal"] is True
    assert report["inputs"]["source"]["path"] == str(ckpt)


def test_map_with_source_module_needs_its_input(ckpt, capsys) -> None:
    code = main(["map", str(ckpt), *TARGET, "--source-module", OLD, "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --source-module") and "--dummy-input" in err


def test_a_checkpoint_that_does_not_fit_the_source_module_is_bad_input(ckpt, capsys) -> None:
    wrong = {**KW, "d_model": 8}
    args = ["map", str(ckpt), *TARGET, *PROOF[:2], "--source-kwargs", json.dumps(wrong)]
    assert main([*args, "--dummy-input", "2,8:int64", "--quiet"]) == 2
    assert "does not load into the source module" in capsys.readouterr().err


def test_apply_fixes_a_wrong_mapping_before_writing(tmp_path, ckpt, capsys) -> None:
    good = _mapping(tmp_path, ckpt, capsys)
    data = json.loads(good.to_json())
    # swap the query and key projections of layer 0: names look fine, function is wrong
    swap = {
        "blocks.0.attn.q_proj": "blocks.0.attn.k_proj",
        "blocks.0.attn.k_proj": "blocks.0.attn.q_proj",
    }
    for p in data["pairs"]:
        mod, _, param = p["source"].rpartition(".")
        if mod in swap:
            p["source"] = f"{swap[mod]}.{param}"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    out = tmp_path / "new.safetensors"
    code = main(["apply", str(ckpt), str(broken), "--out", str(out), *TARGET, *PROOF])
    assert code == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "proven equal" in printed and "swap" in printed
    target = NewTransformer(**KW).eval()
    target.load_state_dict(load_file(out))
    source = trained_like(OldTransformer(**KW), seed=3).eval()
    ids = torch.randint(0, 64, (2, 8))
    torch.testing.assert_close(target(ids), source(ids))


def test_apply_writes_nothing_when_no_fix_exists(tmp_path, ckpt, capsys) -> None:
    data = json.loads(_mapping(tmp_path, ckpt, capsys).to_json())
    # a bias shifted: no layout alternative can undo that
    for p in data["pairs"]:
        if p["source"].endswith("fc1.bias"):
            p["transform"] = {"name": "offset", "params": {"value": 0.5}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = tmp_path / "new.safetensors"
    code = main(["apply", str(ckpt), str(bad), "--out", str(out), "--quiet", *TARGET, *PROOF])
    assert code == 1
    err = capsys.readouterr().err
    assert "differs at layers.0" in err and "not written" in err
    assert not out.exists()


def test_validate_equal_exit_codes(tmp_path, ckpt, capsys) -> None:
    mapping = tmp_path / "mapping.json"
    _mapping(tmp_path, ckpt, capsys)
    out = tmp_path / "new.safetensors"
    assert main(["apply", str(ckpt), str(mapping), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    proof = [*PROOF, "--source", str(ckpt)]
    assert main(["validate", str(out), *TARGET, *proof, "--equal", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] and result["status"]["state"] == "proven_equal"
    assert result["functional_check"]["equal"] is True

    sd = load_file(out)
    sd["layers.0.ffn.down.weight"] *= 2.0
    tampered = tmp_path / "tampered.safetensors"
    save_file(sd, tampered)
    assert main(["validate", str(tampered), *TARGET, *proof, "--equal"]) == 1
    assert "status: differs at (the whole network)" in capsys.readouterr().out
    located = [*proof, "--mapping", str(mapping)]
    assert main(["validate", str(tampered), *TARGET, *located, "--equal"]) == 1
    assert "status: differs at layers.0.ffn.down" in capsys.readouterr().out
    # without --equal the difference is reported, the load check decides the exit code
    assert main(["validate", str(tampered), *TARGET, *proof]) == 0
    capsys.readouterr()


def test_validate_equal_without_source_module_is_bad_input(tmp_path, ckpt, capsys) -> None:
    code = main(
        ["validate", str(ckpt), "--target", OLD, "--target-kwargs", json.dumps(KW), "--equal"]
    )
    assert code == 2
    assert "--source-module" in capsys.readouterr().err


def test_validate_without_proof_says_loads_not_proven(ckpt, capsys) -> None:
    code = main(["validate", str(ckpt), "--target", OLD, "--target-kwargs", json.dumps(KW)])
    assert code == 0
    assert "status: loads, not proven" in capsys.readouterr().out


def _gpt2(tmp_path):
    """A tiny GPT-2 checkpoint and its config folder: a transformers class as --source-module."""
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(
        vocab_size=64, n_embd=16, n_head=2, n_layer=1, n_positions=8, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.GPT2Model(config).eval()
    folder = tmp_path / "cfg"
    config.save_pretrained(folder)
    path = tmp_path / "gpt2.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path, folder


def test_a_transformers_source_module_takes_its_config_from_source_config(tmp_path, capsys) -> None:
    path, folder = _gpt2(tmp_path)
    gpt2 = ["transformers:GPT2Model", "--source-config", str(folder)]
    target = ["--target", "transformers:GPT2Model", "--target-config", str(folder)]
    proof = ["--source-module", *gpt2, "--dummy-input", "2,8:int64"]
    out = tmp_path / "mapping.json"
    assert main(["map", str(path), *target, *proof, "--out", str(out), "--quiet"]) == 0
    assert json.loads(out.read_text())["status"]["state"] == "proven_equal"
    converted = tmp_path / "new.safetensors"
    assert main(["apply", str(path), str(out), "--out", str(converted), *target[:2], *proof,
                 "--target-config", str(folder), "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    code = main(["validate", str(converted), *target, "--source", str(path), *proof,
                 "--mapping", str(out), "--equal"])  # fmt: skip
    assert code == 0
    assert "status: proven equal" in capsys.readouterr().out


def test_a_transformers_source_module_without_its_config_names_source_config(
    tmp_path, capsys
) -> None:
    path, folder = _gpt2(tmp_path)
    code = main(["map", str(path), "--target", "transformers:GPT2Model", "--target-config",
                 str(folder), "--source-module", "transformers:GPT2Model", "--dummy-input",
                 "2,8:int64", "--quiet"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "--source-config" in err and "--target-config" not in err
