"""Calibration of scores to probabilities, per class, and the expected calibration error.

A sigmoid score of 0.3 is not a 30% chance that the sound is there: a tagger trained on AudioSet's skewed
labels is over- or under-confident class by class. A calibration maps each class's scores to probabilities
fitted on labelled clips (scores: clips x classes; targets: the same shape, 1 where the class is present):

- **Platt** (Platt 1999, "Probabilistic outputs for support vector machines"): a logistic regression on the
  logit of the score, p = sigmoid(a * logit(s) + b), two numbers per class. Fitted with scikit-learn's
  `LogisticRegression` (no penalty) on Platt's smoothed targets, (positives + 1) / (positives + 2) for a
  positive and 1 / (negatives + 2) for a negative (each clip enters twice, weighted by its target), so that
  a class separated perfectly still gets a finite slope. Scores are clipped to [1e-7, 1 - 1e-7] before the
  logit.
- **Isotonic** (Zadrozny & Elkan 2002): scikit-learn's `IsotonicRegression`, a non-decreasing step function
  of the score kept as its breakpoints (x, p); scores in between are interpolated linearly and scores
  outside clipped to the end points, as scikit-learn predicts.

A class with fewer than `min_positives` positives, or with no negatives, is left as it is (identity) and
listed in `Calibration.uncalibrated`. Scores must be probabilities in [0, 1] (sigmoid or softmax scores as
the checkpoint's scoring rule gives them).

The expected calibration error (ECE; Naeini, Cooper & Hauskrecht, AAAI 2015, in the form of Guo et al.,
"On calibration of modern neural networks", ICML 2017, eq. 3): the (clip, class) pairs are put into
`bins` equal-width bins of predicted probability over [0, 1] (default 15, as Guo et al.; a probability of
exactly 1 goes into the last bin), and ECE = sum over bins of (pairs in the bin / all pairs) *
|fraction positive in the bin - mean probability in the bin|.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.errors import ConfigError

METHODS = ("platt", "isotonic")
DEFAULT_BINS = 15
LOGIT_CLIP = 1e-7


def _logit(scores: np.ndarray) -> np.ndarray:
    clipped = np.clip(scores, LOGIT_CLIP, 1.0 - LOGIT_CLIP)
    return np.log(clipped) - np.log1p(-clipped)


def check_scores_and_targets(scores: Any, targets: Any, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(scores float64, targets bool), both (clips, classes), checked: shapes agree with `labels`, scores
    finite, targets 0/1. Raises `ConfigError` naming what is wrong."""
    scores = np.asarray(scores, dtype=np.float64)
    raw = np.asarray(targets)
    if scores.ndim != 2 or scores.shape[1] != len(labels):
        raise ConfigError(f"scores must be (clips, classes) with {len(labels)} classes, got shape {scores.shape}")
    if raw.shape != scores.shape:
        raise ConfigError(f"targets must have the shape of the scores {scores.shape}, got {raw.shape}")
    if not np.isfinite(scores).all():
        raise ConfigError("scores must be finite (no NaN or infinity)")
    if not np.isin(raw, (0, 1)).all():
        raise ConfigError("targets must be 0 or 1 (or False/True)")
    return scores, raw.astype(bool)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A calibration per class (module docstring).

    method: "platt" or "isotonic".
    platt: {label: (a, b)}, p = sigmoid(a * logit(s) + b) (method "platt").
    isotonic: {label: (x breakpoints, p values)}, tuples of floats of one length (method "isotonic").
    uncalibrated: the labels left as they are (too few positives, or no negatives), in order.
    """

    method: str
    platt: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    isotonic: Mapping[str, tuple[tuple[float, ...], tuple[float, ...]]] = dataclasses.field(default_factory=dict)
    uncalibrated: tuple[str, ...] = ()

    def apply(self, scores: Any, labels: Sequence[str]) -> np.ndarray:
        """Probabilities of the same shape as `scores` (..., classes), float64; a column whose label has no
        calibration is returned as it is. Raises `ConfigError` when the last axis is not len(labels)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[-1:] != (len(labels),):
            raise ConfigError(f"scores must end with {len(labels)} classes, got shape {scores.shape}")
        out = scores.copy()
        for column, label in enumerate(labels):
            if label in self.platt:
                a, b = self.platt[label]
                out[..., column] = 1.0 / (1.0 + np.exp(-(a * _logit(scores[..., column]) + b)))
            elif label in self.isotonic:
                x, p = self.isotonic[label]
                out[..., column] = np.interp(scores[..., column], x, p)
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: {"method", "classes": {label: {"a", "b"} or {"x", "p"}}, "uncalibrated"}."""
        if self.method == "platt":
            classes = {label: {"a": a, "b": b} for label, (a, b) in self.platt.items()}
        else:
            classes = {label: {"x": list(x), "p": list(p)} for label, (x, p) in self.isotonic.items()}
        return {"method": self.method, "classes": classes, "uncalibrated": list(self.uncalibrated)}

    @classmethod
    def from_dict(cls, data: Any, source: str = "<calibration>") -> Calibration:
        """The calibration of `to_dict`; raises `ConfigError` naming `source` and what was expected."""
        if not isinstance(data, dict) or data.get("method") not in METHODS or not isinstance(data.get("classes"), dict):
            raise ConfigError(f"{source}: calibration must be {{'method': 'platt' or 'isotonic', 'classes': {{...}}}}")
        platt, isotonic = {}, {}
        for label, item in data["classes"].items():
            try:
                if data["method"] == "platt":
                    platt[label] = (_finite(item["a"]), _finite(item["b"]))
                else:
                    x, p = tuple(map(_finite, item["x"])), tuple(map(_finite, item["p"]))
                    if len(x) != len(p) or not x or any(b < a for a, b in zip(x, x[1:])):
                        raise ValueError
                    isotonic[label] = (x, p)
            except (KeyError, TypeError, ValueError):
                want = "{'a': number, 'b': number}" if data["method"] == "platt" else "{'x': [...], 'p': [...]}"
                raise ConfigError(f"{source}: calibration of {label!r} must be {want}, got {item!r}") from None
        uncalibrated = data.get("uncalibrated", [])
        if not isinstance(uncalibrated, list):
            raise ConfigError(f"{source}: calibration 'uncalibrated' must be a list of labels")
        return cls(data["method"], platt, isotonic, tuple(map(str, uncalibrated)))


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(value)
    return float(value)


def _fit_platt(scores: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    from sklearn.linear_model import LogisticRegression

    positives, negatives = int(targets.sum()), int((~targets).sum())
    smoothed = np.where(targets, (positives + 1.0) / (positives + 2.0), 1.0 / (negatives + 2.0))
    x = np.concatenate([_logit(scores), _logit(scores)])[:, None]
    y = np.concatenate([np.ones(len(scores)), np.zeros(len(scores))])
    weights = np.concatenate([smoothed, 1.0 - smoothed])
    model = LogisticRegression(C=np.inf, solver="newton-cholesky", max_iter=100).fit(x, y, sample_weight=weights)
    return float(model.coef_[0, 0]), float(model.intercept_[0])


def _fit_isotonic(scores: np.ndarray, targets: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from sklearn.isotonic import IsotonicRegression

    model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
    model.fit(scores, targets.astype(np.float64))
    return tuple(map(float, model.X_thresholds_)), tuple(map(float, model.y_thresholds_))


def fit_calibration(
    scores: Any, targets: Any, labels: Sequence[str], *, method: str = "platt", min_positives: int = 5
) -> Calibration:
    """A calibration per class fitted on labelled clips.

    scores: (clips, classes) probabilities in [0, 1]; targets: (clips, classes) 0/1; labels: the classes.
    Raises `ConfigError` for an unknown method, shapes that disagree, scores outside [0, 1] or targets
    other than 0/1.
    """
    if method not in METHODS:
        raise ConfigError(f"calibration method must be one of {', '.join(METHODS)}, got {method!r}")
    scores, targets = check_scores_and_targets(scores, targets, labels)
    if ((scores < 0) | (scores > 1)).any():
        raise ConfigError("calibration needs scores in [0, 1] (sigmoid or softmax probabilities)")
    platt, isotonic, uncalibrated = {}, {}, []
    for column, label in enumerate(labels):
        column_targets = targets[:, column]
        if column_targets.sum() < max(min_positives, 1) or column_targets.all():
            uncalibrated.append(label)
        elif method == "platt":
            platt[label] = _fit_platt(scores[:, column], column_targets)
        else:
            isotonic[label] = _fit_isotonic(scores[:, column], column_targets)
    return Calibration(method, platt, isotonic, tuple(uncalibrated))


def expected_calibration_error(probabilities: Any, targets: Any, *, bins: int = DEFAULT_BINS) -> float:
    """The ECE of probabilities against 0/1 targets of the same shape (any shape; every element is one
    prediction), with `bins` equal-width bins over [0, 1] (module docstring). NaN for no predictions.
    Raises `ConfigError` for shapes that disagree, probabilities outside [0, 1] or bins < 1."""
    probabilities = np.asarray(probabilities, dtype=np.float64).ravel()
    targets = np.asarray(targets).ravel()
    if probabilities.shape != targets.shape:
        raise ConfigError(f"probabilities {probabilities.shape} and targets {targets.shape} must have one shape")
    if not (isinstance(bins, int) and bins >= 1):
        raise ConfigError(f"bins must be an integer >= 1, got {bins!r}")
    if not ((probabilities >= 0) & (probabilities <= 1)).all():
        raise ConfigError("probabilities must lie in [0, 1]")
    if probabilities.size == 0:
        return math.nan
    index = np.minimum((probabilities * bins).astype(np.int64), bins - 1)
    confidence = np.bincount(index, weights=probabilities, minlength=bins)
    positive = np.bincount(index, weights=targets.astype(np.float64), minlength=bins)
    return float(np.sum(np.abs(positive - confidence)) / probabilities.size)
