"""Hand-written re-implementations of GPT-2, BERT and Llama with other names than HF's.

Each computes exactly what the HF model computes (same activations, epsilons, masks and
rotary layout), so a correct conversion gives equal outputs. Sizes come from arguments so
the zoo can build them from the same small numbers as the HF configs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class LMConfig:
    """Sizes of a decoder LM (:class:`HandLlama`, :class:`MetaLlama`, the MoE and held-out ones)."""

    vocab: int = 100
    dim: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    hidden: int = 64
    qkv_bias: bool = False
    experts: int = 0
    top_k: int = 2
    eps: float = 1e-6
    rope_theta: float = 10000.0


# --- parts every decoder here shares, under the names each layout gives --------------------


def stack(layers: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """Layers + tokens → the tokens through each layer in turn."""
    for layer in layers:
        x = layer(x)
    return x


class PreNormBlock(nn.Module):
    """Tokens → tokens: ``x + attention(norm(x))``, then ``x + mlp(norm(x))``.

    ``parts`` are the layout's modules by name, in the order it registers them; ``order``
    names the attention norm, attention, MLP norm and MLP (default: that registration order).
    """

    def __init__(self, parts: dict[str, nn.Module], order: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.order = order or tuple(parts)
        for name, part in parts.items():
            self.add_module(name, part)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        attn_norm, attn, mlp_norm, mlp = (getattr(self, n) for n in self.order)
        x = x + attn(attn_norm(x))
        return x + mlp(mlp_norm(x))


class GatedMlp(nn.Module):
    """Tokens → tokens: ``down(silu(gate(x)) * up(x))``, no biases.

    ``names`` maps gate, up and down to the layout's names, in the order it registers them.
    """

    def __init__(self, d: int, hidden: int, names: dict[str, str]) -> None:
        super().__init__()
        self.names = names
        for part, name in names.items():
            shape = (hidden, d) if part == "down" else (d, hidden)
            self.add_module(name, nn.Linear(*shape, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        gate, up, down = (getattr(self, self.names[p]) for p in ("gate", "up", "down"))
        return down(F.silu(gate(x)) * up(x))


# --- GPT-2 (nanoGPT-like, Linear layers instead of HF's transposed Conv1D) -----------------


class SdpaAttention(nn.Module):
    """Self-attention: fused ``qkv`` or ``query``/``key``/``value``, then ``out_name``.

    Subclasses name the output projection and say whether the attention is causal; the rest
    (registration order, head split, scaled dot product) is the same for GPT-2 and ViT.
    """

    out_name = "out"
    causal = False

    def __init__(self, d: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.fused = heads, fused
        if fused:
            self.qkv = nn.Linear(d, 3 * d)
        else:
            self.query = nn.Linear(d, d)
            self.key = nn.Linear(d, d)
            self.value = nn.Linear(d, d)
        self.add_module(self.out_name, nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, T, D)."""
        b, t, d = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(d, dim=-1)
        else:
            q, k, v = self.query(x), self.key(x), self.value(x)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return getattr(self, self.out_name)(y.transpose(1, 2).reshape(b, t, d))


class GptAttention(SdpaAttention):
    """Causal self-attention: fused ``qkv`` or ``query``/``key``/``value``, then ``out``."""

    out_name = "out"
    causal = True


class GptMlp(nn.Module):
    """up, tanh-GELU, down."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.up = nn.Linear(d, hidden)
        self.down = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        return self.down(F.gelu(self.up(x), approximate="tanh"))


class GptBlock(PreNormBlock):
    """norm_attn, attention, norm_mlp, mlp (pre-norm)."""

    def __init__(self, d: int, heads: int, fused: bool) -> None:
        super().__init__(
            {
                "norm_attn": nn.LayerNorm(d, eps=1e-5),
                "attention": GptAttention(d, heads, fused),
                "norm_mlp": nn.LayerNorm(d, eps=1e-5),
                "mlp": GptMlp(d, 4 * d),
            }
        )


class HandGpt2(nn.Module):
    """tok_emb, pos_emb, blocks.{i}, norm_final, head (tied to tok_emb)."""

    def __init__(
        self, vocab: int, positions: int, d: int, layers: int, heads: int, fused: bool
    ) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, d)
        self.pos_emb = nn.Embedding(positions, d)
        self.blocks = nn.ModuleList(GptBlock(d, heads, fused) for _ in range(layers))
        self.norm_final = nn.LayerNorm(d, eps=1e-5)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, vocab) logits."""
        x = self.tok_emb(ids) + self.pos_emb(torch.arange(ids.shape[1]))
        return self.head(self.norm_final(stack(self.blocks, x)))


