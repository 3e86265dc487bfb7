"""Multi-head self-attention with two interchangeable kernels: "sdpa" (fused, default) and "eager"."""

from __future__ import annotations

import torch
from torch import nn

from ast_audio.model.configuration import ASTConfig
from ast_audio.errors import ConfigError

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")


def check_attn_implementation(name: str) -> str:
    if name not in ATTENTION_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation must be one of {ATTENTION_IMPLEMENTATIONS}, got {name!r}")
    return name


def eager_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scale: float, dropout_p: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale) v with the softmax in float32; returns the output and the probabilities."""
    scores = torch.matmul(query * scale, key.transpose(-1, -2))  # scaling q is cheaper than scaling q k^T
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if dropout_p > 0.0:
        probs = nn.functional.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, value), probs


class ASTSelfAttention(nn.Module):
    """Query/key/value projections and the attention kernel; heads are split from the hidden dimension."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        if config.hidden_size % config.num_attention_heads:  # checked here, as the reference does, not in the config
            raise ConfigError(
                f"The hidden size ({config.hidden_size}) is not a multiple of the number of attention heads "
                f"({config.num_attention_heads})"
            )
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scale = self.head_dim**-0.5
        self.dropout_p = config.attention_probs_dropout_prob
        self.attn_implementation = check_attn_implementation(attn_implementation)
        self.query = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = nn.Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, hidden) -> (batch, heads, tokens, head_dim)."""
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention of every token (or of the first `num_queries` tokens only) over every token.

        (One fused query/key/value multiply by the concatenated weights measured no faster on CPU, so the
        three projections stay apart.)
        """
        queries = hidden_states if num_queries is None else hidden_states[:, :num_queries]
        query = self._split_heads(self.query(queries))
        key, value = self._split_heads(self.key(hidden_states)), self._split_heads(self.value(hidden_states))
        dropout_p = self.dropout_p if self.training else 0.0
        if self.attn_implementation == "eager" or output_attentions:
            context, probs = eager_attention(query, key, value, self.scale, dropout_p)
        else:
            context = nn.functional.scaled_dot_product_attention(
                query, key, value, dropout_p=dropout_p, scale=self.scale
            )
            probs = None
        context = context.transpose(1, 2).reshape(queries.shape)
        return context, probs if output_attentions else None


class ASTSelfOutput(nn.Module):
    """Output projection of the attention block."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ASTAttention(nn.Module):
    """Self-attention followed by its output projection (the residual is added by the layer)."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.attention = ASTSelfAttention(config, attn_implementation)
        self.output = ASTSelfOutput(config)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        context, probs = self.attention(hidden_states, output_attentions, num_queries)
        return self.output(context), probs
