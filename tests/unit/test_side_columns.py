"""A Side prepared once per distinct name, template and shape gives what the per-key rules give."""

from __future__ import annotations

import re
from dataclasses import replace
from itertools import pairwise

import numpy as np
from torch import nn

from weightmapper.conventions import load_conventions
from weightmapper.conventions.registry import (
    _decided_by_template,
    _regex,
    template_of,
    templates_of,
)
from weightmapper.engine.families import guess_families, guess_family
from weightmapper.engine.groups import STRUCTURE_LONE, promote_lone_pairs
from weightmapper.engine.names import distinct_codes, rank_index_rows
from weightmapper.engine.normalized import _instance_counts, _name_codes
from weightmapper.engine.side import (
    _linked,
    _numbered_siblings,
    _ordinal_shapes,
    first_differing_component,
    prepare_side,
)
from weightmapper.engine.state import MatchState
from weightmapper.inventory import Inventory
from weightmapper.settings import ScoreSettings

PATHS = [
    "",
    "embed",
    "layers.1",
    "layers.1.attn",
    "layers.1.attn.q_proj",
    "layers.10",
    "layers.2.norm1",
    "layers.2.norm2",
    "layers.2.mlp.fc1",
    "Mixed_5b.branch5x5_1",
    "Mixed_5b.branch5x5_2",
    "bn2",
    "conv1",
    "features.3.conv.0",
    "features.10.conv.0",
    "blöck.2.x",
    "blöck.3.x",
]


def _first_difference_by_parts(texts: list[str]) -> list[int]:
    out = []
    for a, b in pairwise(texts):
        k = next(
            (n for n, (x, y) in enumerate(zip(a.split("."), b.split("."), strict=False)) if x != y),
            -1,
        )
        out.append(k)
    return out


def _ordinal_by_parts(paths: list[str]) -> list[str]:
    return [".".join(re.sub(r"\d+$", "#", c) for c in p.split(".")) for p in paths]


def test_first_differing_component_is_the_first_unequal_dotted_part() -> None:
    assert first_differing_component(PATHS).tolist() == _first_difference_by_parts(PATHS)
    assert first_differing_component(["a.b", "a.b.c", "a.b", "a.bc", "a.b.c"]).tolist() == [
        -1,
        -1,
        1,
        1,
    ]
    assert first_differing_component(["x"]).tolist() == []


def test_ordinal_shapes_in_one_pass_equal_the_per_component_rule() -> None:
    assert _ordinal_shapes(PATHS) == _ordinal_by_parts(PATHS)
    # one-letter siblings in a consecutive run are ordinals too; others are names
    lettered = ["f.a.conv", "f.b.conv", "attn.q", "attn.k"]
    assert _ordinal_shapes(lettered) == ["f.#.conv", "f.#.conv", "attn.q", "attn.k"]


def test_linked_and_chains_follow_the_first_differing_part() -> None:
    shapes = _ordinal_shapes(PATHS)
    linked = _linked(PATHS, shapes).tolist()
    split = [s.split(".") for s in shapes]
    for n, k in enumerate(_first_difference_by_parts(PATHS), start=1):
        assert linked[n] == (k >= 0 and split[n - 1][k] == split[n][k])
    chains = _numbered_siblings(shapes).tolist()
    assert chains[PATHS.index("bn2")] == -1  # its shape is its own
    assert chains[PATHS.index("layers.2.norm1")] == chains[PATHS.index("layers.2.norm2")] >= 0


def test_ranked_rows_and_primary_slot_per_template() -> None:
    codes = np.array([0, 1, 0, 0, 2, 2, 3, 3])
    indices = [(5, 2), (), (3, 2), (5, 7), (1,), (1, 2), (), (4,)]
    ranked, primary = rank_index_rows(codes, indices)
    assert ranked == [(1, 0), (), (0, 0), (1, 1), (0,), (0, 0), (), (0,)]
    # the first slot with the most distinct values; none for an empty first tuple
    assert primary.tolist() == [1, -1, 0, 1, 0, 0, -1, -1]


def test_distinct_codes_number_items_in_order_of_first_appearance() -> None:
    codes, distinct = distinct_codes(["b", "a", "b", "c"])
    assert codes.tolist() == [0, 1, 0, 2] and distinct == ["b", "a", "c"]


def test_families_guessed_for_all_groups_at_once_match_one_by_one() -> None:
    groups = [
        {"weight": (4, 3, 3, 3), "bias": (4,)},
        {"weight": (4,), "running_mean": (4,)},
        {"weight": (4, 3)},
        {"kernel": (3, 3, 4, 8)},
        {"weight": (4, 3), "kernel": (3, 3, 3)},
        {"scale": (4,)},
    ]
    group = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    code, names = distinct_codes([n for g in groups for n in g])
    ndim = np.array([len(s) for g in groups for s in g.values()])
    assert guess_families(group, code, names, ndim, len(groups)) == [
        guess_family(g) for g in groups
    ]


def test_templates_of_many_keys_equal_one_by_one() -> None:
    keys = ["a.1.2.b", "12", "", "x.12b", "x.1", "1.x", "a..3..b", "layer3.0.conv1.weight"]
    assert templates_of(keys) == [template_of(k) for k in keys]
    assert templates_of([*keys, "odd\n1"]) == [template_of(k) for k in [*keys, "odd\n1"]]


