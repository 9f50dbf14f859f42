"""A real Hugging Face save (tiny GPT-2, sharded safetensors) reads back and reproduces outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weightmapper.checkpoint import open_checkpoint
from weightmapper.doctor import inspect_checkpoint

transformers = pytest.importorskip("transformers")


@pytest.mark.integration
def test_sharded_hf_gpt2_roundtrip(tmp_path: Path) -> None:
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16, tie_word_embeddings=True
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    model.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()

    table = open_checkpoint(tmp_path)
    assert table.format == "safetensors-sharded"
    assert len(table.files) > 1
    expected = model.state_dict()
    # the tied head may be left out of the files by transformers; nothing else may be
    assert set(table) <= set(expected)
    assert set(expected) - set(table) <= {"lm_head.weight"}
    for name, info in table.items():
        assert info.shape == tuple(expected[name].shape)

    fresh = transformers.GPT2LMHeadModel(config).eval()
    fresh.load_state_dict(table.to_state_dict(), strict=False)
    fresh.tie_weights()
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits)

    report = inspect_checkpoint(tmp_path)
    assert report["tensor_count"] == len(table)
    assert report["tree"]["children"][0]["name"] == "transformer"
