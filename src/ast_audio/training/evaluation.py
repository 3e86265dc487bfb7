"""Scoring labelled clips with a model: the features of inference, the scores of inference, and the metrics."""

from __future__ import annotations

import numpy as np
import torch

from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.model.scoring import logits_to_scores, score_function_for
from ast_audio.training.data import Clip, ClipDataset, collate


@torch.no_grad()
def score_clips(
    model: ASTForAudioClassification, clips: list[Clip], extractor: ASTFeatureExtractor, *, batch_size: int,
    device: torch.device, num_workers: int = 0, indices: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores and multi-hot targets of `clips` (or those at `indices`), (clips, labels) each.

    Features are the extractor's (each clip's first max_length frames, padded); scores follow the model's
    problem type (`ast_audio.model.scoring`), as `classify` reports them.
    """
    num_labels = model.config.num_labels
    function = score_function_for(model.config.problem_type, num_labels)
    dataset = ClipDataset(clips, num_labels, extractor, training=False)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    was_training = model.training
    model.eval()
    scores, targets = [np.zeros((0, num_labels), np.float32)], [np.zeros((0, num_labels), np.float32)]
    for batch, target in loader:
        logits = model(batch.to(device)).logits
        scores.append(logits_to_scores(logits, function).cpu().numpy())
        targets.append(target.numpy())
    model.train(was_training)
    return np.concatenate(scores), np.concatenate(targets)
