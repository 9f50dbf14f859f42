"""Module paths read once per distinct prefix, or once per chain of numbered siblings, give what
reading each path on its own gives."""

from __future__ import annotations

import torch

from weightmapper.conventions.singletons import singleton_words
from weightmapper.engine.evidence import KIND_WORDS, STACK_WORDS, side_role_labels
from weightmapper.engine.evidence import _labels_of as labels_of
from weightmapper.engine.path_fold import fold_paths, group_words, ordinal_free
from weightmapper.engine.side import Side, prepare_side
from weightmapper.inventory import Inventory
from weightmapper.roles import SideRoles

PATHS = [
    *(f"encoder.layers.{i}.attention.q" for i in range(3)),  # a chain of numbers
    *(f"decoder.blocks.{c}.mlp" for c in "abc"),  # a chain of letters
    *(f"decoder.blocks.{i}.mlp" for i in range(2)),  # numbers beside those letters
    *(f"blk{i}.head" for i in (1, 2)),
    "blk#.head",  # a literal '#' where the chain has its numbers
    "classifier",
    "ln_f",
]
"""Module paths whose chains of numbered siblings differ only in components that are no word."""


def _side(paths: list[str]) -> Side:
    keys = [f"{p}.weight" for p in paths] + ["cls_token"]  # and a tensor of the root module
    return prepare_side(Inventory.from_state_dict({k: torch.zeros(2) for k in keys}))


def test_each_prefix_is_read_once_from_its_parent() -> None:
    calls: list[str] = []

    def step(parent: tuple[str, ...], path: str, own: str) -> tuple[str, ...]:
        calls.append(path)
        return (*parent, own)

    values = fold_paths(["a.0.x", "a.0.y", "a.1.x", "a.0.x"], step, ())
    assert sorted(calls) == ["a", "a.0", "a.0.x", "a.0.y", "a.1", "a.1.x"]
    assert values["a.1.x"] == ("a", "1", "x") and values[""] == ()


def test_role_labels_of_a_side_are_those_of_each_key() -> None:
    side = _side(PATHS)
    assert (side.group_chain >= 0).sum() >= 8  # the chains are shared, not read path by path
    roles = SideRoles(
        roles={"decoder.blocks.a.mlp.weight": "attn.q"}, stacks={"blk1.head.weight": "encoder"}
    )
    codes, labels = side_role_labels(side, roles)
    for n, key in enumerate(side.keys):
        assert labels[codes[n]] == labels_of(key, roles), key
    assert labels[codes[side.index["decoder.blocks.1.mlp.weight"]]] == ("decoder", None, "mlp")


def test_singleton_words_of_a_side_are_those_of_each_path() -> None:
    words = singleton_words()
    side = _side(PATHS)

    def step(parent: str | None, path: str, own: str) -> str | None:
        return words.component_role(own, first=own == path) or parent

    code, values = group_words(side, step, None, (*words.anywhere, *words.top))
    for g, path in enumerate(side.group_paths):
        if path:  # a root tensor names itself, not its module
            assert values[code[g]] == words.role_of(f"{path}.weight"), path
    assert values[code[side.group_paths.index("classifier")]] == "head.cls"


def test_a_vocabulary_naming_ordinal_components_reads_every_path() -> None:
    side = _side(PATHS)
    vocabulary = {"a": "first", "blk1": "one"}  # words a chain of siblings replaces
    assert not ordinal_free(vocabulary) and ordinal_free((*KIND_WORDS, *STACK_WORDS))

    def step(parent: str, path: str, own: str) -> str:
        return vocabulary.get(own, parent)

    code, values = group_words(side, step, "", vocabulary)
    got = {path: values[code[g]] for g, path in enumerate(side.group_paths)}
    assert got["decoder.blocks.a.mlp"] == "first" and got["decoder.blocks.b.mlp"] == ""
    assert got["blk1.head"] == "one" and got["blk2.head"] == ""
