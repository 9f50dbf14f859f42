"""Hand-written text transformers with other libraries' names, matching HF models' math.

- :class:`MetaStyleLM`: a decoder with Meta-reference names (``tok_embeddings``,
  ``attention.wq``, ``feed_forward.w1/w2/w3``, ``attention_norm``, ``output``), RMSNorm, RoPE
  in HF's rotate-half convention, grouped-query attention, optional q/k/v biases (Qwen2) and
  an optional mixture of experts with experts stacked in 3-d tensors (``experts.w1`` (E, I, H),
  ``experts.w3`` (E, I, H), ``experts.w2`` (E, H, I), as grouped-GEMM MoE code stores them).
- :class:`NanoBert`: a post-norm BERT encoder with plain names (``attn.query``,
  ``ff.fc_in``), the math of HF DistilBERT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from zoo.nets_text import GatedMlp, LMConfig, PreNormBlock, stack


class RMSNorm(nn.Module):
    """Root-mean-square norm with a ``weight`` (computed in float32, as HF does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def _rope(n: int, d: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d)
    freqs = torch.outer(torch.arange(n).float(), inv)
    emb = torch.cat([freqs, freqs], -1)
    return emb.cos(), emb.sin()


class MetaAttention(nn.Module):
    """``wq``, ``wk``, ``wv``, ``wo`` with grouped-query attention and RoPE."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.c = c
        d = c.dim // c.heads
        self.wq = nn.Linear(c.dim, c.heads * d, bias=c.qkv_bias)
        self.wk = nn.Linear(c.dim, c.kv_heads * d, bias=c.qkv_bias)
        self.wv = nn.Linear(c.dim, c.kv_heads * d, bias=c.qkv_bias)
        self.wo = nn.Linear(c.heads * d, c.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.c
        b, n, _ = x.shape
        d = c.dim // c.heads
        q = self.wq(x).view(b, n, c.heads, d).transpose(1, 2)
        k = self.wk(x).view(b, n, c.kv_heads, d).transpose(1, 2)
        v = self.wv(x).view(b, n, c.kv_heads, d).transpose(1, 2)
        cos, sin = _rope(n, d, c.rope_theta)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        rep = c.heads // c.kv_heads
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).reshape(b, n, c.heads * d))


class FeedForward(GatedMlp):
    """SwiGLU ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__(dim, hidden, {"gate": "w1", "down": "w2", "up": "w3"})


class StackedExperts(nn.Module):
    """Experts as 3-d tensors: ``w1``, ``w3`` (E, I, H) and ``w2`` (E, H, I)."""

    def __init__(self, experts: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.zeros(experts, hidden, dim))
        self.w3 = nn.Parameter(torch.zeros(experts, hidden, dim))
        self.w2 = nn.Parameter(torch.zeros(experts, dim, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(T, H) → (E, T, H): every expert applied to every token."""
        h = F.silu(torch.einsum("th,eih->eti", x, self.w1)) * torch.einsum(
            "th,eih->eti", x, self.w3
        )
        return torch.einsum("eti,ehi->eth", h, self.w2)


class MoEFeedForward(nn.Module):
    """Top-k routed mixture: ``gate`` Linear (E, H), ``experts`` stacked; weights renormalized."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.top_k = c.top_k
        self.gate = nn.Linear(c.dim, c.experts, bias=False)
        self.experts = StackedExperts(c.experts, c.dim, c.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        probs = F.softmax(self.gate(x).float(), dim=-1)
        top, idx = torch.topk(probs, self.top_k, dim=-1)
        top = top / top.sum(-1, keepdim=True)
        weights = torch.zeros_like(probs).scatter(1, idx, top)  # (T, E)
        y = torch.einsum("te,eth->th", weights.to(x.dtype), self.experts(x))
        return y.reshape(shape)


class MetaBlock(PreNormBlock):
    """``attention``, ``feed_forward``, ``attention_norm``, ``ffn_norm`` (pre-norm)."""

    def __init__(self, c: LMConfig) -> None:
        attention = MetaAttention(c)
        mlp = MoEFeedForward(c) if c.experts else FeedForward(c.dim, c.hidden)
        super().__init__(
            {
                "attention": attention,
                "feed_forward": mlp,
                "attention_norm": RMSNorm(c.dim, c.eps),
                "ffn_norm": RMSNorm(c.dim, c.eps),
            },
            ("attention_norm", "attention", "ffn_norm", "feed_forward"),
        )


class MetaStyleLM(nn.Module):
    """Decoder LM with Meta-reference names; input ids (B, T) → logits (B, T, vocab)."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList([MetaBlock(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.dim, c.eps)
        self.output = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(stack(self.layers, self.tok_embeddings(ids))))


# --- DistilBERT math under plain names ------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    """Sizes of a :class:`NanoBert`."""

    vocab: int = 100
    dim: int = 32
    layers: int = 2
    heads: int = 4
    hidden: int = 64
    positions: int = 16
    eps: float = 1e-12


class NanoBertLayer(nn.Module):
    """Post-norm layer: ``attn.query/key/value/out``, ``norm_attn``, ``ff.fc_in/fc_out``,
    ``norm_ff``."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.heads = c.heads
        self.attn = nn.Module()
        for name in ("query", "key", "value", "out"):
            self.attn.add_module(name, nn.Linear(c.dim, c.dim))
        self.norm_attn = nn.LayerNorm(c.dim, eps=c.eps)
        self.ff = nn.Module()
        self.ff.fc_in = nn.Linear(c.dim, c.hidden)
        self.ff.fc_out = nn.Linear(c.hidden, c.dim)
        self.norm_ff = nn.LayerNorm(c.dim, eps=c.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        d = dim // self.heads

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d).transpose(1, 2)

        q, k, v = heads(self.attn.query(x)), heads(self.attn.key(x)), heads(self.attn.value(x))
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        y = self.attn.out((att @ v).transpose(1, 2).reshape(b, n, dim))
        x = self.norm_attn(x + y)
        return self.norm_ff(x + self.ff.fc_out(F.gelu(self.ff.fc_in(x))))


class NanoBert(nn.Module):
    """``embed.tokens``, ``embed.positions``, ``embed.norm``, ``encoder.I``; ids → hidden states."""

    def __init__(self, c: BertConfig) -> None:
        super().__init__()
        self.embed = nn.Module()
        self.embed.tokens = nn.Embedding(c.vocab, c.dim)
        self.embed.positions = nn.Embedding(c.positions, c.dim)
        self.embed.norm = nn.LayerNorm(c.dim, eps=c.eps)
        self.encoder = nn.ModuleList([NanoBertLayer(c) for _ in range(c.layers)])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1])
        x = self.embed.norm(self.embed.tokens(ids) + self.embed.positions(pos)[None])
        for layer in self.encoder:
            x = layer(x)
        return x


# --- OpenAI Whisper audio encoder -------------------------------------------------------------


@dataclass(frozen=True)
class WhisperConfig:
    """Sizes of an :class:`OpenAIWhisperEncoder` (input length is 2 × ``ctx``)."""

    mels: int = 8
    ctx: int = 8
    dim: int = 32
    heads: int = 4
    layers: int = 2


class WhisperAttention(nn.Module):
    """openai-whisper ``MultiHeadAttention``: ``query``, ``key`` (no bias), ``value``, ``out``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, c // self.heads).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        )
        return self.out(y.transpose(1, 2).reshape(b, n, c))


class WhisperBlock(nn.Module):
    """openai-whisper ``ResidualAttentionBlock``: ``attn``, ``attn_ln``, ``mlp.0/2``, ``mlp_ln``."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.attn = WhisperAttention(dim, heads)
        self.attn_ln = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.mlp_ln = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class OpenAIWhisperEncoder(nn.Module):
    """openai-whisper ``AudioEncoder``: ``positional_embedding`` (a persistent buffer),
    ``conv1``, ``conv2``, ``blocks.I``, ``ln_post``; mel (B, mels, 2·ctx) → (B, ctx, dim)."""

    def __init__(self, c: WhisperConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c.mels, c.dim, 3, padding=1)
        self.conv2 = nn.Conv1d(c.dim, c.dim, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", torch.zeros(c.ctx, c.dim))
        self.blocks = nn.ModuleList([WhisperBlock(c.dim, c.heads) for _ in range(c.layers)])
        self.ln_post = nn.LayerNorm(c.dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).permute(0, 2, 1)
        x = x + self.positional_embedding
        for block in self.blocks:
            x = block(x)
        return self.ln_post(x)


# --- T5X (Flax) encoder layout: kernels stored (in, out) ----------------------------------------


@dataclass(frozen=True)
class T5Sizes:
    """Sizes of a :class:`T5XEncoder` (T5 v1.1: gated GELU, shared relative position bias)."""

    vocab: int = 100
    dim: int = 32
    heads: int = 4
    d_kv: int = 8
    ff: int = 48
    layers: int = 2
    buckets: int = 8
    max_distance: int = 16
    eps: float = 1e-6


class _Dense(nn.Module):
    """Flax ``Dense`` without bias: ``kernel`` (in, out), applied as ``x @ kernel``."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.kernel = nn.Parameter(torch.zeros(n_in, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.kernel


class _T5XNorm(nn.Module):
    """T5 RMS norm with a ``scale``."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.scale * (x * torch.rsqrt(var + self.eps))


def t5_relative_buckets(n: int, buckets: int, max_distance: int) -> torch.Tensor:
    """Sequence length → (n, n) bidirectional relative-position bucket ids (Mesh TF's rule)."""
    rel = torch.arange(n)[None, :] - torch.arange(n)[:, None]
    half = buckets // 2
    out = (rel > 0).long() * half
    rel = rel.abs()
    exact = half // 2
    large = (
        exact
        + (torch.log(rel.float() / exact) / math.log(max_distance / exact) * (half - exact)).long()
    )
    large = torch.clamp(large, max=half - 1)
    return out + torch.where(rel < exact, rel, large)


class _T5XLayer(nn.Module):
    """``pre_attention_layer_norm``, ``attention.query/key/value/out``, ``pre_mlp_layer_norm``,
    ``mlp.wi_0/wi_1/wo``."""

    def __init__(self, c: T5Sizes) -> None:
        super().__init__()
        inner = c.heads * c.d_kv
        self.c = c
        self.pre_attention_layer_norm = _T5XNorm(c.dim, c.eps)
        self.attention = nn.Module()
        self.attention.query = _Dense(c.dim, inner)
        self.attention.key = _Dense(c.dim, inner)
        self.attention.value = _Dense(c.dim, inner)
        self.attention.out = _Dense(inner, c.dim)
        self.pre_mlp_layer_norm = _T5XNorm(c.dim, c.eps)
        self.mlp = nn.Module()
        self.mlp.wi_0 = _Dense(c.dim, c.ff)
        self.mlp.wi_1 = _Dense(c.dim, c.ff)
        self.mlp.wo = _Dense(c.ff, c.dim)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        c, a = self.c, self.attention
        b, n, _ = x.shape
        h = self.pre_attention_layer_norm(x)

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, c.heads, c.d_kv).transpose(1, 2)

        # T5 does not scale q·k; the position bias is added to the scores
        scores = heads(a.query(h)) @ heads(a.key(h)).transpose(-1, -2) + bias
        y = torch.softmax(scores.float(), dim=-1) @ heads(a.value(h))
        x = x + a.out(y.transpose(1, 2).reshape(b, n, c.heads * c.d_kv))
        h = self.pre_mlp_layer_norm(x)
        g = F.gelu(self.mlp.wi_0(h), approximate="tanh") * self.mlp.wi_1(h)
        return x + self.mlp.wo(g)


class T5XEncoder(nn.Module):
    """T5X parameter tree as modules: ``token_embedder.embedding``,
    ``encoder.relpos_bias.rel_embedding`` (heads, buckets), ``encoder.layers_I``,
    ``encoder.encoder_norm.scale``; ids → hidden states."""

    def __init__(self, c: T5Sizes) -> None:
        super().__init__()
        self.c = c
        self.token_embedder = nn.Module()
        self.token_embedder.embedding = nn.Parameter(torch.zeros(c.vocab, c.dim))
        self.encoder = nn.Module()
        self.encoder.relpos_bias = nn.Module()
        self.encoder.relpos_bias.rel_embedding = nn.Parameter(torch.zeros(c.heads, c.buckets))
        for i in range(c.layers):
            self.encoder.add_module(f"layers_{i}", _T5XLayer(c))
        self.encoder.encoder_norm = _T5XNorm(c.dim, c.eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        c = self.c
        x = self.token_embedder.embedding[ids]
        buckets = t5_relative_buckets(ids.shape[1], c.buckets, c.max_distance)
        bias = self.encoder.relpos_bias.rel_embedding[:, buckets][None]  # (1, H, n, n)
        for i in range(c.layers):
            x = getattr(self.encoder, f"layers_{i}")(x, bias)
        return self.encoder.encoder_norm(x)
