"""Progress of long work as plain events: the library announces stages, a caller renders them.

The library never draws anything (no rich here). Code doing long work wraps it in
``with stage("score", total=n) as advance: ... advance(k)``; a caller that wants to show
progress installs a callback for the duration of a call with ``with reporting(callback):``.
The callback receives :class:`ProgressEvent` values: ``start``, then ``advance`` as work is
done, then ``end`` (also when the stage raises). Without a callback, a stage costs a
context-variable lookup, so instrumented code pays nothing measurable.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressEvent:
    """One step of a stage: it started, advanced, or ended."""

    stage: str
    """Short stage name shown to the user (``read source``, ``score``, ``hash inputs``)."""
    kind: str
    """``start``, ``advance`` or ``end``."""
    done: int = 0
    """Units done so far in this stage (0 at ``start``)."""
    total: int | None = None
    """Units the stage will do, when known (tensors, bytes); None for a stage of unknown size."""
    seconds: float = 0.0
    """Wall time since the stage started."""


ProgressCallback = Callable[[ProgressEvent], None]

_CALLBACK: ContextVar[ProgressCallback | None] = ContextVar("weightmapper_progress", default=None)


@contextlib.contextmanager
def reporting(callback: ProgressCallback | None) -> Iterator[None]:
    """Callback (or None) → context in which every stage's events go to that callback."""
    token = _CALLBACK.set(callback)
    try:
        yield
    finally:
        _CALLBACK.reset(token)


@contextlib.contextmanager
def stage(name: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """Stage name (+ units of work, if known) → context yielding ``advance(units_done_now)``.

    Sends ``start`` on entry, ``advance`` on each call, ``end`` on exit (even on an error),
    to the callback installed by :func:`reporting`; without one, nothing is sent.
    """
    callback = _CALLBACK.get()
    if callback is None:
        yield _ignore
        return
    start = time.perf_counter()
    done = 0

    def send(kind: str) -> None:
        try:
            callback(ProgressEvent(name, kind, done, total, time.perf_counter() - start))
        except Exception:  # a broken display must never break the work it shows
            logger.debug("progress callback failed for stage %s", name, exc_info=True)

    def advance(units: int = 1) -> None:
        nonlocal done
        done += units
        send("advance")

    send("start")
    try:
        yield advance
    finally:
        send("end")


def _ignore(units: int = 1) -> None:
    """Advance that goes nowhere (no callback installed)."""
