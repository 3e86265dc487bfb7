"""Helpers the tests share (import them from here; conftest.py holds only fixtures and the test environment):
small configs, seeded random weights and small checkpoints, so every test builds its own models."""

from __future__ import annotations

import torch

SMALL = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter non-trivial values (the reference zero-initialises tokens and positions)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(model.named_parameters()):
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            if name.endswith("layernorm.weight") or "layernorm_" in name and name.endswith("weight"):
                param.copy_(1.0 + 0.1 * noise)
            else:
                param.copy_(0.05 * noise)
    return model


def save_small_checkpoint(path, labels: int, seed: int = 0, label_name: str = "sound", **config) -> str:
    """A small randomized classifier (SMALL, 128 frames, `labels` classes named "{label_name} {i}") and its
    feature extractor saved in `path`; `config` overrides SMALL."""
    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    model_config = ASTConfig(**{**SMALL, **config}, max_length=128,
                             id2label={i: f"{label_name} {i}" for i in range(labels)})
    randomize_(ASTForAudioClassification(model_config), seed=seed).save_pretrained(path)
    ASTFeatureExtractor(max_length=128).save_pretrained(path)
    return str(path)


def spectrogram(batch: int, frames: int, mel_bins: int = 128, seed: int = 0) -> torch.Tensor:
    """Seeded standard-normal features of shape (batch, frames, mel_bins), a stand-in for log-mel input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, mel_bins, generator=generator)


def power_cut_after(monkeypatch, results: int) -> None:
    """Make `AudioClassifier.iter_classify` raise RuntimeError("power cut") after yielding `results` results:
    a run killed part-way, in-process (undone with `monkeypatch.undo()` or a `monkeypatch.context()`)."""
    from ast_audio import AudioClassifier

    original = AudioClassifier.iter_classify

    def dies_part_way(self, *args, **kwargs):
        for number, result in enumerate(original(self, *args, **kwargs)):
            if number == results:
                raise RuntimeError("power cut")
            yield result

    monkeypatch.setattr(AudioClassifier, "iter_classify", dies_part_way)
