"""The engine reads roles: tensors whose roles exclude each other never pair, whatever their
names, shapes or key order say; RoPE layouts that differ get their row permutation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightmapper.mapper import WeightMapper
from zoo import get_case
from zoo.nets_rope import RopeAttention


def test_sorted_keys_of_a_file_do_not_rotate_the_mlp(tmp_path: Path) -> None:
    """A safetensors file stores keys sorted (down, gate, up); the target's MLP is fc_1, fc_2,
    proj. Position would pair them round; the roles from both names keep them straight."""
    case = get_case("llama_hf_to_fused_qkv")
    if not case.available():
        pytest.skip("needs transformers")
    path = tmp_path / "hf.safetensors"
    save_file({k: v.contiguous() for k, v in case.build_source().state_dict().items()}, path)
    result = WeightMapper.from_checkpoint(path, case.build_target()).suggest_mapping()
    mapping = {s: t for s, (t, _) in result.get_mapping_with_scores().items()}
    for i in range(2):
        s, t = f"model.layers.{i}.mlp", f"transformer.h.{i}.mlp"
        assert mapping[f"{s}.gate_proj.weight"] == f"{t}.fc_1.weight"
        assert mapping[f"{s}.up_proj.weight"] == f"{t}.fc_2.weight"
        assert mapping[f"{s}.down_proj.weight"] == f"{t}.proj.weight"


def test_an_mlm_head_never_lands_on_a_pooler() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=32, num_labels=3,
    )  # fmt: skip
    mlm = transformers.BertForMaskedLM(cfg)
    classifier = transformers.BertForSequenceClassification(cfg)
    result = WeightMapper(mlm, classifier).suggest_mapping()
    mapping = {s: t for s, (t, _) in result.get_mapping_with_scores().items()}
    assert "cls.predictions.transform.dense.weight" not in mapping
    assert "bert.pooler.dense.weight" not in mapping.values()
    assert mapping["bert.encoder.layer.1.output.dense.weight"] == (
        "bert.encoder.layer.1.output.dense.weight"
    )


def test_rope_layouts_read_from_both_forward_passes_are_converted_and_outputs_match() -> None:
    """Meta's interleaved RoPE → HF's rotate-half: same names, same shapes, other rows."""
    torch.manual_seed(0)
    source, target = RopeAttention(interleaved=True).eval(), RopeAttention(False).eval()
    x = torch.randn(2, 5, 16)
    result = WeightMapper(source, target, dummy_input=x).suggest_mapping()
    q = result.pair("q.weight")
    assert q.transform.name == "rope_permute"
    assert q.transform.params == {"head_dim": 8, "to": "rotate_half"}
    # both layouts were read from forward passes: nothing assumed, and the pair says what showed it
    assert "assumed" not in q.note and "read from both forward passes" in q.note
    assert result.pair("v.weight").transform.is_identity
    target.load_state_dict(result.convert(source.state_dict()), strict=True)
    torch.testing.assert_close(target(x), source(x), rtol=1e-5, atol=1e-5)