# --- BERT (names after fairseq/PyTorch encoders; k, v, q registered in that order) ---------


class BertSelfAttention(nn.Module):
    """k_proj, v_proj, q_proj, out_proj (bidirectional)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        # fairseq registers k before v before q; HF registers query, key, value
        self.k_proj = nn.Linear(d, d)
        self.v_proj = nn.Linear(d, d)
        self.q_proj = nn.Linear(d, d)
        self.out_proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, T, D)."""
        b, t, d = x.shape
        q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class BertFfn(nn.Module):
    """fc1, GELU, fc2."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        return self.fc2(F.gelu(self.fc1(x)))


class BertLayer(nn.Module):
    """self_attn, norm1, ffn, norm2 (post-norm)."""

    def __init__(self, d: int, heads: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.self_attn = BertSelfAttention(d, heads)
        self.norm1 = nn.LayerNorm(d, eps=eps)
        self.ffn = BertFfn(d, hidden)
        self.norm2 = nn.LayerNorm(d, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        x = self.norm1(x + self.self_attn(x))
        return self.norm2(x + self.ffn(x))


class BertEmbeddings(nn.Module):
    """word, position, token_type, norm."""

    def __init__(self, vocab: int, positions: int, types: int, d: int, eps: float) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, d)
        self.position = nn.Embedding(positions, d)
        self.token_type = nn.Embedding(types, d)
        self.norm = nn.LayerNorm(d, eps=eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, D), token type 0 everywhere."""
        pos = torch.arange(ids.shape[1])
        x = self.word(ids) + self.position(pos) + self.token_type(torch.zeros_like(ids))
        return self.norm(x)


class BertPooler(nn.Module):
    """proj + tanh on the first token."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, D)."""
        return torch.tanh(self.proj(x[:, 0]))


class HandBert(nn.Module):
    """embeddings, encoder.layers.{i}, pooler; returns (hidden states, pooled)."""

    def __init__(
        self,
        vocab: int,
        positions: int,
        d: int,
        layers: int,
        heads: int,
        hidden: int,
        types: int = 2,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, positions, types, d, eps)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(BertLayer(d, heads, hidden, eps) for _ in range(layers))
        self.pooler = BertPooler(d)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T) ids → ((B, T, D) hidden states, (B, D) pooled)."""
        x = stack(self.encoder.layers, self.embeddings(ids))
        return x, self.pooler(x)


# --- Llama (litgpt-like names: transformer.h.{i}.attn, mlp.fc_1/fc_2/proj, norm_1/norm_2) --


class RMSNorm(nn.Module):
    """weight * x / rms(x), computed in float32 as HF does."""

    def __init__(self, d: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → normalized tokens."""
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """(B, H, T, hd) → rotary-embedded, half-split layout (HF ``rotate_half``)."""
    hd, t = x.shape[-1], x.shape[-2]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.arange(t, dtype=torch.float32)[:, None] * inv[None]
    emb = torch.cat((freqs, freqs), dim=-1)
    return x * emb.cos() + _rotate_half(x) * emb.sin()


