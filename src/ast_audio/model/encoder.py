"""The pre-norm transformer layer and the stack of them."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ast_audio.model.activations import get_activation
from ast_audio.model.attention import ASTAttention
from ast_audio.model.configuration import ASTConfig


class ASTIntermediate(nn.Module):
    """First MLP projection (hidden -> intermediate) and its activation."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation = get_activation(config.hidden_act)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states))


class ASTOutput(nn.Module):
    """Second MLP projection (intermediate -> hidden)."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.dense(hidden_states))


class ASTLayer(nn.Module):
    """x + Attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.attention = ASTAttention(config, attn_implementation)
        self.intermediate = ASTIntermediate(config)
        self.output = ASTOutput(config)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, num_queries: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """With `num_queries`, only the first `num_queries` tokens are computed (attending to all tokens)."""
        attended, probs = self.attention(self.layernorm_before(hidden_states), output_attentions, num_queries)
        if num_queries is not None:
            hidden_states = hidden_states[:, :num_queries]
        hidden_states = hidden_states + attended
        hidden_states = hidden_states + self.output(self.intermediate(self.layernorm_after(hidden_states)))
        return hidden_states, probs


class ASTEncoder(nn.Module):
    """`num_hidden_layers` layers applied in turn, optionally recording every hidden state and attention map."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        self.layer = nn.ModuleList([ASTLayer(config, attn_implementation) for _ in range(config.num_hidden_layers)])
        self.gradient_checkpointing = False

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False, output_hidden_states: bool = False,
        last_layer_tokens: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """`last_layer_tokens`: compute only the first that many tokens in the last layer (when only they are
        read, e.g. for the pooled output)."""
        all_hidden: list[torch.Tensor] = [hidden_states] if output_hidden_states else []
        all_attentions: list[torch.Tensor] = []
        for index, layer in enumerate(self.layer):
            num_queries = last_layer_tokens if index == len(self.layer) - 1 else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states, probs = checkpoint(
                    layer, hidden_states, output_attentions, num_queries, use_reentrant=False
                )
            else:
                hidden_states, probs = layer(hidden_states, output_attentions, num_queries)
            if output_hidden_states:
                all_hidden.append(hidden_states)
            if output_attentions:
                all_attentions.append(probs)
        return (
            hidden_states,
            tuple(all_hidden) if output_hidden_states else None,
            tuple(all_attentions) if output_attentions else None,
        )
