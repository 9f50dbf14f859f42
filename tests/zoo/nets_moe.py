"""A Mixtral written as transformers 4.x laid it out: one Linear per expert per projection.

``model.layers.{i}.block_sparse_moe.experts.{e}.w1/w2/w3`` (gate, down, up) and a ``gate``
router; transformers 5.x stores the same weights stacked (``mlp.experts.gate_up_proj`` of
shape (E, 2I, D) and ``down_proj`` (E, D, I)), so the conversion stacks 2E + E tensors per
layer. Attention and norms keep HF's names; the routing matches HF's top-k router exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.nets_text import LlamaAttention, RMSNorm


class Expert(nn.Module):
    """w1 (gate), w2 (down), w3 (up): w2(silu(w1 x) * w3 x)."""

    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d, hidden, bias=False)
        self.w2 = nn.Linear(hidden, d, bias=False)
        self.w3 = nn.Linear(d, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class SparseMoe(nn.Module):
    """gate (router), experts.{e}: softmax, top-k, renormalized weights."""

    def __init__(self, d: int, hidden: int, experts: int, top_k: int) -> None:
        super().__init__()
        self.top_k = top_k
        self.gate = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList(Expert(d, hidden) for _ in range(experts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) → (B, T, D)."""
        b, t, d = x.shape
        h = x.reshape(-1, d)
        probs = F.softmax(self.gate(h).float(), dim=-1)
        top_v, top_i = torch.topk(probs, self.top_k, dim=-1)
        top_v = top_v / top_v.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e, expert in enumerate(self.experts):
            rows, pos = torch.where(top_i == e)
            if rows.numel():
                out.index_add_(0, rows, expert(h[rows]) * top_v[rows, pos, None].to(h.dtype))
        return out.reshape(b, t, d)


class MoeLayer(nn.Module):
    """self_attn, block_sparse_moe, input_layernorm, post_attention_layernorm (HF 4.x order)."""

    def __init__(
        self,
        d: int,
        heads: int,
        kv_heads: int,
        hidden: int,
        experts: int,
        top_k: int,
        eps: float,
        theta: float,
    ) -> None:
        super().__init__()
        self.self_attn = LlamaAttention(
            d, heads, kv_heads, theta, fused=False, names=("q_proj", "k_proj", "v_proj", "o_proj")
        )
        self.block_sparse_moe = SparseMoe(d, hidden, experts, top_k)
        self.input_layernorm = RMSNorm(d, eps)
        self.post_attention_layernorm = RMSNorm(d, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens → tokens."""
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.block_sparse_moe(self.post_attention_layernorm(x))


class MixtralV4(nn.Module):
    """model.embed_tokens, model.layers.{i}, model.norm, lm_head."""

    def __init__(
        self,
        vocab: int,
        d: int,
        layers: int,
        heads: int,
        kv_heads: int,
        hidden: int,
        experts: int,
        top_k: int,
        eps: float,
        theta: float,
    ) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(vocab, d)
        self.model.layers = nn.ModuleList(
            MoeLayer(d, heads, kv_heads, hidden, experts, top_k, eps, theta) for _ in range(layers)
        )
        self.model.norm = RMSNorm(d, eps)
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, vocab) logits."""
        x = self.model.embed_tokens(ids)
        for layer in self.model.layers:
            x = layer(x)
        return self.lm_head(self.model.norm(x))
