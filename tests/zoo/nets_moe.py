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

from zoo.nets_text import (
    LlamaAttention,
    LMConfig,
    MetaFeedForward,
    PreNormBlock,
    RMSNorm,
    stack,
)


class Expert(MetaFeedForward):
    """w1 (gate), w2 (down), w3 (up): w2(silu(w1 x) * w3 x)."""


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


class MoeLayer(PreNormBlock):
    """self_attn, block_sparse_moe, input_layernorm, post_attention_layernorm (HF 4.x order)."""

    def __init__(self, c: LMConfig) -> None:
        names = ("q_proj", "k_proj", "v_proj", "o_proj")
        super().__init__(
            {
                "self_attn": LlamaAttention(c.dim, c.heads, c.kv_heads, c.rope_theta, False, names),
                "block_sparse_moe": SparseMoe(c.dim, c.hidden, c.experts, c.top_k),
                "input_layernorm": RMSNorm(c.dim, c.eps),
                "post_attention_layernorm": RMSNorm(c.dim, c.eps),
            },
            ("input_layernorm", "self_attn", "post_attention_layernorm", "block_sparse_moe"),
        )


class MixtralV4(nn.Module):
    """model.embed_tokens, model.layers.{i}, model.norm, lm_head."""

    def __init__(self, c: LMConfig) -> None:
        super().__init__()
        self.model = nn.Module()
        self.model.embed_tokens = nn.Embedding(c.vocab, c.dim)
        self.model.layers = nn.ModuleList(MoeLayer(c) for _ in range(c.layers))
        self.model.norm = RMSNorm(c.dim, c.eps)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, vocab) logits."""
        x = stack(self.model.layers, self.model.embed_tokens(ids))
        return self.lm_head(self.model.norm(x))
