"""Names: tokens, synonyms, lifted layer indices, prefixes and similarity matrices."""

from __future__ import annotations

import numpy as np

from weightmapper.engine.names import (
    TokenSpace,
    common_prefix,
    dense_rank_indices,
    local_role,
    similarity_matrix,
    split_module,
    split_name,
    tokenize,
)


def test_tokenize_splits_separators_camel_case_and_digits() -> None:
    assert tokenize("encoder.LayerNorm_2") == ["encoder", "layer", "norm", "2"]
    assert tokenize("blocks.3.attn") == ["blocks", "3", "attn"]


def test_synonyms_fold_across_libraries() -> None:
    hf = split_name("model.layers.3.self_attn.q_proj.weight")
    meta = split_name("layers.3.attention.wq.weight")
    bert = split_name("encoder.layer.3.attention.self.query.weight")
    for parts in (hf, meta, bert):
        assert {"attn", "q", "weight"} <= set(parts.tokens)
        assert parts.indices == (3,)
    assert split_name("bn1.gamma").tokens == ("norm", "1", "weight")
    assert split_name("h.0.mlp.c_fc.kernel").tokens[-1] == "weight"


def test_container_digits_are_indices_but_module_digits_are_names() -> None:
    a = split_name("layer3.0.conv1.weight")
    assert a.indices == (3, 0) and "1" in a.tokens
    b = split_name("res4.0.conv1.norm.weight")
    assert b.indices == (4, 0) and "1" in b.tokens  # conv1 here is a name, not a level


def test_flattened_names_are_unflattened() -> None:
    assert (
        split_name("layer1_0_conv1.weight").indices == split_name("layer1.0.conv1.weight").indices
    )


def test_block_norms_by_position() -> None:
    # Meta's attention_norm sits where timm's norm1 does.
    assert split_name("layers.0.attention_norm.weight").tokens == ("block", "1", "norm", "weight")
    assert set(split_name("layers.0.norm1.weight").tokens) == {"block", "1", "norm", "weight"}
    assert "2" in split_name("layers.0.ffn_norm.weight").tokens
    assert "2" in split_name("model.layers.0.post_attention_layernorm.weight").tokens


def test_local_role_and_prefix() -> None:
    assert local_role("moving_variance") == "running var"
    assert local_role("beta") == "bias"
    assert common_prefix(["module.a.b", "module.c"]) == "module."
    assert common_prefix(["a.b", "c.d"]) == ""
    assert common_prefix(["m.a", "m"]) == ""  # never swallow a whole module path


def test_dense_rank_makes_one_and_zero_based_numbering_equal() -> None:
    tpl = ["block #"] * 3
    assert dense_rank_indices(tpl, [(1,), (2,), (3,)]) == [(0,), (1,), (2,)]
    assert dense_rank_indices(tpl, [(0,), (1,), (2,)]) == [(0,), (1,), (2,)]


def test_similarity_matrices() -> None:
    m = similarity_matrix(["norm 1", "attn q"], ["norm 1", "attn k", "attn q"])
    assert m.shape == (2, 3) and m[0, 0] == 1.0 and m[1, 2] == 1.0
    space = TokenSpace(["block attn q weight", "block attn k weight"], ["block attn q weight"])
    sim = space.matrix(np.array([0, 1]), np.array([0]))
    # Rare tokens (q, k) decide; shared boilerplate (block, weight) weighs little.
    assert sim[0, 0] > 0.99 and sim[1, 0] < 0.8
    assert np.allclose(space.pairwise(np.array([0]), np.array([0])), [1.0], atol=1e-6)


def test_module_reading_is_shared_by_parents_of_one_template_only() -> None:
    # Two parents that differ in their numbers only share one reading of the module's own
    # name; the indices stay each path's own.
    a, b = (
        split_module("model.layers.3.self_attn.proj"),
        split_module("model.layers.7.self_attn.proj"),
    )
    assert (
        (a.tokens, a.template)
        == (b.tokens, b.template)
        == (("block", "attn", "out"), "block # attn out")
    )
    assert (a.indices, b.indices) == ((3,), (7,))
    # ``output`` is the head at the top only, not under a parent that reads as nothing.
    assert split_module("output").tokens == ("head",)
    assert split_module("model.output").tokens == ("out",)
    assert split_module("features.3") == split_module("features.3")
    assert split_module("features.3").indices == (3,)
    assert split_module("features.3").template == "features #"
