"""Progress events: stages announce start/advance/end to a callback; the CLI draws them."""

from __future__ import annotations

import pytest
from rich.console import Console
from torch import nn

from weightmapper.cli._progress import stage_bars
from weightmapper.mapper import WeightMapper
from weightmapper.progress import ProgressEvent, reporting, stage


def test_a_stage_sends_start_advances_and_end_even_on_error() -> None:
    events: list[ProgressEvent] = []
    with reporting(events.append):
        with stage("copy", total=3) as advance:
            advance(2)
            advance()
        with pytest.raises(RuntimeError), stage("boom"):
            raise RuntimeError("x")
    assert [(e.stage, e.kind, e.done, e.total) for e in events] == [
        ("copy", "start", 0, 3),
        ("copy", "advance", 2, 3),
        ("copy", "advance", 3, 3),
        ("copy", "end", 3, 3),
        ("boom", "start", 0, None),
        ("boom", "end", 0, None),
    ]
    assert all(e.seconds >= 0 for e in events)


def test_without_a_callback_nothing_is_sent_and_a_broken_one_breaks_nothing() -> None:
    with stage("quiet", total=1) as advance:
        advance()  # no callback installed: a no-op

    def broken(event: ProgressEvent) -> None:
        raise ValueError("display failed")

    with reporting(broken), stage("work", total=1) as advance:
        advance()


def test_the_mapper_announces_its_stages() -> None:
    events: list[ProgressEvent] = []
    with reporting(events.append):
        WeightMapper(nn.Linear(3, 2), nn.Linear(3, 2)).suggest_mapping()
    starts = [e.stage for e in events if e.kind == "start"]
    assert starts == ["read source", "read target", "score candidates", "assign pairs"]


def test_stage_bars_draw_one_finished_row_per_stage() -> None:
    console = Console(record=True, force_terminal=True, width=100)
    with stage_bars(console):
        WeightMapper(nn.Linear(3, 2), nn.Linear(3, 2)).suggest_mapping()
        with stage("write outputs", total=2) as done:
            done(2)
    text = console.export_text()
    for name in ("read source", "read target", "score candidates", "assign pairs"):
        assert f"✓ {name}" in text
    assert "2/2" in text
