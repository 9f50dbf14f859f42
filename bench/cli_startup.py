"""Benchmark: how long the `weightmapper` command takes to answer `--version` and `--help`.

Each command runs in a fresh Python process (the same interpreter, the same environment,
so the same ``sys.path`` and site packages) several times; the table prints the median and
the fastest wall time, and each median as a multiple of a bare interpreter start
(``python -c pass``). The target is at most 10× for ``--version``, ``--help`` and every
subcommand's ``--help``: none may import torch, rich or numpy (a subcommand's module imports
its heavy dependencies inside the functions that run it).

Run:  python bench/cli_startup.py            (7 runs each)
      python bench/cli_startup.py --runs 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from weightmapper.cli.main import COMMANDS

# What the `weightmapper` console script runs.
ENTRY = "import sys; from weightmapper.cli.main import main; sys.exit(main(sys.argv[1:]))"

CASES: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", ["-c", "pass"]),
    ("weightmapper --version", ["-c", ENTRY, "--version"]),
    ("weightmapper --help", ["-c", ENTRY, "--help"]),
    *((f"weightmapper {c} --help", ["-c", ENTRY, c, "--help"]) for c in COMMANDS),
)
BOUND = 10.0
"""Largest allowed multiple of a bare interpreter start for --version and --help."""


def _wall(args: list[str]) -> float:
    """Interpreter arguments → wall seconds of one run (output discarded; must exit 0)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    """Command line → a table of start-up times on stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args()
    timings = {}
    # Interleaved, so a burst of load on a shared machine hits every command alike.
    for _ in range(args.runs):
        for label, cmd in CASES:
            timings.setdefault(label, []).append(_wall(cmd))
    base = statistics.median(timings[CASES[0][0]])
    print(
        f"| {'command':<30} | {'median s':>8} | {'min s':>6} | {'× bare':>6} | within {BOUND:g}× |"
    )
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 8}|{'-' * 8}|{'-' * 12}|")
    for label, _ in CASES:
        med = statistics.median(timings[label])
        ratio = med / base
        verdict = "" if label == CASES[0][0] else ("yes" if ratio <= BOUND else "NO")
        print(
            f"| {label:<30} | {med:>8.3f} | {min(timings[label]):>6.3f} | {ratio:>6.1f} "
            f"| {verdict:<10} |"
        )


if __name__ == "__main__":
    main()
