"""Module paths split once per skeleton give what splitting each path alone gives."""

from __future__ import annotations

import numpy as np

from weightmapper.engine.columns import IndexColumns
from weightmapper.engine.names import (
    common_prefix,
    distinct_codes,
    rank_index_columns,
    rank_index_rows,
    split_module,
    split_modules,
)
from weightmapper.engine.side import (
    _linked,
    _linked_codes,
    _numbered_chains,
    _numbered_siblings,
    _ordinal_shape_codes,
    _ordinal_shapes,
    _parent_codes,
)

WORDS = ["layers", "layer", "blocks", "h", "attn", "mlp", "q_proj", "fc", "conv", "norm", "bn",
         "stage", "downsample", "features", "output", "self_attn", "proj", "a", "b", "f", "x",
         "Mixed_5b", "branch5x5"]  # fmt: skip


def _random_paths(rng: np.random.Generator, n: int) -> list[str]:
    """Random dotted module paths: words, numbers (some with leading zeros), words ending
    in digits (``layer3``, ``conv1``), and now and then a flattened index (``a_1_b``)."""
    paths = []
    for _ in range(n):
        parts = []
        for _ in range(int(rng.integers(1, 6))):
            r = rng.random()
            if r < 0.3:
                parts.append(str(int(rng.integers(0, 12))).zfill(int(rng.integers(1, 3))))
            elif r < 0.5:
                parts.append(str(rng.choice(WORDS)) + str(int(rng.integers(0, 4))))
            else:
                parts.append(str(rng.choice(WORDS)))
        paths.append(".".join(parts))
    return paths


def _expected(paths: list[str]) -> tuple[list[str], list[tuple[str, ...]], list[tuple[int, ...]]]:
    parts = [split_module(p) for p in paths]
    return [p.template for p in parts], [p.tokens for p in parts], [p.indices for p in parts]


def _got(paths: list[str]) -> tuple[list[str], list[tuple[str, ...]], list[tuple[int, ...]]]:
    sp = split_modules(paths)
    codes = sp.template_code.tolist()
    return [sp.templates[c] for c in codes], [sp.tokens[c] for c in codes], sp.indices()


def test_split_modules_equals_split_module_of_each_path() -> None:
    rng = np.random.default_rng(0)
    fast = 0
    for n in (1, 2, 5, 40, 300):
        for _ in range(20):
            paths = _random_paths(rng, n)
            assert _got(paths) == _expected(paths), paths
            fast += split_modules(paths).skeleton_code is not None
    assert fast  # most draws went the per-skeleton way


def test_split_modules_falls_back_on_paths_it_cannot_skeleton() -> None:
    for paths in (
        ["layer1_0_conv1", "layer1_1_conv1"],  # flattened indices move components
        ["blöck.٣.x", "blöck.3.x"],  # a non-ASCII digit is an index too
        ["a.#.b", "a.1.b"],  # the marker itself
        ["a\n1", "a.1"],  # a newline: paths cannot be joined by one
    ):
        assert split_modules(paths).skeleton_code is None
        assert _got(paths) == _expected(paths)
    for paths in (["", "0", "1.2", "a..3", "007.x"], []):
        assert _got(paths) == _expected(paths)


def test_template_codes_follow_first_appearance() -> None:
    rng = np.random.default_rng(1)
    paths = _random_paths(rng, 200)
    codes = split_modules(paths).template_code.tolist()
    firsts = [codes.index(c) for c in range(max(codes) + 1)]
    assert firsts == sorted(firsts)


def test_rank_index_columns_equal_rank_index_rows() -> None:
    rng = np.random.default_rng(2)
    for _ in range(20):
        paths = _random_paths(rng, 150)
        sp = split_modules(paths)
        ranked, primary, padded = rank_index_columns(sp.template_code, sp.width, sp.flat)
        want_ranked, want_primary = rank_index_rows(sp.template_code, sp.indices())
        assert ranked == want_ranked and primary.tolist() == want_primary.tolist()
        ref = IndexColumns(list(zip(ranked, primary.tolist(), strict=True)))
        got = IndexColumns.from_arrays(sp.width, primary, padded)
        for name in ("depth", "primary", "slots"):
            assert np.array_equal(getattr(got, name), getattr(ref, name))


def test_ordinal_shapes_chains_and_links_per_skeleton_equal_per_path() -> None:
    rng = np.random.default_rng(3)
    for n in range(30):
        paths = sorted(set(_random_paths(rng, 120)))
        if n % 2:  # without one-letter components, shapes are worked out per skeleton
            paths = [p for p in paths if not any(len(c) == 1 and c.isalpha() for c in p.split("."))]
        for prefix in ("", "module.", "0.net."):
            full = [prefix + p for p in paths]
            pre = common_prefix(full) if len(full) > 1 else ""
            stripped = [p[len(pre) :] for p in full] if pre else full
            code, distinct = _ordinal_shape_codes(full, pre, split_modules(stripped))
            shapes = _ordinal_shapes(full)
            assert [distinct[c] for c in code.tolist()] == shapes
            assert _numbered_chains(code, distinct).tolist() == _numbered_siblings(shapes).tolist()
            assert _linked_codes(full, code, distinct).tolist() == _linked(full, shapes).tolist()


def test_parent_codes_per_skeleton_equal_per_path() -> None:
    rng = np.random.default_rng(4)
    fast = 0
    for n in range(40):
        paths = list(dict.fromkeys(_random_paths(rng, 150)))
        if n % 2:  # without leading zeros, parents are told apart by their numbers
            paths = [p for p in paths if not any(c[:1] == "0" and c[1:] for c in p.split("."))]
        sp = split_modules(paths)
        fast += sp.plain_numbers
        want = distinct_codes([p.rpartition(".")[0] for p in paths])[0]
        assert _parent_codes(paths, sp).tolist() == want.tolist()
        # the splits of the paths without a prefix they all share tell the same parents apart
        full = ["module." + p for p in paths]
        want = distinct_codes([p.rpartition(".")[0] for p in full])[0]
        assert _parent_codes(full, sp).tolist() == want.tolist()
    assert fast
