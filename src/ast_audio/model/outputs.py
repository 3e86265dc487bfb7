"""Model outputs: dataclasses readable by attribute, by key and by position, like the public implementation's."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass
class ModelOutput:
    """Base of the output dataclasses; fields that are None are skipped by keys, indexing and `to_tuple`."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.keys())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())


@dataclasses.dataclass
class BaseModelOutputWithPooling(ModelOutput):
    """Output of `ASTModel`.

    last_hidden_state: (batch, tokens, hidden) after the final LayerNorm.
    pooler_output: (batch, hidden), the mean of the CLS and distillation tokens.
    hidden_states: embeddings then each layer's output (before the final LayerNorm), when asked for.
    attentions: each layer's attention probabilities (batch, heads, tokens, tokens), when asked for.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclasses.dataclass
class SequenceClassifierOutput(ModelOutput):
    """Output of `ASTForAudioClassification`: loss (when labels are given), logits (batch, num_labels), and
    hidden_states / attentions as in `BaseModelOutputWithPooling`."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
