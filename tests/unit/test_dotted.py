"""Number components found over many names at once equal the per-name regular expression."""

from __future__ import annotations

import re

import numpy as np

from weightmapper.conventions.registry import template_of, templates_of
from weightmapper.dotted import MAX_DIGITS, number_components

ALPHABET = [*"ab.1.02.9_x\n", "..", "007", "19"]


def _by_regex(text: str, separators: str) -> tuple[str, list[int]]:
    sep = re.escape(separators)
    pattern = re.compile(rf"(?<![^{sep}])[0-9]+(?![^{sep}])")
    return pattern.sub("#", text), [int(m) for m in pattern.findall(text)]


def test_number_components_equal_the_regular_expression() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        text = "".join(rng.choice(ALPHABET, size=int(rng.integers(0, 30))))
        for separators in (".", ".\n"):
            found = number_components(text, separators)
            assert found is not None
            want_text, want_values = _by_regex(text, separators)
            assert (found.text, found.values.tolist()) == (want_text, want_values), text
            sep = re.escape(separators)
            zero = re.search(rf"(?<![^{sep}])0[0-9]+(?![^{sep}])", text)
            assert found.plain == (zero is None), text


def test_number_components_decline_what_they_cannot_read() -> None:
    assert number_components("blöck.3") is None  # not ASCII
    assert number_components("a." + "9" * (MAX_DIGITS + 1)) is None  # past int64
    found = number_components("9" * MAX_DIGITS)
    assert found is not None and found.text == "#" and found.plain
    assert found.values.tolist() == [int("9" * MAX_DIGITS)]
    found = number_components("a.07.0.10", read_values=False)
    assert found is not None and found.text == "a.#.#.#" and not found.plain
    assert not len(found.values)


def test_templates_of_random_keys_equal_one_by_one() -> None:
    rng = np.random.default_rng(1)
    parts = [p for p in ALPHABET if "\n" not in p]
    for n in range(300):
        extra = ["٣"] if n % 10 == 0 else ["\n"] if n % 10 == 1 else []  # the other ways
        keys = [
            "".join(rng.choice(parts + extra, size=int(rng.integers(0, 12))))
            for _ in range(int(rng.integers(1, 8)))
        ]
        assert templates_of(keys) == [template_of(k) for k in keys], keys
