"""The classification head's loss, chosen by ``problem_type`` or inferred from the labels."""

from __future__ import annotations

import torch
from torch import nn

from ast_audio.model.configuration import PROBLEM_TYPES


def infer_problem_type(num_labels: int, labels: torch.Tensor) -> str:
    """As the public implementation: one output is regression, integer labels are single-label, else multi-label."""
    if num_labels == 1:
        return "regression"
    if labels.dtype in (torch.long, torch.int, torch.int16, torch.int8, torch.uint8):
        return "single_label_classification"
    return "multi_label_classification"


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_labels: int, problem_type: str | None
) -> torch.Tensor:
    """MSE for regression, cross-entropy (ignoring label -100) for single-label, BCE-with-logits for multi-label.

    The loss is computed in float32 whatever the logits' dtype, for stability under float16/bfloat16.
    """
    problem_type = problem_type or infer_problem_type(num_labels, labels)
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"problem_type {problem_type!r} is not one of {PROBLEM_TYPES}")
    labels = labels.to(logits.device)
    logits = logits.float()
    if problem_type == "regression":
        labels = labels.float()
        if num_labels == 1:
            return nn.functional.mse_loss(logits.squeeze(), labels.squeeze())
        return nn.functional.mse_loss(logits, labels)
    if problem_type == "single_label_classification":
        if labels.is_floating_point():
            raise ValueError(
                "single_label_classification expects integer class ids of shape (batch,), got float labels of "
                f"shape {tuple(labels.shape)}; use problem_type='multi_label_classification' for soft targets"
            )
        return nn.functional.cross_entropy(logits.view(-1, num_labels), labels.view(-1), ignore_index=-100)
    if labels.shape != logits.shape:
        raise ValueError(
            f"multi_label_classification expects labels of shape {tuple(logits.shape)} (batch, num_labels), "
            f"got {tuple(labels.shape)}"
        )
    return nn.functional.binary_cross_entropy_with_logits(logits, labels.float())
