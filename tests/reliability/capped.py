"""Run a weightmapper command in a child process under a memory and CPU-time cap.

The cap is set after torch is imported (its mappings are not the input's fault): the
child's address space may grow by ``headroom`` bytes at most, so an input that makes the
code allocate gigabytes fails with MemoryError instead of swapping the machine, and the
test sees it as a traceback. ``RLIMIT_CPU`` turns a hang into a kill (returncode < 0).
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

_CHILD = """
import resource, sys
import torch  # noqa: F401  (imported before the cap: its mappings are not the input's)
from weightmapper.cli.main import main
with open("/proc/self/statm") as f:
    used = int(f.read().split()[0]) * resource.getpagesize()
cap = used + int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
resource.setrlimit(resource.RLIMIT_CPU, (int(sys.argv[2]), int(sys.argv[2]) + 5))
sys.exit(main(sys.argv[3:]))
"""


def run_capped(
    argv: list[str], *, headroom: int = 512 << 20, cpu_seconds: int = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """CLI arguments → the finished child (exit code, stdout, stderr) run under the caps."""
    src = Path(__file__).resolve().parents[2] / "src"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", _CHILD, str(headroom), str(cpu_seconds), *argv],
        capture_output=True,
        text=True,
        timeout=cpu_seconds * 4 + 60,
        cwd=cwd,
        env=env,
    )


@contextlib.contextmanager
def memory_cap(headroom: int = 512 << 20) -> Iterator[None]:
    """Cap this process's address space at its current size + ``headroom`` for the block.

    Only the soft limit is lowered, so it can be put back afterwards.
    """
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = used + headroom
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Hang(BaseException):
    """Raised by the alarm of :func:`bounded`; a BaseException so no ``except Exception`` eats it."""


@contextlib.contextmanager
def bounded(seconds: float = 10.0, headroom: int = 512 << 20) -> Iterator[None]:
    """Run the block under a wall-clock alarm (Hang) and an address-space cap (MemoryError).

    Any timer already armed (pytest-timeout's) is put back afterwards, less the time spent.
    """

    def on_alarm(_signum: int, _frame: object) -> None:
        raise Hang(f"the input took longer than {seconds} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_timer, _interval = signal.getitimer(signal.ITIMER_REAL)
    started = time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with memory_cap(headroom):
            yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous_handler)
        if previous_timer:
            left = previous_timer - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))
