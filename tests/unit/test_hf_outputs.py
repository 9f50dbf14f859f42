"""Outputs that load where users load them: HF folders for from_pretrained, single torch files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.cli.main import main
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import OutputError
from weightmapper.result import MappingResult, MatchedPair
from weightmapper.transforms import TransformSpec
from zoo.hf import TINY_LLAMA

transformers = pytest.importorskip("transformers")


def _tiny_llama_folder(folder: Path) -> torch.nn.Module:
    """Folder → a tiny tied-embedding Llama saved there (config, generation config, weights)."""
    cfg = transformers.LlamaConfig(**TINY_LLAMA, tie_word_embeddings=True)
    torch.manual_seed(1)
    model = transformers.LlamaForCausalLM(cfg).eval()
    model.generation_config.max_new_tokens = 7
    model.save_pretrained(folder)
    return model


def _logits(model: torch.nn.Module) -> torch.Tensor:
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(ids).logits


def _map_and_apply(source: str, cfg: Path, tmp_path: Path, *extra: str) -> Path:
    mapping, out = tmp_path / "mapping.json", tmp_path / "converted"
    args = ["--target", "transformers:LlamaForCausalLM", "--target-config", str(cfg)]
    assert main(["map", source, *args, "--out", str(mapping), "--quiet"]) == 0
    apply = ["apply", source, str(mapping), "--out", str(out), "--target-config", str(cfg)]
    assert main([*apply, "--quiet", *extra]) == 0
    return out


def _load(out: Path) -> torch.nn.Module:
    model, info = transformers.LlamaForCausalLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"]
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    return model.eval()


def test_training_checkpoint_to_a_folder_from_pretrained_loads(tmp_path) -> None:
    reference = _tiny_llama_folder(tmp_path / "hf")
    # A DataParallel training checkpoint of the model: wrapped, prefixed, one .pt file.
    state = {f"module.{k}": v for k, v in reference.state_dict().items()}
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "train.pt")
    out = _map_and_apply(str(tmp_path / "train.pt"), tmp_path / "hf", tmp_path)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    assert json.loads((out / "config.json").read_text()) == json.loads(
        (tmp_path / "hf" / "config.json").read_text()
    )
    torch.testing.assert_close(_logits(_load(out)), _logits(reference), rtol=0, atol=0)
    # The output folder is a target spec too: its config builds the architecture.
    assert main(["validate", str(out), "--target", str(out)]) == 0
    save_file({"lm_head.weight": torch.zeros(64, 16)}, tmp_path / "partial.safetensors")
    assert main(["validate", str(tmp_path / "partial.safetensors"), "--target", str(out)]) == 1


def test_hf_folder_to_sharded_folder_named_as_transformers_names_it(tmp_path) -> None:
    reference = _tiny_llama_folder(tmp_path / "hf")
    out = _map_and_apply(str(tmp_path / "hf"), tmp_path / "hf", tmp_path, "--shard-size", "8KB")
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    n = len(shards)
    assert n > 1 and shards[0] == f"model-00001-of-{n:05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    assert (out / "config.json").is_file() and (out / "generation_config.json").is_file()
    torch.testing.assert_close(_logits(_load(out)), _logits(reference), rtol=0, atol=0)


def _mapping_and_source(tmp_path: Path) -> tuple[dict[str, torch.Tensor], Path, MappingResult]:
    src = {"a.weight": torch.randn(3, 4), "a.bias": torch.randn(3)}
    save_file(src, tmp_path / "src.safetensors")
    mapping = MappingResult(
        [
            MatchedPair("a.weight", "fc.weight", 0.9, transform=TransformSpec("transpose", {})),
            MatchedPair("a.bias", "fc.bias", 0.9),
        ]
    )
    return src, tmp_path / "src.safetensors", mapping


@pytest.mark.parametrize("suffix", [".pt", ".bin", ".pth"])
def test_torch_file_output_is_one_file(tmp_path, suffix) -> None:
    src, source, mapping = _mapping_and_source(tmp_path)
    out = tmp_path / f"new{suffix}"
    report = convert_checkpoint(source, mapping, out)
    assert out.is_file() and report.files == (str(out),) and report.index_path is None
    state = torch.load(out, weights_only=True)
    assert list(state) == ["fc.bias", "fc.weight"]
    assert torch.equal(state["fc.weight"], src["a.weight"].T)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    with pytest.raises(OutputError, match="already exists"):
        convert_checkpoint(source, mapping, out)
    convert_checkpoint(source, mapping, out, overwrite=True)
    with pytest.raises(OutputError, match="give a folder"):
        convert_checkpoint(source, mapping, out, overwrite=True, extra_files={"config.json": b""})


def test_cli_apply_out_pt_writes_a_file_not_a_folder(tmp_path, capsys) -> None:
    src, source, mapping = _mapping_and_source(tmp_path)
    (tmp_path / "mapping.json").write_text(mapping.to_json())
    out = tmp_path / "new.pt"
    assert main(["apply", str(source), str(tmp_path / "mapping.json"), "--out", str(out)]) == 0
    assert out.is_file() and "wrote 2 tensors" in capsys.readouterr().out
    assert torch.equal(torch.load(out, weights_only=True)["fc.bias"], src["a.bias"])


def test_tied_tensors_share_storage_in_a_torch_file(tmp_path) -> None:
    emb = torch.randn(5, 3)
    state = {"emb.weight": emb, "head.weight": emb}
    mapping = {"emb.weight": "tok.weight", "head.weight": "lm_head.weight"}
    convert_checkpoint(state, mapping, tmp_path / "tied.bin")
    loaded = torch.load(tmp_path / "tied.bin", weights_only=True)
    assert loaded["tok.weight"].data_ptr() == loaded["lm_head.weight"].data_ptr()
    assert torch.equal(loaded["lm_head.weight"], emb)
