"""Sorting many names at once gives what sorting them one key at a time gives."""

from __future__ import annotations

import random

from weightmapper.natural_sort import MAX_NUMBERS, natural_key, natural_order

_PARTS = ["layers", ".", "0", "1", "2", "01", "001", "10", "9", "attn", "a", "b", "_", "", "٣"]


def _name(rng: random.Random, parts: list[str]) -> str:
    return "".join(rng.choice(parts) for _ in range(rng.randint(0, 6)))


def _expected(texts: list[str]) -> list[int]:
    return sorted(range(len(texts)), key=lambda i: natural_key(texts[i]))


def test_natural_order_equals_sorting_by_natural_key() -> None:
    rng = random.Random(4)
    ascii_parts = [p for p in _PARTS if p.isascii()]
    for trial in range(400):
        # leading zeros and equal numbers tie and keep input order; one list in four holds
        # non-ASCII digits (read by natural_key alone)
        parts = _PARTS if trial % 4 == 0 else ascii_parts
        texts = [_name(rng, parts) for _ in range(rng.randint(0, 300))]
        assert natural_order(texts) == _expected(texts), texts


def test_natural_order_of_checkpoint_like_paths() -> None:
    rng = random.Random(5)
    texts = [
        f"model.layers.{rng.randint(0, 120)}.{rng.choice(['attn', 'mlp', 'norm1', 'norm2'])}"
        f".{rng.choice(['q_proj', 'k_proj', 'experts.' + str(rng.randint(0, 12))])}"
        for _ in range(3_000)
    ]
    texts += ["", "model", "model.layers.007.attn", "model.layers.7.attn", "10", "9"]
    rng.shuffle(texts)
    assert natural_order(texts) == _expected(texts)


def test_names_natural_order_cannot_read_as_rows_are_sorted_by_the_key() -> None:
    many = ".".join(["1"] * (MAX_NUMBERS + 1))
    texts = [f"b{i % 7}" for i in range(100)] + [many, "a\x00 2", "a\x01 1", "a 10"]
    for shift in range(3):
        texts = texts[shift:] + texts[:shift]
        assert natural_order(texts) == _expected(texts)