def test_rules_decided_by_templates_fit_the_same_keys_as_their_raw_patterns() -> None:
    keys = [
        "model.layers.3.self_attn.q_proj.weight",
        "model.layers.12.mlp.up_proj.bias",
        "layer2.1.downsample.0.weight",
        "layer2.1.downsample.1.weight",
        "encoder.block.0.layer.0.SelfAttention.q.weight",
        "h.7.attn.c_attn.weight",
    ]
    decided = 0
    for convention in load_conventions().conventions.values():
        for rule in convention.rules:
            if not rule.on_templates:
                continue
            decided += 1
            for key in keys:
                assert bool(rule.template.fullmatch(template_of(key))) == bool(
                    rule.raw.fullmatch(key)
                ), (rule.pattern, key)
    assert decided

    def decided(pattern: str) -> bool:
        return _decided_by_template(
            pattern, _regex(pattern, [""], template=True), _regex(pattern, [""], template=False)
        )

    assert decided("x.{i}.y") and decided("layer{s}.{i}.conv1")
    assert not decided("x.{i}.0")  # a literal number: its template hides which
    assert not decided("x.{i}{j}")  # two indices may split one number


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layers = nn.ModuleList(
            nn.ModuleDict({"norm": nn.LayerNorm(4), "proj": nn.Linear(4, 4)}) for _ in range(3)
        )
        self.head = nn.Linear(4, 10)
        self.bn = nn.BatchNorm1d(4)


def test_relations_of_many_pairs_equal_each_pair_alone() -> None:
    side = prepare_side(Inventory.from_module(_Tiny()))
    st = MatchState(side, side, ScoreSettings())
    n = len(side)
    rows = np.repeat(np.arange(n), n)
    cols = np.tile(np.arange(n), n)
    rels, fits = st.relations(rows, cols)
    for i, j, rel, fit in zip(rows.tolist(), cols.tolist(), rels, fits, strict=True):
        assert rel == st.compat(i, j) and fit == (rel is not None)


def test_name_codes_are_equal_exactly_when_normalized_names_are() -> None:
    a = prepare_side(Inventory.from_module(_Tiny()))
    sd = {k.replace("layers.", "blocks."): v for k, v in _Tiny().state_dict().items()}
    b = prepare_side(Inventory.from_state_dict(sd))

    def name(side, k):  # type: ignore[no-untyped-def]
        return (" ".join(sorted(side.tokens[k].split())), side.ranked[k])

    s_code, t_code = _name_codes(a, a.token_codes, b, b.token_codes)
    for i in range(len(a)):
        for j in range(len(b)):
            assert (s_code[i] == t_code[j]) == (name(a, i) == name(b, j))
    counts = _instance_counts(a, a.token_codes)
    for i in range(len(a)):
        same = {a.ranked[k] for k in range(len(a)) if a.tokens[k] == a.tokens[i]}
        assert counts[i] == len(same)


def test_a_side_codes_its_tokens_once_and_a_copy_anew() -> None:
    side = prepare_side(Inventory.from_module(_Tiny()))
    assert side.token_codes is side.token_codes
    codes, distinct = side.token_codes
    assert [distinct[c] for c in codes.tolist()] == side.tokens
    other = replace(side, tokens=["x"] * len(side))
    assert other.token_codes[1] == ["x"]
    parents = [p.rpartition(".")[0] for p in side.group_paths]
    for g, h in pairwise(range(len(parents))):
        assert (side.group_parent[g] == side.group_parent[h]) == (parents[g] == parents[h])
    assert side.group_sibrank == [parents[:g].count(p) for g, p in enumerate(parents)]


def _promote_one_by_one(st: MatchState) -> None:
    """The per-key form of ``promote_lone_pairs`` (the reference)."""
    s_by: dict[tuple[int, ...], list[int]] = {}
    t_by: dict[tuple[int, ...], list[int]] = {}
    for i in np.nonzero(st.s_scorable)[0].tolist():
        s_by.setdefault(st.s.bucket[i], []).append(i)
    for j in np.nonzero(st.t_scorable)[0].tolist():
        t_by.setdefault(st.t.bucket[j], []).append(j)
    for bucket, rows in s_by.items():
        cols = t_by.get(bucket, [])
        if len(rows) != len(cols) or len(rows) < 2:
            continue
        if any(st.s_match[i] < 0 or int(st.s_match[i]) not in set(cols) for i in rows):
            continue
        weak = [i for i in rows if st.rec[i][3] is not None and st.rec[i][3] < STRUCTURE_LONE]
        if len(weak) == 1:
            rel, stage, group, _structure, follows = st.rec[weak[0]]
            st.rec[weak[0]] = (rel, stage, group, STRUCTURE_LONE, follows)


def test_lone_pairs_promoted_by_bucket_counts_as_one_by_one() -> None:
    side = prepare_side(Inventory.from_module(_Tiny()))
    rng = np.random.default_rng(0)
    promoted = 0
    for _ in range(20):
        states = [MatchState(side, side, ScoreSettings()) for _ in range(2)]
        order = rng.permutation(len(side))
        structure = rng.choice([None, 0.5, 0.85, 1.0], size=len(side))
        for i in range(len(side)):
            if rng.random() < 0.1:
                continue  # left open
            j = int(order[i]) if rng.random() < 0.1 else i  # now and then across buckets
            for st in states:
                st.pair(i, j, st.compat(i, i), "test", False, structure[i])
        before = dict(states[0].rec)
        promote_lone_pairs(states[0])
        _promote_one_by_one(states[1])
        assert states[0].rec == states[1].rec
        promoted += states[0].rec != before
    assert promoted  # the draws include buckets with one weak pair left
