"""The network inference runs and ONNX exports: one forward pass giving the logits and the pooled embedding."""

from __future__ import annotations

import torch
from torch import nn

from ast_audio.model.modeling import ASTForAudioClassification


class LogitsAndPooled(nn.Module):
    """What inference needs from one forward pass: logits and the pooled embedding (also the ONNX graph's outputs)."""

    def __init__(self, model: ASTForAudioClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.forward_features(input_values)
        return self.model.forward_head(pooled), pooled
