"""Rule export: few rules, exact reproduction, and every format usable as its loader expects."""

from __future__ import annotations

import functools
import re

import pytest

from weightmapper.errors import MappingError
from weightmapper.result import MappingResult, MatchedPair, MultiPair, UnmatchedKey, UnmatchedReason
from weightmapper.rules import (
    FORMATS,
    apply_rules_sequentially,
    compress_mapping,
    format_rules,
    verify_rules,
)
from weightmapper.transforms import TransformSpec

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


@pytest.mark.integration  # builds HF models (imports most of transformers)
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


@pytest.mark.integration  # builds HF models (imports most of transformers)
def test_python_export_runs_and_renames_like_the_mapping() -> None:
    mapping, src, _ = _bert_distilbert(3)
    text = format_rules(compress_mapping(mapping, source_keys=src), "python")
    namespace: dict = {}
    exec(compile(text, "rules.py", "exec"), namespace)  # the text we generated ourselves
    assert {k: namespace["rename"](k) for k in src} == {k: mapping.get(k) for k in src}
    state = {k: i for i, k in enumerate(src)}
    renamed = namespace["rename_state_dict"](state)
    assert set(renamed) == set(mapping.values())


@pytest.mark.integration  # builds HF models (imports most of transformers)
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


@pytest.mark.integration  # builds HF models (imports most of transformers)
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


@pytest.mark.integration  # builds HF models (imports most of transformers)
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


def test_deeper_source_keeps_extra_layers_out_of_the_rules() -> None:
    # A 6-layer source onto a 4-layer target: layers 4 and 5 stay unmatched.
    src = [f"h.{i}.mlp.{n}" for i in range(6) for n in ("weight", "bias")]
    mapping = {k: k.replace("h.", "blocks.", 1) for k in src if int(k.split(".")[1]) < 4}
    rules = compress_mapping(mapping, source_keys=src)
    assert rules.verified, rules.problems
    assert len(rules.rules) == 1
    assert rules.apply("h.5.mlp.weight") is None
    assert rules.rules[0].pattern == r"h\.(0|1|2|3)\.(.+)"


def test_two_layer_indices_are_lifted_and_expanded_for_transformers() -> None:
    src = [f"stages.{s}.blocks.{b}.conv.weight" for s in range(3) for b in range(4)]
    mapping = {k: re.sub(r"stages\.(\d+)\.blocks\.(\d+)", r"layers.\2.stage.\1", k) for k in src}
    rules = compress_mapping(mapping)
    assert rules.verified and len(rules.rules) == 1
    assert rules.rules[0].pattern == r"stages\.(\d+)\.blocks\.(\d+)\.(.+)"
    assert rules.rules[0].replacement == r"layers.\2.stage.\1.\3"
    hf = format_rules(rules, "hf-key-mapping")
    namespace: dict = {}
    exec(hf, namespace)
    assert len(namespace["KEY_MAPPING"]) == 4  # one entry per block: transformers fills only \1
    for key in src:
        out = key
        for p, r in namespace["KEY_MAPPING"].items():
            if m := re.search(p, out):
                out = out.replace(m.group(0), r.replace("\\1", m.group(1)), 1)
        assert out == mapping[key]


def test_a_shared_tail_becomes_one_group() -> None:
    src = [f"stages.{s}.blocks.{b}.conv.weight" for s in range(3) for b in range(4)]
    mapping = {k: k.replace("stages.", "layers.").replace(".blocks.", ".sub.") for k in src}
    rules = compress_mapping(mapping)
    assert [(r.pattern, r.replacement) for r in rules.rules] == [
        (r"stages\.(\d+)\.blocks\.(.+)", r"layers.\1.sub.\2")
    ]


def test_irregular_pairs_become_literal_rules() -> None:
    mapping = {
        "layer1.0.weight": "stages.0.blocks.0.weight",  # stage index shifted: no template
        "fc.weight": "head.linear.weight",
        **{f"blocks.{i}.w": f"layers.{i}.w" for i in range(5)},
    }
    rules = compress_mapping(mapping)
    assert rules.verified
    literal = [r for r in rules.rules if r.literal]
    assert {r.keys[0] for r in literal} == {"layer1.0.weight", "fc.weight"}
    assert len(rules.rules) == 3


def test_transforms_are_named_and_splits_reported_as_unexpressed() -> None:
    t = TransformSpec("transpose", {"dim0": 0, "dim1": 1})
    pairs = [
        MatchedPair(f"h.{i}.c_fc.weight", f"l.{i}.fc.weight", 0.9, transform=t) for i in range(4)
    ]
    pairs += [MatchedPair(f"h.{i}.c_fc.bias", f"l.{i}.fc.bias", 0.9) for i in range(4)]
    split = MultiPair(
        ("h.0.c_attn.weight",),
        ("l.0.q.weight", "l.0.k.weight"),
        TransformSpec("split", {"dim": 1}),
        0.9,
    )
    result = MappingResult(
        pairs,
        [UnmatchedKey("h.0.c_fc.extra", "source", UnmatchedReason.NO_SHAPE_PARTNER)],
        multi=[split],
    )
    rules = compress_mapping(result)
    assert rules.verified
    assert len(rules.rules) == 2  # weights (transposed) and biases kept apart
    by_transform = {tuple(r.transforms): r for r in rules.rules}
    assert by_transform[("transpose",)].transforms == {"transpose": 4}
    assert rules.apply("h.0.c_fc.extra") is None
    assert rules.unexpressed[0][0] == "h.0.c_attn.weight"
    text = format_rules(rules, "regex")
    assert "needs transform transpose (4 key(s))" in text
    assert "Not expressible as renames" in text and "h.0.c_attn.weight" in text
    mixed = compress_mapping(MappingResult(pairs), split_by_transform=False)
    assert len(mixed.rules) == 1 and mixed.rules[0].transforms == {"transpose": 4}


def test_sequential_order_avoids_renaming_twice() -> None:
    # a → b and b → c: applied in turn, b must be renamed before a's output appears.
    mapping = {f"a.{i}.w": f"b.{i}.w" for i in range(3)} | {
        f"b.{i}.w": f"c.{i}.w" for i in range(3)
    }
    rules = compress_mapping(mapping)
    assert rules.verified, rules.problems
    for key, target in mapping.items():
        assert apply_rules_sequentially(rules.rules, key) == target


def test_unknown_format_and_bad_input_raise_our_errors() -> None:
    rules = compress_mapping({"a.w": "b.w"})
    with pytest.raises(MappingError, match="python, regex, hf-key-mapping, mmengine"):
        format_rules(rules, "yaml")
    with pytest.raises(MappingError, match="MappingResult"):
        compress_mapping(["a.w"])  # type: ignore[arg-type]
    assert set(FORMATS) == {"python", "regex", "hf-key-mapping", "mmengine"}