class LlamaAttention(nn.Module):
    """Grouped-query attention: fused ``qkv`` or ``query``/``key``/``value``, then ``proj``."""

    def __init__(
        self,
        d: int,
        heads: int,
        kv_heads: int,
        theta: float,
        fused: bool,
        names: tuple[str, str, str, str] = ("query", "key", "value", "proj"),
    ) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.hd, self.theta = heads, kv_heads, d // heads, theta
        self.fused, self.names = fused, names
        if fused:
            self.qkv = nn.Linear(d, (heads + 2 * kv_heads) * self.hd, bias=False)
        else:
            for n, h in zip(names[:3], (heads, kv_heads, kv_heads), strict=True):
                self.add_module(n, nn.Linear(d, h * self.hd, bias=False))
        self.add_module(names[3], nn.Linear(heads * self.hd, d, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, T, D), causal."""
        b, t, _ = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(
                [self.heads * self.hd, self.kv_heads * self.hd, self.kv_heads * self.hd], dim=-1
            )
        else:
            q, k, v = (getattr(self, n)(x) for n in self.names[:3])
        q = q.reshape(b, t, self.heads, self.hd).transpose(1, 2)
        k = k.reshape(b, t, self.kv_heads, self.hd).transpose(1, 2)
        v = v.reshape(b, t, self.kv_heads, self.hd).transpose(1, 2)
        q, k = rope(q, self.theta), rope(k, self.theta)
        rep = self.heads // self.kv_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1 / math.sqrt(self.hd))
        return getattr(self, self.names[3])(y.transpose(1, 2).reshape(b, t, -1))


class LlamaMlp(GatedMlp):
    """fc_1 (gate), fc_2 (up), proj (down): proj(silu(fc_1(x)) * fc_2(x))."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__(d, hidden, {"gate": "fc_1", "up": "fc_2", "down": "proj"})


class LlamaBlock(PreNormBlock):
    """norm_1, attn, norm_2, mlp (pre-norm)."""

    def __init__(self, c: LMConfig, fused: bool) -> None:
        super().__init__(
            {
                "norm_1": RMSNorm(c.dim, c.eps),
                "attn": LlamaAttention(c.dim, c.heads, c.kv_heads, c.rope_theta, fused),
                "norm_2": RMSNorm(c.dim, c.eps),
                "mlp": LlamaMlp(c.dim, c.hidden),
            }
        )


class HandLlama(nn.Module):
    """transformer.wte, transformer.h.{i}, transformer.ln_f, lm_head (optionally tied)."""

    def __init__(self, c: LMConfig, fused: bool = False, tied: bool = False) -> None:
        super().__init__()
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(c.vocab, c.dim)
        self.transformer.h = nn.ModuleList(LlamaBlock(c, fused) for _ in range(c.layers))
        self.transformer.ln_f = RMSNorm(c.dim, c.eps)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)
        if tied:
            self.lm_head.weight = self.transformer.wte.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, vocab) logits."""
        x = stack(self.transformer.h, self.transformer.wte(ids))
        return self.lm_head(self.transformer.ln_f(x))


# --- torch.nn.TransformerEncoder (fused in_proj) against separate projections --------------


class TorchEncoder(nn.Module):
    """embed + ``nn.TransformerEncoder`` (post-norm, GELU): keys ``encoder.layers.{i}.
    self_attn.in_proj_weight`` (q, k, v stacked), ``linear1``/``linear2``, ``norm1``/``norm2``."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        layer = nn.TransformerEncoderLayer(
            d, heads, hidden, dropout=0.0, activation="gelu", batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, D) hidden states."""
        return self.encoder(self.embed(ids))


class SeparateEncoder(nn.Module):
    """tok_embed + layers.{i} with separate k/v/q projections (the BERT-like layer)."""

    def __init__(self, vocab: int, d: int, layers: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.tok_embed = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(BertLayer(d, heads, hidden, eps=1e-5) for _ in range(layers))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, D) hidden states."""
        return stack(self.layers, self.tok_embed(ids))


# --- Llama as Meta's reference code names it -----------------------------------------------


class MetaFeedForward(GatedMlp):
    """w1 (gate), w2 (down), w3 (up): w2(silu(w1 x) * w3 x); w1 and w3 share a shape."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__(d, hidden, {"gate": "w1", "down": "w2", "up": "w3"})


class MetaBlock(PreNormBlock):
    """attention, feed_forward, then attention_norm, ffn_norm (norms registered last)."""

    def __init__(self, c: LMConfig) -> None:
        names = ("wq", "wk", "wv", "wo")
        super().__init__(
            {
                "attention": LlamaAttention(c.dim, c.heads, c.kv_heads, c.rope_theta, False, names),
                "feed_forward": MetaFeedForward(c.dim, c.hidden),
                "attention_norm": RMSNorm(c.dim, c.eps),
                "ffn_norm": RMSNorm(c.dim, c.eps),
            },
            ("attention_norm", "attention", "ffn_norm", "feed_forward"),
        )


class MetaLlama(nn.Module):
    """tok_embeddings, layers.{i}, norm, output (rotary in HF's half-split layout)."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.tok_embeddings = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList(MetaBlock(c) for _ in range(c.layers))
        self.norm = RMSNorm(c.dim, c.eps)
        self.output = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, vocab) logits."""
        return self.output(self.norm(stack(self.layers, self.tok_embeddings(ids))))
