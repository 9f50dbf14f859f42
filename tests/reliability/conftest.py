"""Reliability suite fixtures: a tally of what was tried, printed at the end of every run.

Tests add to ``tally`` (inputs fuzzed per format, payloads refused, kills survived, ...);
``pytest_terminal_summary`` prints the table whether or not ``-s`` is given, so CI logs
always show how much the suite exercised.
"""

from __future__ import annotations

import contextlib
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the fuzz helpers are plain modules beside the tests
    sys.path.insert(0, str(HERE))


class Tally(defaultdict):
    """{section: {item: count}}; a short repr keeps failure reports (hypothesis) readable."""

    def __init__(self) -> None:
        super().__init__(lambda: defaultdict(int))

    def __repr__(self) -> str:
        return f"Tally({len(self)} sections)"

    @contextlib.contextmanager
    def attack(self, kind: str) -> Iterator[None]:
        """Count one attack of ``kind`` as tried, and as held when the block (its checks) passes."""
        self["attacks tried"][kind] += 1
        yield
        self["attacks held"][kind] += 1


_TALLY = pytest.StashKey[Tally]()


def _tally_of(config: pytest.Config) -> Tally:
    if _TALLY not in config.stash:
        config.stash[_TALLY] = Tally()
    return config.stash[_TALLY]


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    """Session-wide {section: {item: count}} the terminal summary prints."""
    return _tally_of(request.config)


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    """Print the reliability tally (sections sorted, items sorted) after the test results."""
    tally = config.stash.get(_TALLY, None)
    if not tally:
        return
    terminalreporter.section("reliability counts")
    if "attacks tried" in tally:
        tried = sum(tally["attacks tried"].values())
        held = sum(tally.get("attacks held", {}).values())
        terminalreporter.write_line(f"attacks: {tried} tried, {held} held, {tried - held} not held")
    for section in sorted(tally):
        items = tally[section]
        total = sum(items.values())
        terminalreporter.write_line(f"{section}: {total}")
        for item in sorted(items):
            terminalreporter.write_line(f"    {item:<44} {items[item]:>8}")
