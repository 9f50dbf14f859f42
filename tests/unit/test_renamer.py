"""WeightRenamer: rename, refuse collisions, save atomically, keep ties through safetensors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_model
from torch import nn

from tiny_nets import TiedLM
from weightmapper.checkpoint import open_checkpoint
from weightmapper.errors import KeyCollisionError, MappingError, OutputError
from weightmapper.renamer import WeightRenamer, dedupe_shared_tensors
from weightmapper.result import MappingResult


def small_sd() -> dict[str, torch.Tensor]:
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    return {f"model.{k}": v for k, v in net.state_dict().items()}


def test_list_and_search() -> None:
    r = WeightRenamer(small_sd())
    assert r.list_keys() == ["model.0.weight", "model.0.bias", "model.1.weight", "model.1.bias"]
    assert r.search_keys(r"\.bias$") == ["model.0.bias", "model.1.bias"]
    assert r.search_keys("1") == ["model.1.weight", "model.1.bias"]
    with pytest.raises(MappingError, match="regular expression"):
        r.search_keys("(")


def test_rename_keeps_unmapped_and_chains() -> None:
    sd = small_sd()
    r = WeightRenamer(sd)
    out = r.rename_keys({"model.0.weight": "model.fc1.weight"}).remove_prefix("model.")
    assert out is r
    assert r.list_keys() == ["fc1.weight", "0.bias", "1.weight", "1.bias"]
    assert r.state_dict()["fc1.weight"] is sd["model.0.weight"]
    assert list(sd) == list(small_sd())  # the caller's dict is untouched


def test_swap_is_simultaneous() -> None:
    r = WeightRenamer(small_sd())
    r.rename_keys({"model.0.bias": "model.1.bias", "model.1.bias": "model.0.bias"})
    assert r.state_dict()["model.0.bias"].shape == (2,)


def test_collision_lists_every_clash_and_changes_nothing() -> None:
    r = WeightRenamer(small_sd())
    before = r.list_keys()
    with pytest.raises(KeyCollisionError) as info:
        r.rename_keys(
            {"model.0.weight": "w", "model.1.weight": "w", "model.0.bias": "model.1.bias"}
        )
    assert info.value.collisions == {
        "w": ["model.0.weight", "model.1.weight"],
        "model.1.bias": ["model.0.bias", "model.1.bias"],
    }
    assert "w ← model.0.weight, model.1.weight" in str(info.value)
    assert r.list_keys() == before


def test_unknown_keys_strict_and_lenient() -> None:
    r = WeightRenamer(small_sd())
    with pytest.raises(MappingError, match="not in the checkpoint"):
        r.rename_keys({"nope": "x"})
    r.rename_keys({"nope": "x", "model.0.bias": "b0"}, strict=False)
    assert "b0" in r and "x" not in r


def test_mapping_result_is_accepted() -> None:
    r = WeightRenamer(small_sd())
    r.rename_keys(MappingResult.from_simple({"model.1.weight": "head.weight"}))
    assert "head.weight" in r


def test_prefix_helpers() -> None:
    r = WeightRenamer(small_sd()).add_prefix("backbone.")
    assert r.list_keys()[0] == "backbone.model.0.weight"
    with pytest.raises(MappingError, match="no key starts with"):
        r.remove_prefix("model.")
    r.replace(r"^backbone\.model\.(\d)\.", r"layers.\1.")
    assert r.list_keys() == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias"]
    with pytest.raises(MappingError):
        r.add_prefix("")


def test_non_tensor_values_are_refused() -> None:
    from weightmapper.errors import CheckpointFormatError

    with pytest.raises(CheckpointFormatError):
        WeightRenamer({"a": [1, 2]})  # type: ignore[dict-item]


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".bin", ".weights"])
def test_save_roundtrip(tmp_path: Path, suffix: str) -> None:
    sd = small_sd()
    torch.save(sd, tmp_path / "in.pt")
    out = WeightRenamer(tmp_path / "in.pt").remove_prefix("model.").save(tmp_path / f"out{suffix}")
    table = open_checkpoint(out)
    assert table.format == ("pickle" if suffix in (".pt", ".bin") else "safetensors")
    for k, v in sd.items():
        torch.testing.assert_close(table.load(k.removeprefix("model.")), v)


def test_explicit_format(tmp_path: Path) -> None:
    out = WeightRenamer(small_sd()).save(tmp_path / "weights.data", format="pt")
    assert open_checkpoint(out).format == "pickle"
    with pytest.raises(OutputError, match="unknown output format"):
        WeightRenamer(small_sd()).save(tmp_path / "w", format="onnx")


def test_tied_weights_survive_safetensors(tmp_path: Path) -> None:
    model = TiedLM().eval()
    r = WeightRenamer(model.state_dict()).add_prefix("net.")
    out = r.save(tmp_path / "lm.safetensors")
    with safe_open(str(out), "pt") as f:
        assert sorted(f.keys()) == ["net.block.bias", "net.block.weight", "net.embed.weight"]
        assert f.metadata()["net.lm_head.weight"] == "net.embed.weight"
    table = open_checkpoint(out)
    assert table.tied == [("net.embed.weight", "net.lm_head.weight")]
    assert table.suggested_prefix == "net."
    restored = TiedLM().eval()
    sd = {k.removeprefix("net."): v for k, v in table.to_state_dict().items()}
    restored.load_state_dict(sd)
    ids = torch.tensor([[1, 2, 3, 9]])
    torch.testing.assert_close(restored(ids), model(ids))
    # safetensors' own loader understands the same convention
    plain = TiedLM()
    WeightRenamer(model.state_dict()).save(tmp_path / "plain.safetensors")
    load_model(plain, str(tmp_path / "plain.safetensors"))
    torch.testing.assert_close(plain.eval()(ids), model(ids))


def test_overlapping_views_are_copied() -> None:
    base = torch.arange(12.0)
    sd = {
        "qkv": base.view(3, 4),
        "q": base[:4],
        "kv": base[4:].view(2, 4),
        "qkv_alias": base.view(3, 4),
    }
    tensors, aliases = dedupe_shared_tensors(sd)
    assert aliases == {"qkv_alias": "qkv"}
    ptrs = {t.untyped_storage().data_ptr() for t in tensors.values()}
    assert len(ptrs) == 3  # each kept tensor owns its storage now
    torch.testing.assert_close(tensors["kv"], base[4:].view(2, 4))
    assert sd["q"].data_ptr() == base.data_ptr()  # input untouched


def test_saving_views_and_non_contiguous(tmp_path: Path) -> None:
    base = torch.randn(4, 6)
    sd = {"t": base.t(), "row": base[1], "all": base}
    out = WeightRenamer(sd).save(tmp_path / "v.safetensors")
    got = open_checkpoint(out).to_state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(got[k], v)


def test_never_overwrites_input_unless_asked(tmp_path: Path) -> None:
    src = tmp_path / "in.safetensors"
    WeightRenamer(small_sd()).save(src)
    before = src.read_bytes()
    r = WeightRenamer(src).remove_prefix("model.")
    with pytest.raises(OutputError, match="overwrite_input=True"):
        r.save(src)
    assert src.read_bytes() == before
    r.save(src, overwrite_input=True)
    assert list(open_checkpoint(src)) != list(small_sd())
    assert sorted(open_checkpoint(src)) == sorted(k.removeprefix("model.") for k in small_sd())


def test_failed_save_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import weightmapper.renamer as renamer

    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("simulated crash mid-write")

    monkeypatch.setattr(renamer, "save_file", boom)
    with pytest.raises(RuntimeError):
        WeightRenamer(small_sd()).save(tmp_path / "out.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_memory_mapped_pickle_input(tmp_path: Path) -> None:
    src = tmp_path / "in.pt"
    sd = small_sd()
    torch.save(sd, src)
    WeightRenamer(src).remove_prefix("model.").save(src, overwrite_input=True)
    got = open_checkpoint(src).to_state_dict()
    for k, v in sd.items():
        torch.testing.assert_close(got[k.removeprefix("model.")], v)
