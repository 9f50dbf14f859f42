"""A convention with repeated blocks claims a side only when some key is one of its blocks'."""

from __future__ import annotations

from torch import nn

from weightmapper import WeightMapper
from weightmapper.conventions import load_conventions


class _ThreeLayers(nn.Module):
    """Stem and head named as a ResNet's (``conv1``, ``bn1``, ``fc``), with no residual block."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.bn1 = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 10)


class _OneBlock(_ThreeLayers):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Module())
        self.layer1[0].conv1 = nn.Conv2d(4, 4, 3)
        self.layer1[0].bn1 = nn.BatchNorm2d(4)


def test_stem_and_head_names_alone_do_not_make_a_resnet() -> None:
    conventions = load_conventions()
    keys = list(_ThreeLayers().state_dict())
    # Listed as explaining the keys, it does not claim them: nothing shows its blocks.
    assert conventions.identify(keys)[0].convention.name == "torchvision-resnet"
    assert conventions.roles(keys) == ({}, [])
    result = WeightMapper(_ThreeLayers(), _ThreeLayers()).suggest_mapping()
    assert result.settings["source_roles"] == result.settings["target_roles"] == ""


def test_one_block_of_its_own_is_enough() -> None:
    roles, best = load_conventions().roles(list(_OneBlock().state_dict()))
    assert [b.convention.name for b in best] == ["torchvision-resnet"]
    assert roles["layer1.0.conv1.weight"].role == "block.conv1"
    assert roles["conv1.weight"].role == "stem.conv"
