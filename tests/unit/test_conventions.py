"""Naming conventions as data: files parse, real models are recognised, roles agree across
libraries on the zoo's ground truth, and bad files say every problem at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from weightmapper.conventions import ROLES, ConventionSet, load_conventions, parse_convention
from weightmapper.errors import ConfigError
from zoo import cases

CONVENTIONS = load_conventions()

_LM = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 32,
}

# transformers class, config class, config fields, the convention that must be recognised
HF_MODELS: list[tuple[str, str, dict[str, Any], str]] = [
    ("LlamaForCausalLM", "LlamaConfig", {**_LM, "num_key_value_heads": 1}, "hf-llama"),
    (
        "GemmaForCausalLM",
        "GemmaConfig",
        {**_LM, "head_dim": 8, "num_key_value_heads": 1},
        "hf-gemma",
    ),
    ("MistralForCausalLM", "MistralConfig", _LM, "hf-llama"),
    ("Qwen2ForCausalLM", "Qwen2Config", _LM, "hf-llama"),
    ("Phi3ForCausalLM", "Phi3Config", {**_LM, "pad_token_id": 0}, "hf-phi3"),
    ("PhiForCausalLM", "PhiConfig", _LM, "hf-phi"),
    ("MixtralForCausalLM", "MixtralConfig", {**_LM, "num_local_experts": 2}, "hf-mixtral"),
    (
        "GPT2LMHeadModel",
        "GPT2Config",
        {"n_embd": 16, "n_layer": 2, "n_head": 2, "vocab_size": 32},
        "hf-gpt2",
    ),
    ("GPTNeoXForCausalLM", "GPTNeoXConfig", _LM, "hf-gpt-neox"),
    (
        "FalconForCausalLM",
        "FalconConfig",
        {"hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2, "vocab_size": 32},
        "hf-falcon",
    ),
    (
        "OPTForCausalLM",
        "OPTConfig",
        {
            "hidden_size": 16,
            "ffn_dim": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "vocab_size": 32,
            "word_embed_proj_dim": 16,
        },
        "hf-opt",
    ),
    ("BertForMaskedLM", "BertConfig", _LM, "hf-bert"),
    ("RobertaForMaskedLM", "RobertaConfig", _LM, "hf-bert"),
    (
        "T5ForConditionalGeneration",
        "T5Config",
        {"d_model": 16, "d_ff": 32, "num_layers": 2, "num_heads": 2, "d_kv": 8, "vocab_size": 32},
        "hf-t5",
    ),
    (
        "ViTForImageClassification",
        "ViTConfig",
        {
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
            "num_labels": 3,
        },
        "hf-vit",
    ),
]


def _hf_keys(model: str, config: str, fields: dict[str, Any]) -> list[str]:
    transformers = pytest.importorskip("transformers")
    with torch.device("meta"):
        built = getattr(transformers, model)(getattr(transformers, config)(**fields))
    return list(built.state_dict())


def test_builtin_conventions_parse_and_use_the_shared_vocabulary() -> None:
    assert len(CONVENTIONS) >= 18
    for c in CONVENTIONS.conventions.values():
        assert c.rules, c.name
        assert {r.role for r in c.rules} <= ROLES, c.name


@pytest.mark.parametrize(
    ("model", "config", "fields", "expected"), HF_MODELS, ids=[m[0] for m in HF_MODELS]
)
def test_transformers_models_are_recognised_with_every_key_explained(
    model: str, config: str, fields: dict[str, Any], expected: str
) -> None:
    keys = _hf_keys(model, config, fields)
    roles, best = CONVENTIONS.roles(keys, architectures=[model])
    assert [f.convention.name for f in best] == [expected]
    assert best[0].coverage == 1.0, sorted(set(keys) - set(roles))[:5]
    # without the config's class name, the names alone still point at the convention
    assert expected in [f.convention.name for f in CONVENTIONS.roles(keys)[1]]


def test_names_alone_cannot_tell_llama_from_gemma_and_the_tie_is_reported() -> None:
    keys = _hf_keys("LlamaForCausalLM", "LlamaConfig", _LM)
    _, best = CONVENTIONS.roles(keys)
    assert {f.convention.name for f in best} == {"hf-llama", "hf-gemma"}
    assert {f.convention.layout.norm_offset for f in best} == {False, True}


def test_roles_agree_across_libraries_on_the_zoo_ground_truth() -> None:
    """Every true pair whose two sides follow known conventions has one role on both sides."""
    checked, mismatched = [], []
    for case in cases(split=None):
        if not case.available():
            continue
        with torch.device("meta"):
            source, target = case.build_source(), case.build_target()
        src_roles, _ = CONVENTIONS.roles(list(source.state_dict()))
        tgt_roles, _ = CONVENTIONS.roles(list(target.state_dict()))
        pairs = [(s, t) for s, t in case.ground_truth.items() if s in src_roles and t in tgt_roles]
        if not pairs:
            continue
        checked.append(case.name)
        mismatched += [
            (case.name, s, t)
            for s, t in pairs
            if (src_roles[s].role, src_roles[s].stack) != (tgt_roles[t].role, tgt_roles[t].stack)
        ]
    assert len(checked) >= 10, checked
    assert not mismatched, mismatched[:5]


def test_patterns_index_inside_words_literal_numbers_and_optional_parts() -> None:
    resnet = CONVENTIONS.match(
        CONVENTIONS["torchvision-resnet"],
        ["layer3.1.conv2.weight", "layer3.1.downsample.0.weight", "fc.bias"],
    )
    assert resnet["layer3.1.conv2.weight"].role == "block.conv2"
    assert resnet["layer3.1.conv2.weight"].block == 1
    assert resnet["layer3.1.downsample.0.weight"].role == "block.shortcut.conv"
    t5 = CONVENTIONS.match(
        CONVENTIONS["hf-t5"],
        ["decoder.block.4.layer.1.layer_norm.weight", "decoder.block.4.layer.2.layer_norm.weight"],
    )
    assert [r.role for r in t5.values()] == ["norm.xattn", "norm.mlp"]
    assert {r.stack for r in t5.values()} == {"decoder"}
    llama = CONVENTIONS["hf-llama"]
    for key in ("model.layers.0.mlp.up_proj.weight", "layers.0.mlp.up_proj.weight"):
        assert CONVENTIONS.match(llama, [key])[key].role == "mlp.up"
    assert not CONVENTIONS.match(llama, ["encoder.layers.0.mlp.up_proj.weight"])


def test_a_bad_file_reports_every_problem_at_once() -> None:
    doc = {
        "schema": 1,
        "name": "Bad Name",
        "layout": {"rope": "sideways", "colour": "red"},
        "roles": {"decoder": {"a.b": "attn.sideways"}, "galaxy": {"c": "attn.q"}},
    }
    with pytest.raises(ConfigError) as info:
        parse_convention(doc, "mine.yaml")
    problems = "\n".join(info.value.problems)
    for fragment in ("Bad Name", "sideways", "colour", "attn.sideways", "galaxy"):
        assert fragment in problems
    assert len(info.value.problems) == 5


def test_user_files_add_and_replace_conventions(tmp_path: Path) -> None:
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        "schema: 1\nname: hf-llama\nlayout: {rope: interleaved}\n"
        "roles:\n  decoder:\n    'blk.{i}.attn_q': attn.q\n    'blk.{i}.x': x.custom\n"
    )
    merged = load_conventions([mine])
    assert len(merged) == len(CONVENTIONS)
    assert merged["hf-llama"].layout.rope == "interleaved"
    assert (
        merged.match(merged["hf-llama"], ["blk.3.attn_q.weight"])["blk.3.attn_q.weight"].block == 3
    )
    with pytest.raises(ConfigError, match="cannot be read"):
        load_conventions([tmp_path / "missing.yaml"])
    with pytest.raises(ConfigError, match="no convention named"):
        merged["nope"]


def test_matching_costs_one_search_per_template() -> None:
    keys = [f"model.layers.{i}.mlp.{p}_proj.weight" for i in range(3000) for p in ("up", "down")]
    roles, best = ConventionSet([CONVENTIONS["hf-llama"]]).roles(keys)
    assert len(roles) == len(keys)
    assert roles["model.layers.2999.mlp.down_proj.weight"].block == 2999
    assert best[0].coverage == 1.0


def _torchtune_keys(*, biases: bool) -> list[str]:
    keys = ["tok_embeddings.weight", "norm.scale", "output.weight"]
    for i in range(2):
        for p in ("q_proj", "k_proj", "v_proj"):
            keys.append(f"layers.{i}.attn.{p}.weight")
            if biases:
                keys.append(f"layers.{i}.attn.{p}.bias")
        keys += [f"layers.{i}.attn.output_proj.weight", f"layers.{i}.sa_norm.scale"]
        keys += [f"layers.{i}.mlp_norm.scale"]
        keys += [f"layers.{i}.mlp.{w}.weight" for w in ("w1", "w2", "w3")]
    return keys


def test_required_tensors_tell_apart_conventions_that_name_everything_alike() -> None:
    # torchtune names Llama and Qwen2 alike; Qwen2's q/k/v biases say which one it is,
    # and with it the RoPE layout (halves, not interleaved pairs).
    _, best = CONVENTIONS.roles(_torchtune_keys(biases=True))
    assert [f.convention.name for f in best] == ["torchtune-qwen2"]
    assert best[0].convention.layout.rope == "rotate_half"
    _, best = CONVENTIONS.roles(_torchtune_keys(biases=False))
    assert [f.convention.name for f in best] == ["torchtune-llama"]
    assert best[0].convention.layout.rope == "interleaved"


def test_required_patterns_are_validated_with_the_rest() -> None:
    doc = {"schema": 1, "name": "x", "requires": "a.b", "roles": {"main": {"a": "head.lm"}}}
    with pytest.raises(ConfigError, match="requires must be a list"):
        parse_convention(doc)
    doc["requires"] = ["a.bias"]
    conv = parse_convention(doc)
    assert conv.applies_to(["a.weight", "a.bias"]) and not conv.applies_to(["a.weight"])


def test_transformers_4_mixtral_experts_and_router_have_roles() -> None:
    keys = ["model.embed_tokens.weight", "model.layers.0.block_sparse_moe.gate.weight"]
    keys += [
        f"model.layers.0.block_sparse_moe.experts.{e}.w{k}.weight"
        for e in (0, 1)
        for k in (1, 2, 3)
    ]
    roles, best = CONVENTIONS.roles(keys)
    assert best[0].convention.name == "hf-mixtral-v4"
    assert roles["model.layers.0.block_sparse_moe.gate.weight"].role == "moe.router"
    assert roles["model.layers.0.block_sparse_moe.experts.1.w3.weight"].role == "moe.up"
