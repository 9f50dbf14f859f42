"""A Llama the first pass cannot get right: transformers' names (whose convention says RoPE on
rotate-half rows) over an attention that turns neighbouring pairs, written into a preallocated
tensor by item assignment. A forward pass records no item assignment, so the style cannot be
read; the names decide, wrongly, and only running both networks shows it.

Jobs name it as ``hidden_rope:HiddenRopeLlama`` (``tests/`` is on the path of the tests).
"""

from __future__ import annotations

import torch

from weightmapper.examples.llama import HFLlama


def pairs_in_place(x: torch.Tensor) -> torch.Tensor:
    """(b, h, t, d) → rows 2i and 2i+1 turned, written into a new tensor by item assignment."""
    d = x.shape[-1]
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    angle = torch.outer(torch.arange(x.shape[2]).float(), inv)
    cos, sin = angle.cos(), angle.sin()
    even, odd = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


class HiddenRopeLlama(HFLlama):
    """Token ids (b, t) → logits: ``HFLlama``'s names and shapes, Meta's RoPE, unreadable."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        for layer in self.model.layers:
            layer.self_attn.rope = pairs_in_place
