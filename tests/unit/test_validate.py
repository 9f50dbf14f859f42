"""Validation: one test per failure mode, plus tied weights and converted output on disk."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from weightmapper.checkpoint import open_checkpoint
from weightmapper.convert import convert_checkpoint
from weightmapper.errors import CheckpointFormatError
from weightmapper.tensor_info import TensorInfo
from weightmapper.validate import ValidationResult, validate_state_dict


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)


class TiedLM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight


def test_complete_state_dict_is_ok() -> None:
    r = validate_state_dict(Net().state_dict(), Net())
    assert r.ok and r.checked == 7
    assert r.summary().startswith("OK")
    assert json.loads(json.dumps(r.to_dict()))["ok"] is True


def test_missing_keys() -> None:
    sd = Net().state_dict()
    del sd["fc.bias"]
    r = validate_state_dict(sd, Net())
    assert not r.ok and r.missing == ("fc.bias",)
    assert "missing (1):\n  fc.bias" in r.summary()


def test_unexpected_keys() -> None:
    sd = Net().state_dict() | {"extra.weight": torch.zeros(1)}
    r = validate_state_dict(sd, Net())
    assert not r.ok and r.unexpected == ("extra.weight",) and not r.missing


def test_shape_mismatches() -> None:
    sd = Net().state_dict() | {"fc.weight": torch.zeros(4, 3)}
    r = validate_state_dict(sd, Net())
    assert not r.ok and r.shape_mismatches == {"fc.weight": ((4, 3), (3, 4))}
    assert "fc.weight: [4, 3] vs [3, 4]" in r.summary()


def test_dtype_changes_are_reported_but_load() -> None:
    sd = Net().state_dict() | {"fc.weight": torch.zeros(3, 4, dtype=torch.float16)}
    r = validate_state_dict(sd, Net())
    assert r.ok and r.dtype_changes == {"fc.weight": ("float16", "float32")}
    assert "dtype changes" in r.summary()


def test_errors_from_the_targets_own_loading_are_returned() -> None:
    class Picky(Net):
        def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
            super()._load_from_state_dict(state_dict, prefix, *args)
            args[-1].append("Picky refuses weights it did not train")  # error_msgs

    r = validate_state_dict(Net().state_dict(), Picky())
    assert not r.ok and "Picky refuses" in r.errors[0]


def test_tied_target_accepts_one_name() -> None:
    sd = {"emb.weight": torch.randn(10, 4)}
    r = validate_state_dict(sd, TiedLM())
    assert r.ok and r.tied_filled == ("head.weight",)


def test_summary_caps_long_lists() -> None:
    target = {f"k{i}": TensorInfo(f"k{i}", (1,), "float32") for i in range(25)}
    r = validate_state_dict({}, target)
    assert len(r.missing) == 25
    text = r.summary(max_items=5)
    assert "... and 20 more" in text and text.count("\n  k") == 5


def test_names_and_shapes_target_from_a_checkpoint(tmp_path) -> None:
    save_file(Net().state_dict(), tmp_path / "target.safetensors")
    target = open_checkpoint(tmp_path / "target.safetensors")
    assert validate_state_dict(Net().state_dict(), target).ok
    sd = Net().state_dict()
    sd.pop("norm.running_mean")
    assert validate_state_dict(sd, target).missing == ("norm.running_mean",)


def test_converted_output_with_aliases_validates_from_disk(tmp_path) -> None:
    lm = TiedLM()
    sd = {k: v for k, v in lm.state_dict().items()}
    report = convert_checkpoint(sd, {k: k for k in sd}, tmp_path / "o.safetensors")
    assert report.aliases  # the tie was written once
    r = validate_state_dict(tmp_path / "o.safetensors", TiedLM())
    assert r.ok and not r.tied_filled, r.summary()


def test_unreadable_inputs_raise_our_errors(tmp_path) -> None:
    with pytest.raises(CheckpointFormatError):
        validate_state_dict(42, Net())  # type: ignore[arg-type]
    with pytest.raises(CheckpointFormatError):
        validate_state_dict({}, 42)  # type: ignore[arg-type]
    assert isinstance(validate_state_dict({}, {}), ValidationResult)
