"""A tiny Llama, twice: ``MetaLlama`` (Meta's names, RoPE on interleaved pairs) and ``HFLlama``
(transformers' names, RoPE on rotate-half rows).

Both compute the same function, but not with the same tensors: q and k rows of every head
are laid out differently, so copying them by name gives a model that loads and is wrong.
``python -m weightmapper.examples.llama OUT.safetensors`` trains a ``MetaLlama`` for a few
hundred steps on a toy sequence task and saves it: a trained checkpoint to convert and prove.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

KWARGS = {"vocab_size": 64, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2}


class RMSNorm(nn.Module):
    """(…, dim) → the same, divided by its root mean square and scaled."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def _angles(seq: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
    f = torch.outer(torch.arange(seq).float(), inv)
    return f.cos(), f.sin()


def rope_interleaved(x: torch.Tensor) -> torch.Tensor:
    """(b, h, t, d) → rotated pairs (x_2i, x_2i+1), as Meta's reference code does."""
    cos, sin = _angles(x.shape[2], x.shape[3])
    xe, xo = x[..., 0::2], x[..., 1::2]
    return torch.stack([xe * cos - xo * sin, xe * sin + xo * cos], -1).flatten(-2)


def rope_rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(b, h, t, d) → rotated halves (x_i, x_i+d/2), as transformers' Llama does."""
    cos, sin = _angles(x.shape[2], x.shape[3])
    x1, x2 = x.chunk(2, -1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


def _attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n_heads: int, n_kv: int, rope
) -> torch.Tensor:
    b, t, _ = q.shape
    q = q.view(b, t, n_heads, -1).transpose(1, 2)
    k = k.view(b, t, n_kv, -1).transpose(1, 2)
    v = v.view(b, t, n_kv, -1).transpose(1, 2)
    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(n_heads // n_kv, 1), v.repeat_interleave(n_heads // n_kv, 1)
    att = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    att = att.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf"))
    return (att.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)


# --- Meta's layout ---------------------------------------------------------------------------


class _MetaAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        hd = dim // n_heads
        self.wq = nn.Linear(dim, n_heads * hd, bias=False)
        self.wk = nn.Linear(dim, n_kv_heads * hd, bias=False)
        self.wv = nn.Linear(dim, n_kv_heads * hd, bias=False)
        self.wo = nn.Linear(n_heads * hd, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _attention(
            self.wq(x), self.wk(x), self.wv(x), self.n_heads, self.n_kv_heads, rope_interleaved
        )
        return self.wo(out)


class _MetaFeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class _MetaBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.attention = _MetaAttention(dim, n_heads, n_kv_heads)
        self.feed_forward = _MetaFeedForward(dim, 3 * dim)
        self.attention_norm = RMSNorm(dim)
        self.ffn_norm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.feed_forward(self.ffn_norm(x))


class MetaLlama(nn.Module):
    """Token ids (b, t) → logits (b, t, vocab), laid out as Meta's reference Llama."""

    def __init__(
        self,
        vocab_size: int = 64,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int = 2,
    ) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(_MetaBlock(dim, n_heads, n_kv_heads) for _ in range(n_layers))
        self.norm = RMSNorm(dim)
        self.output = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(tokens)
        for layer in self.layers:
            h = layer(h)
        return self.output(self.norm(h))


# --- transformers' layout --------------------------------------------------------------------


class _HFAttention(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.num_heads, self.num_key_value_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        hd = self.head_dim
        self.q_proj = nn.Linear(dim, n_heads * hd, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(n_heads * hd, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _attention(
            self.q_proj(x),
            self.k_proj(x),
            self.v_proj(x),
            self.num_heads,
            self.num_key_value_heads,
            rope_rotate_half,
        )
        return self.o_proj(out)


class _HFMLP(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class _HFDecoderLayer(nn.Module):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__()
        self.self_attn = _HFAttention(dim, n_heads, n_kv_heads)
        self.mlp = _HFMLP(dim, 3 * dim)
        self.input_layernorm = RMSNorm(dim)
        self.post_attention_layernorm = RMSNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class _HFModel(nn.Module):
    def __init__(self, vocab_size: int, dim: int, n_layers: int, n_heads: int, n_kv: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(_HFDecoderLayer(dim, n_heads, n_kv) for _ in range(n_layers))
        self.norm = RMSNorm(dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        h = self.embed_tokens(input_ids)
        for layer in self.layers:
            h = layer(h)
        return self.norm(h)


class HFLlama(nn.Module):
    """Token ids (b, t) → logits (b, t, vocab), laid out as transformers' LlamaForCausalLM."""

    def __init__(
        self,
        vocab_size: int = 64,
        dim: int = 32,
        n_layers: int = 2,
        n_heads: int = 4,
        n_kv_heads: int = 2,
    ) -> None:
        super().__init__()
        self.model = _HFModel(vocab_size, dim, n_layers, n_heads, n_kv_heads)
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model(input_ids))


# --- a trained checkpoint --------------------------------------------------------------------


def toy_batch(gen: torch.Generator, batch: int, seq: int, vocab: int) -> torch.Tensor:
    """Generator + sizes → (batch, seq + 1) arithmetic progressions modulo ``vocab``."""
    start = torch.randint(0, vocab, (batch, 1), generator=gen)
    step = torch.randint(1, 4, (batch, 1), generator=gen)
    return (start + step * torch.arange(seq + 1)) % vocab


def train(model: nn.Module, steps: int = 200, seed: int = 0) -> tuple[float, float]:
    """Model + steps → (first loss, last loss) of next-token training on the toy task."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    vocab = model.tok_embeddings.num_embeddings
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = last = float("nan")
    model.train()
    for i in range(steps):
        seq = toy_batch(gen, 16, 16, vocab)
        logits = model(seq[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, vocab), seq[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        last = float(loss.detach())
        if i == 0:
            first = last
    return first, last


def main(argv: list[str] | None = None) -> int:
    """``OUT.safetensors [--steps N]`` → a trained MetaLlama saved there; prints the losses."""
    parser = argparse.ArgumentParser(description="train a tiny Meta-style Llama and save it")
    parser.add_argument("out", help="where to write the .safetensors checkpoint")
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    torch.manual_seed(0)  # the same checkpoint on every machine
    model = MetaLlama(**KWARGS)
    first, last = train(model, args.steps)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, args.out)
    print(f"trained {args.steps} steps: loss {first:.3f} → {last:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
