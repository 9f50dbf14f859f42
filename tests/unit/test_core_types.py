"""MappingResult, transforms and atomic writes: the contracts every stage relies on."""

from __future__ import annotations

import json

import pytest
import torch

from weightmapper.atomic import atomic_path
from weightmapper.errors import KeyCollisionError, MappingError, OutputError
from weightmapper.result import MappingResult, MatchedPair, UnmatchedKey, UnmatchedReason
from weightmapper.transforms import TransformSpec, apply_one, get_transform, invert


def _result() -> MappingResult:
    return MappingResult(
        [
            MatchedPair(
                "a.weight",
                "x.weight",
                0.9,
                {"shape": 1.0},
                (2, 3),
                (3, 2),
                TransformSpec("transpose", {"dim0": 0, "dim1": 1}),
            ),
            MatchedPair("a.bias", "x.bias", 0.95, source_shape=(2,), target_shape=(2,)),
        ],
        [UnmatchedKey("head.weight", "source", UnmatchedReason.NO_SHAPE_PARTNER, shape=(10, 2))],
        [UnmatchedKey("fc.weight", "target", UnmatchedReason.BELOW_THRESHOLD, best_score=0.3)],
    )


def test_mapping_result_is_a_read_only_mapping() -> None:
    r = _result()
    assert dict(r) == {"a.bias": "x.bias", "a.weight": "x.weight"}
    assert r.get_mapping_with_scores()["a.weight"] == ("x.weight", 0.9)
    assert r.get_unmatched() == {"source": ["head.weight"], "target": ["fc.weight"]}
    cov = r.coverage()
    assert cov["source_total"] == 3 and cov["source_mapped"] == 2
    with pytest.raises(TypeError):
        r["a.weight"] = "y"  # type: ignore[index]


def test_mapping_result_json_round_trip_and_convert() -> None:
    r = _result()
    again = MappingResult.from_dict(json.loads(r.to_json()))
    assert again.to_json() == r.to_json()
    sd = {"a.weight": torch.arange(6.0).reshape(2, 3), "a.bias": torch.ones(2)}
    out = again.convert(sd)
    assert torch.equal(out["x.weight"], sd["a.weight"].T)
    assert set(out) == {"x.weight", "x.bias"}


def test_two_sources_on_one_target_is_a_collision() -> None:
    with pytest.raises(KeyCollisionError) as e:
        MappingResult([MatchedPair("a", "t", 1.0), MatchedPair("b", "t", 1.0)])
    assert e.value.collisions == {"t": ["a", "b"]}


def test_transforms_invert_and_unknown_name() -> None:
    t = torch.randn(4, 1, 1)
    spec = TransformSpec("reshape", {"shape": [4], "from_shape": [4, 1, 1]})
    back = apply_one(invert(spec), apply_one(spec, t))
    assert torch.equal(back, t)
    with pytest.raises(MappingError, match="known transforms"):
        get_transform("rotate")


def test_atomic_path_leaves_nothing_on_failure(tmp_path) -> None:
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"done")
    assert dest.read_bytes() == b"done"
    with (
        pytest.raises(OutputError, match="refusing to overwrite"),
        atomic_path(dest, overwrite=False),
    ):
        pass
