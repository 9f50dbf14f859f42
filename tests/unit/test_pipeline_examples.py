"""The example families: each pair computes the same function; checkpoints are deterministic."""

from __future__ import annotations

from pathlib import Path

import torch

from weightmapper.examples.cnn import OldCNN, RefactoredCNN
from weightmapper.examples.generate import ensure_example_checkpoints, trained_like
from weightmapper.examples.resnet import RefactoredResNet50, ResNet50, width_for_size
from weightmapper.examples.transformer import NewTransformer, OldTransformer
from weightmapper.pipeline.codec import inventory_from_json, inventory_to_json


def _same_function(old: torch.nn.Module, new: torch.nn.Module, x: torch.Tensor) -> None:
    old = trained_like(old, seed=3)
    # Registration orders correspond one to one in these pairs (the ground truth).
    new.load_state_dict(dict(zip(new.state_dict(), old.state_dict().values(), strict=True)))
    new.eval()
    torch.testing.assert_close(new(x), old(x))


def test_pairs_compute_the_same_function() -> None:
    _same_function(OldCNN(), RefactoredCNN(), torch.randn(2, 3, 16, 16))
    _same_function(OldTransformer(), NewTransformer(), torch.randint(0, 64, (2, 16)))


def test_resnet_pair_sizes() -> None:
    with torch.device("meta"):
        a, b = ResNet50(), RefactoredResNet50()
    n = sum(t.numel() for t in a.state_dict().values())
    assert 25_000_000 < n < 26_000_000  # ResNet-50: 25.6 M
    assert [t.shape for t in a.state_dict().values()] != []
    assert sorted(t.shape for t in a.state_dict().values()) == sorted(
        t.shape for t in b.state_dict().values()
    )
    assert width_for_size(100) == 63 and width_for_size(1) >= 4


def test_example_checkpoints_are_deterministic(tmp_path: Path) -> None:
    a = ensure_example_checkpoints(tmp_path / "a", per_family=2)
    b = ensure_example_checkpoints(tmp_path / "b", per_family=2)
    assert len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert x.read_bytes() == y.read_bytes()
    mtimes = [p.stat().st_mtime_ns for p in a]
    ensure_example_checkpoints(tmp_path / "a", per_family=2)  # present: left alone
    assert [p.stat().st_mtime_ns for p in a] == mtimes


def test_inventory_json_round_trip() -> None:
    from weightmapper.inventory import Inventory

    inv = Inventory.from_module(NewTransformer())
    back = inventory_from_json(inventory_to_json(inv))
    assert back == inv and back.signature() == inv.signature()
