"""`pipeline("audio-classification", model=...)`: the public pipeline's call shape over `AudioClassifier`."""

from __future__ import annotations

from typing import Any

from ast_audio.inference.classifier import DEFAULT_MODEL, AudioClassifier
from ast_audio.errors import ConfigError

TASKS = ("audio-classification",)


def pipeline(task: str = "audio-classification", model: str = DEFAULT_MODEL, **kwargs: Any) -> AudioClassifier:
    """A callable returning [{"label", "score"}] per input, like the public audio-classification pipeline.

    Keyword arguments go to `AudioClassifier.from_pretrained` (device, dtype, batch_size, window, hop, ...).
    """
    if task not in TASKS:
        raise ConfigError(f"unsupported task {task!r}; supported: {TASKS}")
    return AudioClassifier.from_pretrained(model, **kwargs)
