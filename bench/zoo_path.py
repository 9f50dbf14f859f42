"""Importing this puts ``tests/`` on ``sys.path``: the reference zoo lives with the tests,
outside the installed package, and the benchmarks import it as ``zoo``."""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1] / "tests")
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
