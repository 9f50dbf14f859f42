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


# --- the parts both layouts share, under names each layout gives -----------------------------


class _Attention(nn.Module):
    """(b, t, dim) → the same: causal grouped-query attention with RoPE.

    ``names`` are the layout's query, key, value and output projections; a layout's subclass
    keeps the head counts under its library's own attribute names.
    """

    def __init__(
        self, dim: int, n_heads: int, n_kv_heads: int, names: tuple[str, ...], rope
    ) -> None:
        super().__init__()
        self.names, self.rope, self.head_counts = names, rope, (n_heads, n_kv_heads)
        hd = dim // n_heads
        q, kv, out = (dim, n_heads * hd), (dim, n_kv_heads * hd), (n_heads * hd, dim)
        for name, (fan_in, fan_out) in zip(names, (q, kv, kv, out), strict=True):
            self.add_module(name, nn.Linear(fan_in, fan_out, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v, out = (getattr(self, n) for n in self.names)
        return out(_attention(q(x), k(x), v(x), *self.head_counts, self.rope))


class _GatedMLP(nn.Module):
    """(…, dim) → the same: ``down(silu(gate(x)) * up(x))``.

    ``names`` maps gate, up and down to the layout's names, in the order it creates them.
    """

    def __init__(self, dim: int, hidden: int, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names
        for part, name in names.items():
            shape = (hidden, dim) if part == "down" else (dim, hidden)
            self.add_module(name, nn.Linear(*shape, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up, down = (getattr(self, self.names[p]) for p in ("gate", "up", "down"))
        return down(F.silu(gate(x)) * up(x))


class _Block(nn.Module):
    """(b, t, dim) → the same: pre-norm attention, then pre-norm MLP, each added to the stream.

    ``names`` are the layout's attention, MLP, attention norm and MLP norm.
    """

    def __init__(self, dim: int, names: tuple[str, ...], attention: nn.Module, mlp: nn.Module):
        super().__init__()
        self.names = names
        for name, part in zip(names, (attention, mlp, RMSNorm(dim), RMSNorm(dim)), strict=True):
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attention, mlp, attention_norm, mlp_norm = (getattr(self, n) for n in self.names)
        x = x + attention(attention_norm(x))
        return x + mlp(mlp_norm(x))


def _decode(embed: nn.Module, layers: nn.ModuleList, norm: nn.Module, ids: torch.Tensor):
    """Embedding, blocks and final norm + token ids (b, t) → the normalised hidden states."""
    h = embed(ids)
    for layer in layers:
        h = layer(h)
    return norm(h)


# --- Meta's layout ---------------------------------------------------------------------------


class _MetaAttention(_Attention):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        super().__init__(dim, n_heads, n_kv_heads, ("wq", "wk", "wv", "wo"), rope_interleaved)
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads


class _MetaFeedForward(_GatedMLP):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden, {"gate": "w1", "down": "w2", "up": "w3"})


class _MetaBlock(_Block):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        names = ("attention", "feed_forward", "attention_norm", "ffn_norm")
        attention = _MetaAttention(dim, n_heads, n_kv_heads)
        super().__init__(dim, names, attention, _MetaFeedForward(dim, 3 * dim))


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
        return self.output(_decode(self.tok_embeddings, self.layers, self.norm, tokens))


# --- transformers' layout --------------------------------------------------------------------


class _HFAttention(_Attention):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        super().__init__(dim, n_heads, n_kv_heads, names, rope_rotate_half)
        self.num_heads, self.num_key_value_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads


class _HFMLP(_GatedMLP):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden, {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"})


class _HFDecoderLayer(_Block):
    def __init__(self, dim: int, n_heads: int, n_kv_heads: int) -> None:
        names = ("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
        attention = _HFAttention(dim, n_heads, n_kv_heads)
        super().__init__(dim, names, attention, _HFMLP(dim, 3 * dim))


class _HFModel(nn.Module):
    def __init__(self, vocab_size: int, dim: int, n_layers: int, n_heads: int, n_kv: int) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab_size, dim)
        self.layers = nn.ModuleList(_HFDecoderLayer(dim, n_heads, n_kv) for _ in range(n_layers))
        self.norm = RMSNorm(dim)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return _decode(self.embed_tokens, self.layers, self.norm, input_ids)


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
