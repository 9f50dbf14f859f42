"""Shared test fixtures: deterministic torch, tiny models live in the tests themselves."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
