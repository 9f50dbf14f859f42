"""Mapper settings: validated once, every problem at once, stable stage keys."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from weightmapper.engine.optimal import stage_assignment
from weightmapper.engine.side import prepare_side
from weightmapper.engine.state import MatchState
from weightmapper.errors import MappingError, SettingsError
from weightmapper.inventory import Inventory
from weightmapper.mapper import WeightMapper
from weightmapper.pipeline import ops
from weightmapper.settings import (
    DEFAULT_THRESHOLD,
    DEFAULT_WEIGHTS,
    AssignSettings,
    MapperSettings,
    ScoreSettings,
    changed_fields,
)


def test_construction_reports_every_problem_at_once() -> None:
    with pytest.raises(SettingsError) as info:
        MapperSettings.from_flat(
            {
                "threshold": 1.5,
                "strategy": "greedy",
                "weights": {"colour": 1.0, "name": -1},
                "shape_tolerance": -0.1,
                "incompatible_pairs": [("attention",)],
                "buffer_matching_mode": "sometimes",
                "min_proposal": 2,
                "temperature": 1,
            }
        )
    text = "\n".join(info.value.problems)
    assert len(info.value.problems) == 9, text
    for expected in (
        "unknown setting 'temperature'",
        "threshold",
        "unknown strategy 'greedy'",
        "unknown scoring weight key(s) ['colour']",
        "weight for 'name'",
        "shape_tolerance",
        "incompatible pair",
        "buffer_matching_mode",
        "min_proposal",
    ):
        assert expected in text
    assert str(info.value).startswith("9 problems")
    assert isinstance(info.value, MappingError)  # callers catching MappingError still do


def test_values_are_normalized_and_frozen() -> None:
    s = ScoreSettings(weights={"name": 1}, shape_tolerance=0, incompatible_pairs=[["a", "mlp"]])
    assert s.weights == {
        "shape": 0.0,
        "name": 1.0,
        "hierarchy": 0.0,
        "order": 0.0,
        "structure": 0.0,
    }
    assert s.shape_tolerance == 0.0 and isinstance(s.shape_tolerance, float)
    assert s.incompatible_pairs == (("a", "mlp"),)
    assert ScoreSettings().weights == DEFAULT_WEIGHTS
    assert len({MapperSettings(), MapperSettings.from_flat({"weights": DEFAULT_WEIGHTS})}) == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.shape_tolerance = 1.0  # type: ignore[misc]
    with pytest.raises(SettingsError, match="at least one weight must be positive"):
        ScoreSettings(weights={"name": 0})
    with pytest.raises(SettingsError, match="threshold"):
        dataclasses.replace(AssignSettings(), threshold=-1)  # replace validates too


def test_flat_form_round_trips() -> None:
    s = MapperSettings.from_flat({"threshold": 0.7, "weights": {"name": 2}, "min_proposal": 0.2})
    again = MapperSettings.from_flat(s.to_flat())
    assert again == s
    assert again.assign.threshold == 0.7 and again.score.min_proposal == 0.2
    assert MapperSettings.from_flat(None) == MapperSettings()
    assert s.with_threshold(0.1).assign.threshold == 0.1
    with pytest.raises(SettingsError):
        s.with_threshold(3)


def test_stage_keys_leave_out_defaults() -> None:
    # A job that sets nothing has the same keys as before settings had a home: {}.
    assert ops.score_key_settings(None) == {} == ops.assign_key_settings(MapperSettings())
    s = MapperSettings.from_flat({"threshold": 0.7, "buffer_matching_mode": "strict"})
    assert ops.score_key_settings(s) == {"buffer_matching_mode": "strict"}
    assert ops.assign_key_settings(s) == {"threshold": 0.7}
    explicit_default = MapperSettings.from_flat(
        {"threshold": DEFAULT_THRESHOLD, "weights": DEFAULT_WEIGHTS}
    )
    assert ops.score_key_settings(explicit_default) == {}
    assert ops.assign_key_settings(explicit_default) == {}
    pairs = ScoreSettings(incompatible_pairs=[("attention", "mlp")])
    assert changed_fields(pairs) == {"incompatible_pairs": [["attention", "mlp"]]}


class _Net(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a = nn.Linear(4, width)
        self.b = nn.Linear(width, 3)


@pytest.mark.parametrize(("min_proposal", "proposed"), [(0.0, 1), (0.3, 1), (1.0, 0)])
def test_min_proposal_is_the_bar_below_which_the_assignment_stage_proposes_nothing(
    min_proposal: float, proposed: int
) -> None:
    src = Inventory.from_state_dict({"p.weight": torch.zeros(4, 4)})
    tgt = Inventory.from_state_dict({"a.weight": torch.zeros(4, 4), "b.weight": torch.zeros(4, 4)})
    st = MatchState(prepare_side(src), prepare_side(tgt), ScoreSettings(min_proposal=min_proposal))
    stage_assignment(st, weights_first=False)
    assert len(st.rec) == proposed
    assert all(r[1] == "assignment" for r in st.rec.values())


def test_facade_checks_every_scoring_setting_when_built() -> None:
    with pytest.raises(SettingsError) as info:
        WeightMapper(_Net(5), _Net(5), shape_tolerance=-1, buffer_matching_mode="x", min_proposal=9)
    assert len(info.value.problems) == 3
