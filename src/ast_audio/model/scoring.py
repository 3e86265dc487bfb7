"""The one rule that turns a checkpoint's logits into scores: sigmoid, softmax or the logits themselves.

Every path (classify, embed, the server, Ray workers, evaluation and training's validation) uses it:

- ``problem_type`` "multi_label_classification" -> sigmoid (independent per-label probabilities);
  "single_label_classification" -> softmax (one distribution over the labels); "regression" -> identity.
- Unset (as in the public converted checkpoints): sigmoid for heads of 100 labels or more (AudioSet-style
  taggers are multi-label), softmax for smaller heads.

The trainer saves the problem type that matches its loss (BCE -> multi-label, cross-entropy -> single-label),
so a fine-tuned checkpoint is scored the way it was trained.
"""

from __future__ import annotations

import torch

from ast_audio.errors import ConfigError

SCORE_FUNCTIONS = ("sigmoid", "softmax", "identity")
BY_PROBLEM_TYPE = {
    "multi_label_classification": "sigmoid",
    "single_label_classification": "softmax",
    "regression": "identity",
}
MULTI_LABEL_HEAD_SIZE = 100


def score_function_for(problem_type: str | None, num_labels: int) -> str:
    """The score function of a head (see the module docstring)."""
    if problem_type in BY_PROBLEM_TYPE:
        return BY_PROBLEM_TYPE[problem_type]
    return "sigmoid" if num_labels >= MULTI_LABEL_HEAD_SIZE else "softmax"


def problem_type_for_loss(loss: str) -> str:
    """The problem type a checkpoint trained with `loss` ("bce" or "ce") is saved with."""
    return "multi_label_classification" if loss == "bce" else "single_label_classification"


def logits_to_scores(logits: torch.Tensor, function: str) -> torch.Tensor:
    """Apply a score function to (batch, labels) logits, in float32."""
    logits = logits.float()
    if function == "sigmoid":
        return torch.sigmoid(logits)
    if function == "softmax":
        return torch.softmax(logits, dim=-1)
    if function == "identity":
        return logits
    raise ConfigError(f"score function must be one of {SCORE_FUNCTIONS}, got {function!r}")
