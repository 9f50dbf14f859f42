"""A BERT sentence encoder built on ``torch.nn.MultiheadAttention``: ids → mean-pooled embeddings.

A re-implementation of the BERT encoder as sentence-transformers uses it (all-MiniLM-L6-v2:
BERT, mean pooling over real tokens, L2 normalisation) with other names, other nesting and
fused attention projections: ``nn.MultiheadAttention`` keeps query, key and value in one
``in_proj_weight`` of shape (3·hidden, hidden), where transformers' ``BertModel`` has three
``Linear`` layers. Moving a trained ``BertModel`` checkpoint onto it needs a merge of the
three projections, not only renames. Inference only (no dropout).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncoderLayer(nn.Module):
    """One post-norm BERT layer: self-attention and a GELU MLP, each added and normalised."""

    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(hidden, heads, batch_first=True)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.mlp_in = nn.Linear(hidden, intermediate)
        self.mlp_out = nn.Linear(intermediate, hidden)
        self.mlp_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        """(batch, tokens, hidden) + padding mask (True = padding) → (batch, tokens, hidden)."""
        a, _ = self.attention(x, x, x, key_padding_mask=padding, need_weights=False)
        x = self.attention_norm(x + a)
        return self.mlp_norm(x + self.mlp_out(F.gelu(self.mlp_in(x))))


class SentenceEncoder(nn.Module):
    """Token ids → per-token hidden states (``forward``) or sentence embeddings (``encode``).

    Defaults are all-MiniLM-L6-v2's sizes (BERT with 6 layers, hidden 384, 12 heads).
    """

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden: int = 384,
        layers: int = 6,
        heads: int = 12,
        intermediate: int = 1536,
        max_positions: int = 512,
        segments: int = 2,
        eps: float = 1e-12,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, hidden)
        self.position_embedding = nn.Embedding(max_positions, hidden)
        self.segment_embedding = nn.Embedding(segments, hidden)
        self.embedding_norm = nn.LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            EncoderLayer(hidden, heads, intermediate, eps) for _ in range(layers)
        )

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, tokens) ids + optional mask (1 = real token) → (batch, tokens, hidden)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.token_embedding(input_ids) + self.position_embedding(positions)
        # Every token is in segment 0 for single sentences, as the tokenizer marks them.
        x = x + self.segment_embedding.weight[0]
        x = self.embedding_norm(x)
        padding = None if attention_mask is None else attention_mask == 0
        for layer in self.layers:
            x = layer(x, padding)
        return x

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(batch, tokens) ids + mask → (batch, hidden) unit-length mean-pooled embeddings."""
        hidden = self(input_ids, attention_mask)
        return mean_pool(hidden, attention_mask)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(batch, tokens, hidden) + mask → (batch, hidden): the normalised mean over real tokens.

    The pooling of sentence-transformers' all-MiniLM-L6-v2 (mean of token states, then L2
    normalisation); shared so a reference and a converted model pool identically.
    """
    if attention_mask is None:
        attention_mask = torch.ones(hidden.shape[:2], dtype=hidden.dtype, device=hidden.device)
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return F.normalize(pooled, p=2, dim=1)
