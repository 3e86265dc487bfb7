"""Random checkpoints of the default geometry for the benchmark scripts (no download needed)."""

from __future__ import annotations

import tempfile

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def random_checkpoint(small: bool = False, num_labels: int = 527) -> str:
    """A temporary checkpoint directory: the base AudioSet model (or a 2-layer, 64-wide one) with seeded
    random weights and the default preprocessor config."""
    import torch

    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    directory = tempfile.mkdtemp()
    torch.manual_seed(0)
    ASTForAudioClassification(ASTConfig(num_labels=num_labels, **(SMALL if small else {}))).save_pretrained(directory)
    ASTFeatureExtractor().save_pretrained(directory)
    return directory
