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


class _Attention(nn.Module):
    """(N, T, D) → the same: causal multi-head self-attention.

    ``names`` are the layout's query, key, value and output projections.
    """

    def __init__(self, d: int, n_head: int, names: tuple[str, ...]) -> None:
        super().__init__()
        self.n_head, self.names = n_head, names
        for name in names:
            self.add_module(name, nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, out = (getattr(self, n) for n in self.names)
        return out(_attention(q(x), k(x), v(x), self.n_head))


class _MLP(nn.Module):
    """(N, T, D) → the same: ``down(gelu(up(x)))``; ``names`` are the layout's up and down."""

    def __init__(self, d: int, names: tuple[str, str]) -> None:
        super().__init__()
        self.names = names
        self.add_module(names[0], nn.Linear(d, 4 * d))
        self.add_module(names[1], nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up, down = (getattr(self, n) for n in self.names)
        return down(torch.nn.functional.gelu(up(x)))


class _PreNorm(nn.Module):
    """(N, T, D) → the same: pre-norm attention, then pre-norm MLP, each added to the stream.

    ``names`` are the layout's attention norm, attention, MLP norm and MLP.
    """

    def __init__(self, d: int, names: tuple[str, ...], attention: nn.Module, mlp: nn.Module):
        super().__init__()
        self.names = names
        parts = (nn.LayerNorm(d), attention, nn.LayerNorm(d), mlp)
        for name, part in zip(names, parts, strict=True):
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention_norm, attention, mlp_norm, mlp = (getattr(self, n) for n in self.names)
        x = x + attention(attention_norm(x))
        return x + mlp(mlp_norm(x))


class _OldAttention(_Attention):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__(d, n_head, ("q_proj", "k_proj", "v_proj", "out_proj"))


class _OldMLP(_MLP):
    def __init__(self, d: int) -> None:
        super().__init__(d, ("fc1", "fc2"))


class _OldBlock(_PreNorm):
    def __init__(self, d: int, n_head: int) -> None:
        names = ("ln_1", "attn", "ln_2", "mlp")
        super().__init__(d, names, _OldAttention(d, n_head), _OldMLP(d))


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


class _NewAttention(_Attention):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__(d, n_head, ("query", "key", "value", "output"))


class _FeedForward(_MLP):
    def __init__(self, d: int) -> None:
        super().__init__(d, ("up", "down"))


class _Layer(_PreNorm):
    def __init__(self, d: int, n_head: int) -> None:
        names = ("norm1", "attention", "norm2", "ffn")
        super().__init__(d, names, _NewAttention(d, n_head), _FeedForward(d))


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
