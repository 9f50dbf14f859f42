"""Rule export on a real mapping: HF BERT → HF DistilBERT (transformers' own renames)."""

from __future__ import annotations

import functools
import re

import pytest

from weightmapper.rules import (
    compress_mapping,
    format_rules,
    verify_rules,
)

pytestmark = pytest.mark.integration  # builds HF models (imports most of transformers)

# HF BERT → HF DistilBERT: the per-layer renames of transformers' own conversion.
_BERT_TO_DISTIL = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}


@functools.lru_cache(maxsize=4)
def _bert_distilbert(n_layers: int = 19) -> tuple[dict[str, str], list[str], list[str]]:
    """Real HF models from small configs → (ground-truth mapping, BERT keys, DistilBERT keys)."""
    transformers = pytest.importorskip("transformers")
    bert = transformers.BertModel(
        transformers.BertConfig(
            num_hidden_layers=n_layers, hidden_size=16, num_attention_heads=2,
            intermediate_size=24, vocab_size=50, max_position_embeddings=32,
        )
    )  # fmt: skip
    distil = transformers.DistilBertModel(
        transformers.DistilBertConfig(
            n_layers=n_layers, dim=16, n_heads=2, hidden_dim=24, vocab_size=50,
            max_position_embeddings=32,
        )
    )  # fmt: skip
    src, tgt = list(bert.state_dict()), list(distil.state_dict())
    mapping = {}
    for key in src:
        if key.startswith("embeddings.") and key in tgt:
            mapping[key] = key
        elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)\.(weight|bias)", key):
            mapping[key] = f"transformer.layer.{m[1]}.{_BERT_TO_DISTIL[m[2]]}.{m[3]}"
    assert set(mapping.values()) <= set(tgt)
    return mapping, src, tgt


def test_rules_reproduce_a_300_key_real_mapping_with_few_rules() -> None:
    mapping, src, _ = _bert_distilbert()
    assert len(mapping) >= 300
    rules = compress_mapping(mapping, source_keys=src)
    assert rules.verified, rules.problems
    assert len(rules.rules) <= 12
    assert rules.ratio >= 25  # 308 keys / 11 rules = 28.0
    for key in src:  # unmatched BERT keys (token types, pooler) are left alone
        assert rules.apply(key) == mapping.get(key)
    assert not verify_rules(rules.rules, mapping, src)


def test_python_export_runs_and_renames_like_the_mapping() -> None:
    mapping, src, _ = _bert_distilbert(3)
    text = format_rules(compress_mapping(mapping, source_keys=src), "python")
    namespace: dict = {}
    exec(compile(text, "rules.py", "exec"), namespace)  # the text we generated ourselves
    assert {k: namespace["rename"](k) for k in src} == {k: mapping.get(k) for k in src}
    state = {k: i for i, k in enumerate(src)}
    renamed = namespace["rename_state_dict"](state)
    assert set(renamed) == set(mapping.values())


def test_regex_export_lines_apply_in_order() -> None:
    mapping, src, _ = _bert_distilbert(3)
    text = format_rules(compress_mapping(mapping, source_keys=src), "regex")
    lines = [line.split(" => ") for line in text.splitlines() if not line.startswith("#")]
    assert len(lines) == 11

    def rename(key: str) -> str | None:
        for pattern, repl in lines:
            if m := re.fullmatch(pattern, key):
                return m.expand(repl)
        return None

    assert {k: rename(k) for k in src} == {k: mapping.get(k) for k in src}


def test_hf_key_mapping_export_works_with_transformers_own_renaming() -> None:
    loading = pytest.importorskip("transformers.core_model_loading")
    mapping, src, _ = _bert_distilbert(4)
    text = format_rules(compress_mapping(mapping, source_keys=src), "hf-key-mapping")
    namespace: dict = {}
    exec(text, namespace)
    key_mapping = namespace["KEY_MAPPING"]
    assert len(key_mapping) == 8  # embeddings keep their names: no rule needed
    renamings = [
        loading.WeightRenaming(source_patterns=p, target_patterns=r) for p, r in key_mapping.items()
    ]
    for key in src:
        renamed, _ = loading.rename_source_key(key, renamings, [])
        assert renamed == mapping.get(key, key)


def test_mmengine_export_survives_sequential_re_sub() -> None:
    mapping, src, _ = _bert_distilbert(3)
    text = format_rules(compress_mapping(mapping, source_keys=src), "mmengine")
    namespace: dict = {}
    exec(text, namespace)
    state = dict.fromkeys(src, 0)
    for p, r in namespace["revise_keys"]:  # what mmengine's load_checkpoint does
        state = {re.sub(p, r, k): v for k, v in state.items()}
    expected = {mapping.get(k, k) for k in src}
    assert set(state) == expected
