"""Patch, token and position embeddings: spectrogram (batch, frames, mel bins) -> token sequence."""

from __future__ import annotations

import torch
from torch import nn

from ast_audio.model.configuration import ASTConfig


class ASTPatchEmbeddings(nn.Module):
    """Strided Conv2d over the spectrogram seen as a 1-channel image of height mel bins and width frames."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.projection = nn.Conv2d(
            1,
            config.hidden_size,
            kernel_size=(config.patch_size, config.patch_size),
            stride=(config.frequency_stride, config.time_stride),
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        image = input_values.transpose(1, 2).unsqueeze(1)  # (B, 1, mel_bins, frames)
        patches = self.projection(image)  # (B, hidden, frequency_patches, time_patches)
        # Frequency-major order: token index = f * time_patches + t, as in the released checkpoints.
        return patches.flatten(2).transpose(1, 2)


class ASTEmbeddings(nn.Module):
    """Prepends the CLS and distillation tokens to the patch tokens and adds learned position embeddings."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.distillation_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = ASTPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 2, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embeddings(input_values)
        batch_size = patches.shape[0]
        tokens = torch.cat(
            (self.cls_token.expand(batch_size, -1, -1), self.distillation_token.expand(batch_size, -1, -1), patches),
            dim=1,
        )
        return self.dropout(tokens + self.position_embeddings)
