"""A mapping that leaves target tensors without a source never claims that it loads."""

from __future__ import annotations

from torch import nn

from weightmapper import WeightMapper
from weightmapper.report import build_report
from weightmapper.result import MappingResult


class _Old(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 10)


class _Wider(nn.Module):
    """The same network with a head of another size: the head has no source."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, classes)


def test_partial_mapping_does_not_load() -> None:
    result = WeightMapper(_Old(), _Wider(classes=100)).suggest_mapping()
    assert result.get_unmatched()["target"] == ["head.bias", "head.weight"]
    for status in (result.to_dict()["status"], build_report(result, hash_inputs=False)["status"]):
        assert status["state"] == "does_not_load"
        assert status["label"] == "does not load"
        assert "2 target tensor(s) have no source, e.g. head.bias, head.weight" in status["detail"]
    # Read back from its file, the mapping still says so.
    again = MappingResult.from_dict(result.to_dict())
    assert build_report(again, hash_inputs=False)["status"]["state"] == "does_not_load"


def test_full_mapping_loads_not_proven() -> None:
    result = WeightMapper(_Old(), _Wider()).suggest_mapping()
    assert result.get_unmatched()["target"] == []
    assert result.to_dict()["status"]["state"] == "loads_not_proven"
    assert build_report(result, hash_inputs=False)["status"]["label"] == "loads, not proven"


def test_a_load_check_that_passed_wins() -> None:
    """A real load check outranks what the mapping's unmatched keys suggest."""
    result = WeightMapper(_Old(), _Wider(classes=100)).suggest_mapping()
    report = build_report(result, hash_inputs=False, validation={"ok": True})
    assert report["status"]["state"] == "loads_not_proven"
