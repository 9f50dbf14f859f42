"""MappingResult, transforms and atomic writes: the contracts every stage relies on."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from weightmapper.atomic import atomic_path, name_problem
from weightmapper.errors import KeyCollisionError, MappingError, OutputError
from weightmapper.result import (
    MappingResult,
    MatchedPair,
    MultiPair,
    PendingPairs,
    UnmatchedKey,
    UnmatchedReason,
    matched_pairs,
)
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


def test_a_confidence_outside_the_vocabulary_is_refused() -> None:
    with pytest.raises(MappingError, match=r"confidence 'medium'.*high, ambiguous, low"):
        MatchedPair("a", "b", 0.5, confidence="medium")
    with pytest.raises(MappingError, match=r"split w.*confidence 'sure'"):
        MultiPair(("w",), ("q", "k"), TransformSpec("split", {"dim": 0}), 0.5, confidence="sure")
    data = MappingResult([MatchedPair("a", "b", 0.5)]).to_dict()
    data["pairs"][0]["confidence"] = "medium"
    with pytest.raises(MappingError, match="pair a → b"):
        MappingResult.from_dict(data)


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


def test_a_name_too_long_for_its_temporary_file_is_our_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The temporary file beside an output adds about 30 bytes: a name that fits alone but
    not with them is refused with our error before anything is created."""
    fits = tmp_path / ("a" * 200 + ".safetensors")
    assert name_problem(fits) is None
    too_long = tmp_path / ("a" * 230 + ".safetensors")
    assert "at most 255 bytes" in (name_problem(too_long) or "")
    assert "at most 255 bytes" in (name_problem(tmp_path / ("b" * 256) / "x.pt") or "")
    assert name_problem(tmp_path / ("é" * 115 + ".pt")) is not None  # bytes, not characters
    with pytest.raises(OutputError, match="at most 255 bytes"), atomic_path(too_long):
        pass
    assert list(tmp_path.iterdir()) == []
    with atomic_path(fits) as tmp:
        tmp.write_bytes(b"done")
    assert fits.read_bytes() == b"done"


def test_convert_takes_the_checkpoint_as_it_was_loaded(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from torch import nn

    from weightmapper.errors import CheckpointFormatError
    from weightmapper.mapper import WeightMapper

    class Old(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(3, 4), nn.Linear(4, 2)

    class New(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)

    old = Old()
    clean = old.state_dict()
    path = tmp_path / "old_ddp.pt"
    torch.save({"module." + k: v for k, v in clean.items()}, path)
    # The mapping is made from the file, whose reader strips `module.`; the user then
    # converts what torch.load gives back, prefix and all.
    result = WeightMapper.from_checkpoint(path, New()).suggest_mapping()
    expected = result.convert(clean)
    lightning = {
        "state_dict": {"model." + k: v for k, v in clean.items()},
        "epoch": 3,
        "pytorch-lightning_version": "2.4.0",
    }
    compiled = {"_orig_mod." + k: v for k, v in clean.items()}
    for loaded in (torch.load(path), lightning, compiled, {"model": clean}):
        out = result.convert(loaded)
        assert out.keys() == expected.keys()
        assert all(torch.equal(out[k], expected[k]) for k in out)
    New().load_state_dict(result.convert(torch.load(path)), strict=True)
    # Another checkpoint: the error says exactly which keys differ, after cleaning.
    other = {"module.l1.weight": clean["l1.weight"], "module.head.weight": torch.zeros(2)}
    with pytest.raises(CheckpointFormatError) as info:
        result.convert(other)
    text = str(info.value)
    assert "stripped 'module.'" in text
    assert "3 mapped source key(s) missing" in text and "'l2.weight'" in text
    assert "1 key(s) the mapping does not know" in text and "'head.weight'" in text


def test_matched_pairs_equal_pairs_made_one_by_one_and_refuse_a_bad_label() -> None:
    rows = [
        ("a.weight", "x.weight", 0.9, {"shape": 1.0}, (2, 3), (3, 2),
         TransformSpec("transpose", {"dim0": 0, "dim1": 1}), False, "exact", "high", ""),
        ("a.bias", "x.bias", 0.5, {}, (2,), (2,), TransformSpec("identity", {}), True,
         "group", "low", "a note"),
    ]  # fmt: skip
    many = matched_pairs(*map(list, zip(*rows, strict=True)))
    assert many == [MatchedPair(*row) for row in rows]
    assert [p.to_dict() for p in many] == [MatchedPair(*row).to_dict() for row in rows]
    assert many[1].note == "a note" and many[0].confident
    bad = [rows[0], (*rows[1][:9], "medium", "")]
    with pytest.raises(MappingError, match=r"pair a.bias → x.bias has confidence 'medium'"):
        matched_pairs(*map(list, zip(*bad, strict=True)))
    with pytest.raises(TypeError, match="11 field sequences"):
        matched_pairs(["a"], ["b"])


def test_a_source_mapped_twice_is_a_collision() -> None:
    with pytest.raises(KeyCollisionError, match="source key 'a' is mapped twice"):
        MappingResult([MatchedPair("a", "t", 1.0), MatchedPair("b", "u", 1.0),
                       MatchedPair("a", "v", 1.0)])  # fmt: skip
    split = MultiPair(("w",), ("q", "t"), TransformSpec("split", {"dim": 0}), 0.5)
    with pytest.raises(KeyCollisionError) as e:
        MappingResult([MatchedPair("a", "t", 1.0)], multi=[split])
    assert e.value.collisions == {"t": ["a", "w"]}


def test_pending_pairs_are_built_once_when_first_asked_for() -> None:
    made = [
        MatchedPair("b.weight", "y.weight", 0.8, {"raw": 0.5}, (2,), (2,)),
        MatchedPair("a.weight", "x.weight", 0.9, {"raw": 0.6}, (3,), (3,)),
    ]
    calls = []

    def build() -> list[MatchedPair]:
        calls.append(1)
        return made

    pending = PendingPairs(["b.weight", "a.weight"], ["y.weight", "x.weight"], build)
    lazy = MappingResult(pending)
    # the mapping itself needs no pair
    assert dict(lazy) == {"a.weight": "x.weight", "b.weight": "y.weight"}
    assert list(lazy) == ["a.weight", "b.weight"] and len(lazy) == 2 and not calls
    assert lazy.target_to_source() == {"x.weight": "a.weight", "y.weight": "b.weight"}
    assert lazy == MappingResult(made) and not calls
    # pairs, scores and JSON are those of the same pairs given at once, built once
    assert lazy.to_json() == MappingResult(made).to_json()
    assert lazy.pairs == MappingResult(made).pairs and calls == [1]
    again = pickle.loads(pickle.dumps(MappingResult(pending)))
    assert again.to_json() == lazy.to_json() and calls == [1, 1]


def test_pending_pairs_refuse_a_key_twice_as_built_pairs_do() -> None:
    def build() -> list[MatchedPair]:
        return [MatchedPair("a", "t", 1.0), MatchedPair("a", "u", 1.0)]

    with pytest.raises(KeyCollisionError, match="source key 'a' is mapped twice"):
        MappingResult(PendingPairs(["a", "a"], ["t", "u"], build))
    with pytest.raises(KeyCollisionError) as e:
        MappingResult(
            PendingPairs(["a", "b"], ["t", "t"], lambda: [MatchedPair("a", "t", 1.0),
                                                          MatchedPair("b", "t", 1.0)])
        )  # fmt: skip
    assert e.value.collisions == {"t": ["a", "b"]}
