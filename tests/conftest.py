"""Shared test fixtures: deterministic torch, a private hash cache; tiny models live in the
tests themselves."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import torch

# Set at import, before any test (or subprocess a test starts) can hash a file: the suite
# never writes to the user's real cache.
_CACHE = tempfile.TemporaryDirectory(prefix="wm-test-cache-")
os.environ["WEIGHTMAPPER_CACHE_DIR"] = _CACHE.name


@pytest.fixture(autouse=True, scope="session")
def _private_hash_cache() -> Iterator[None]:
    yield
    _CACHE.cleanup()


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
