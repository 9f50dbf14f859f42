"""GPT-2 and a Linear re-implementation of it (separate q/k/v), the same function in two layouts.

Sizes are fixed and tiny; the HF model comes from a small config (transformers is imported
lazily, so this module imports without it).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo.hf import gpt2_fields, hf_model

D, HEADS, LAYERS, VOCAB, POS = 32, 4, 2, 50, 16


class Attention(nn.Module):
    """Causal self-attention with separate q/k/v/o Linear projections."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d, d) for _ in range(3))
        self.o_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        hd = d // self.heads

        def heads(y: torch.Tensor) -> torch.Tensor:
            return y.view(b, t, self.heads, hd).transpose(1, 2)

        q, k, v = heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        return self.o_proj((att @ v).transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    """fc, tanh-GELU, proj."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    """ln_1, attn, ln_2, mlp (pre-norm)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class LinearGPT(nn.Module):
    """GPT-2 rewritten with nn.Linear and separate q/k/v: the same function, other layout."""

    def __init__(self) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, D)
        self.pos = nn.Embedding(POS, D)
        self.layers = nn.ModuleList(Block(D, HEADS) for _ in range(LAYERS))
        self.norm = nn.LayerNorm(D)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.tok(input_ids) + self.pos(torch.arange(input_ids.shape[1]))
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def gpt2() -> nn.Module:
    """A small randomly initialised HF ``GPT2Model`` (Conv1D, fused qkv) in eval mode."""
    fields = gpt2_fields(
        layers=LAYERS,
        d=D,
        heads=HEADS,
        vocab=VOCAB,
        positions=POS,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return hf_model("GPT2Model", "GPT2Config", **fields).eval()
