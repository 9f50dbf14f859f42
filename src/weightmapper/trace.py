"""Execution order: nn.Module + dummy input → module path → rank of its first call.

Forward pre-hooks record the order in which submodules are first entered. The module's
parameters are never changed; a failing forward pass yields None and a warning, so the
caller falls back to registration order.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


def trace_execution_order(module: nn.Module, dummy_input: Any) -> dict[str, int] | None:
    """Module + dummy input → {module path: first-call rank}, or None when forward fails.

    ``dummy_input`` is a tensor, a tuple/list of positional arguments, or a dict of
    keyword arguments. The forward pass runs under ``torch.no_grad`` and in eval mode
    (restored afterwards) so BatchNorm statistics are not updated.
    """
    names = {id(m): name for name, m in module.named_modules(remove_duplicate=False)}
    order: dict[str, int] = {}
    handles = []

    def pre_hook(mod: nn.Module, _args: Any) -> None:
        name = names.get(id(mod))
        if name is not None and name not in order:
            order[name] = len(order)

    for sub in module.modules():
        handles.append(sub.register_forward_pre_hook(pre_hook))
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            if isinstance(dummy_input, Mapping):
                module(**dummy_input)
            elif isinstance(dummy_input, (tuple, list)):
                module(*dummy_input)
            else:
                module(dummy_input)
    except Exception as e:  # any user-model failure means: no trace, fall back
        log.warning(
            "forward pass of %s with the dummy input failed (%s: %s); using registration "
            "order instead of execution order",
            type(module).__name__,
            type(e).__name__,
            e,
        )
        return None
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    return order
