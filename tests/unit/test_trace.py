"""Execution order from forward hooks, and the graceful fallback when forward fails."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from weightmapper.trace import trace_execution_order


class LateRegistered(nn.Module):
    """Registers the head first but calls it last."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(4, 2)
        self.body = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.body(x)))


def test_order_follows_execution_not_registration() -> None:
    net = LateRegistered().train()
    order = trace_execution_order(net, torch.randn(2, 3))
    assert order is not None
    assert order["body"] < order["head"]
    assert net.training  # mode restored


def test_keyword_and_tuple_inputs() -> None:
    class TwoIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) + y

    net = TwoIn()
    assert "a" in (trace_execution_order(net, (torch.ones(1, 2), torch.ones(1, 2))) or {})
    assert "a" in (trace_execution_order(net, {"x": torch.ones(1, 2), "y": torch.ones(1, 2)}) or {})


def test_failing_forward_warns_and_returns_none(caplog: pytest.LogCaptureFixture) -> None:
    net = LateRegistered()
    with caplog.at_level(logging.WARNING):
        assert trace_execution_order(net, torch.randn(2, 99)) is None
    assert "registration order" in caplog.text
    # hooks are removed: a later forward runs normally
    assert not net.body._forward_pre_hooks
