"""Evaluation metrics on sigmoid / softmax outputs: accuracy, mAP, mean AUC, d-prime, per-class AP."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np


def d_prime(auc: float) -> float:
    """sqrt(2) * Phi^-1(AUC): the separation of two unit-variance Gaussians with this AUC."""
    from scipy.stats import norm

    return float(math.sqrt(2.0) * norm.ppf(auc))


def evaluate_predictions(scores: np.ndarray, targets: np.ndarray, labels: list[str] | None = None) -> dict:
    """Metrics of `scores` (clips, labels) against `targets` (clips, labels; multi-hot or one-hot).

    accuracy: argmax of scores vs argmax of targets (as the release). mAP and mean AUC average the
    per-class values over classes that have both positive and negative clips (others are undefined); a
    metric that is undefined for every class is None, so the result is always valid JSON (never NaN).
    Raises ValueError when the shapes differ.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (clips, labels)")
    binary = (targets >= 0.5).astype(int)
    accuracy = float((scores.argmax(1) == targets.argmax(1)).mean())
    per_class_ap: list[float | None] = []
    aucs: list[float] = []
    for c in range(scores.shape[1]):
        positives = binary[:, c].sum()
        if positives == 0 or positives == len(binary):
            per_class_ap.append(None)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            per_class_ap.append(float(average_precision_score(binary[:, c], scores[:, c])))
            aucs.append(float(roc_auc_score(binary[:, c], scores[:, c])))
    defined = [ap for ap in per_class_ap if ap is not None]
    # None (JSON null) where undefined: no class has both positive and negative clips.
    mean_ap = float(np.mean(defined)) if defined else None
    mean_auc = float(np.mean(aucs)) if aucs else None
    names = labels or [str(i) for i in range(scores.shape[1])]
    return {
        "accuracy": accuracy,
        "mAP": mean_ap,
        "mAUC": mean_auc,
        # Infinite (reported as None) when the classes are perfectly separated.
        "d_prime": d_prime(mean_auc) if mean_auc is not None and 0.0 < mean_auc < 1.0 else None,
        "clips": int(scores.shape[0]),
        "classes_scored": len(defined),
        "per_class_AP": {name: ap for name, ap in zip(names, per_class_ap)},
    }


def json_safe(value: Any) -> Any:
    """`value` (nested dicts, lists, numbers) with every NaN or infinity replaced by None, so json.dumps writes
    valid JSON (null) instead of the bare tokens NaN and Infinity that strict readers refuse."""
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
