"""The preprocessor_config.json that public AST checkpoints carry for their feature extractor."""

from __future__ import annotations

import os
from typing import Any

AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
PREPROCESSOR_CONFIG_NAME = "preprocessor_config.json"


def default_preprocessor_config(
    num_mel_bins: int = 128, max_length: int = 1024, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD,
    sampling_rate: int = 16000,
) -> dict[str, Any]:
    """The feature extractor settings as the public checkpoints write them."""
    return {
        "do_normalize": True,
        "feature_extractor_type": "ASTFeatureExtractor",
        "feature_size": 1,
        "max_length": max_length,
        "mean": mean,
        "num_mel_bins": num_mel_bins,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": False,
        "sampling_rate": sampling_rate,
        "std": std,
    }


def write_preprocessor_config(directory: str | os.PathLike, settings: dict[str, Any]) -> str:
    import json

    from ast_audio.io_utils import atomic_write_text

    path = os.path.join(directory, PREPROCESSOR_CONFIG_NAME)
    atomic_write_text(path, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return path
