"""A tiny decoder-only transformer, twice: GPT-style ``OldTransformer`` and ``NewTransformer``.

Same function, other names: ``blocks.0.attn.q_proj`` becomes ``layers.0.attention.query``,
``ln_1`` becomes ``norm1``, ``mlp.fc1`` becomes ``ffn.up``. Query, key, value and output
projections all have the same shape, so names and execution order must tell them apart.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_head: int) -> torch.Tensor:
    """(N, T, D) query, key and value → (N, T, D) causal multi-head attention output."""
    n, t, d = q.shape
    hd = d // n_head
    q, k, v = (x.view(n, t, n_head, hd).transpose(1, 2) for x in (q, k, v))
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hd)
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    return (att @ v).transpose(1, 2).reshape(n, t, d)


class _OldAttention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.q_proj = nn.Linear(d, d)
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _attention(self.q_proj(x), self.k_proj(x), self.v_proj(x), self.n_head)
        return self.out_proj(y)


class _OldMLP(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class _OldBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = _OldAttention(d, n_head)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = _OldMLP(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class OldTransformer(nn.Module):
    """Token ids (N, T) → logits (N, T, vocab); GPT-style names."""

    def __init__(
        self, vocab_size: int = 64, d_model: int = 32, n_layer: int = 2, n_head: int = 4,
        max_len: int = 16,
    ) -> None:  # fmt: skip
        super().__init__()
        self.tok_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(_OldBlock(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.tok_emb(ids) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class _NewAttention(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(d, d)
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.output = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _attention(self.query(x), self.key(x), self.value(x), self.n_head)
        return self.output(y)


class _FeedForward(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, 4 * d)
        self.down = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.nn.functional.gelu(self.up(x)))


class _Layer(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d)
        self.attention = _NewAttention(d, n_head)
        self.norm2 = nn.LayerNorm(d)
        self.ffn = _FeedForward(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Embeddings(nn.Module):
    def __init__(self, vocab_size: int, d: int, max_len: int) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d)
        self.positions = nn.Embedding(max_len, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        return self.tokens(ids) + self.positions(pos)


class NewTransformer(nn.Module):
    """Token ids (N, T) → logits (N, T, vocab); the same network as OldTransformer, renamed."""

    def __init__(
        self, vocab_size: int = 64, d_model: int = 32, n_layer: int = 2, n_head: int = 4,
        max_len: int = 16,
    ) -> None:  # fmt: skip
        super().__init__()
        self.embed = _Embeddings(vocab_size, d_model, max_len)
        self.layers = nn.ModuleList(_Layer(d_model, n_head) for _ in range(n_layer))
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x)
        return self.head(self.final_norm(x))
