"""The input settings a run takes from the AST checkpoint it starts from (--init DIR), unless it gives its own.

A model continues best on the features it was trained with: its input length, strides and mel bins (config.json)
and its normalisation (preprocessor_config.json). TrainConfig's defaults are the release checkpoint's own, so a
run from the release checkpoint, or from a Hub id, keeps them; a run from a local checkpoint (e.g. a small model
trained with scratch_small) takes that checkpoint's, where the defaults would silently adapt it to other ones."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

logger = logging.getLogger(__name__)

# Run setting -> where the checkpoint holds it: the model's config (ASTConfig) or its feature extractor.
INHERITED = {"frames": ("model", "max_length"), "frequency_stride": ("model", "frequency_stride"),
             "time_stride": ("model", "time_stride"), "num_mel_bins": ("model", "num_mel_bins"),
             "mean": ("extractor", "mean"), "std": ("extractor", "std")}


def checkpoint_input_settings(init: str) -> dict[str, Any]:
    """{frames, frequency_stride, time_stride, num_mel_bins, mean, std} of the AST checkpoint directory `init`
    (mean and std AudioSet's, with the loaders' warning, when it has no preprocessor_config.json); {} when `init`
    is no directory with a readable config.json (scratch, timm:PATH, a Hub id: TrainConfig's defaults stay, and
    the trainer says what is wrong with an unreadable one)."""
    from ast_audio.errors import ASTAudioError
    from ast_audio.features.extractor import ASTFeatureExtractor
    from ast_audio.model.configuration import ASTConfig

    if not os.path.isdir(init):
        return {}
    try:
        model = ASTConfig.from_pretrained(init)
        sources = {"model": model, "extractor": ASTFeatureExtractor.for_checkpoint(init, model)}
    except ASTAudioError:
        return {}
    return {name: getattr(sources[owner], field) for name, (owner, field) in INHERITED.items()}


def with_init_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings` (what a run's recipe, config file and flags give) with each input setting it does not give
    taken from its init checkpoint (`checkpoint_input_settings`). Logs one line naming the given ones that differ
    from the checkpoint's: the model is then adapted to them (position embeddings resized, other normalisation)."""
    init = settings.get("init")
    own = checkpoint_input_settings(init) if isinstance(init, str) and init else {}
    if not own:
        return settings
    given = dict(settings)
    if "target_length" in given:  # frames under its old name
        given["frames"] = given["target_length"]
    differing = [f"{name} {_shown(given[name])} (the checkpoint's {_shown(value)})" for name, value in own.items()
                 if name in given and not _same(given[name], value)]
    if differing:
        logger.info("init %s: the model is adapted to this run's %s", init, ", ".join(differing))
    inherited = {name: value for name, value in own.items() if name not in given}
    if inherited:
        logger.info("init %s: its own %s", init, ", ".join(f"{name} {_shown(value)}" for name, value in inherited.items()))
    return {**settings, **inherited}


def _same(given: Any, own: Any) -> bool:
    """Equal settings; floats (mean, std) equal to float32 precision, as a JSON round trip may leave them."""
    if isinstance(given, (int, float)) and isinstance(own, (int, float)) and not isinstance(given, bool):
        return math.isclose(given, own, rel_tol=1e-6)
    return given == own


def _shown(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else repr(value)
