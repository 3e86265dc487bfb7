"""ast-audio: the Audio Spectrogram Transformer (Gong, Chung, Glass, 2021) in PyTorch.

Heavy modules (torch and the model) are imported on first use, so ``import ast_audio`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "ASTConfig": "ast_audio.model.configuration",
    "ASTModel": "ast_audio.model.modeling",
    "ASTForAudioClassification": "ast_audio.model.modeling",
    "ASTPreTrainedModel": "ast_audio.model.modeling",
    "convert_original": "ast_audio.checkpoints.release",
    "AudioClassifier": "ast_audio.inference.classifier",
    "ClipResult": "ast_audio.inference.results",
    "pipeline": "ast_audio.inference.pipelines",
    "ASTFeatureExtractor": "ast_audio.features.extractor",
    "BatchFeature": "ast_audio.features.extractor",
    "FbankOptions": "ast_audio.features.kaldi",
    "fbank": "ast_audio.features.kaldi",
    "AudioFile": "ast_audio.audio.decode",
    "load_audio": "ast_audio.audio.decode",
    "audio_info": "ast_audio.audio.decode",
    "find_audio_files": "ast_audio.audio.files",
    "read_manifest": "ast_audio.audio.files",
    "dataset_statistics": "ast_audio.features.stats",
    "AudioError": "ast_audio.errors",
    "ASTAudioError": "ast_audio.errors",
    "ConfigError": "ast_audio.errors",
    "CheckpointError": "ast_audio.errors",
    "CheckpointNotFoundError": "ast_audio.errors",
    "InputShapeError": "ast_audio.errors",
    "keep_freed_memory": "ast_audio.allocator",
}

__all__ = sorted(_EXPORTS) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from ast_audio.allocator import keep_freed_memory
    from ast_audio.audio.decode import AudioFile, audio_info, load_audio
    from ast_audio.inference.classifier import AudioClassifier
    from ast_audio.model.configuration import ASTConfig
    from ast_audio.checkpoints.release import convert_original
    from ast_audio.errors import (
        ASTAudioError,
        AudioError,
        CheckpointError,
        CheckpointNotFoundError,
        ConfigError,
        InputShapeError,
    )
    from ast_audio.features.extractor import ASTFeatureExtractor, BatchFeature
    from ast_audio.features.kaldi import FbankOptions, fbank
    from ast_audio.audio.files import find_audio_files, read_manifest
    from ast_audio.model.modeling import ASTForAudioClassification, ASTModel, ASTPreTrainedModel
    from ast_audio.inference.pipelines import pipeline
    from ast_audio.inference.results import ClipResult
    from ast_audio.features.stats import dataset_statistics


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ast_audio' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
