"""Decisions: the labels of a clip (and of each window) whose score is at or above the label's threshold.

Top-k answers "which classes score highest"; a decision answers "which classes are there", by a threshold per
class (`ast-audio calibrate`'s `thresholds.json`, `answers.thresholds.Thresholds`) or one global threshold.
`DecisionThresholds` is the rule a job carries (frozen and hashable, inside `answers.options.AnswerOptions`):
a default threshold and the classes with their own. A label with its own threshold uses it, any other label
the default: this covers the output classes after the class selection, so a group ("pets") or a parent
rolled up from the AudioSet hierarchy ("Animal") uses the default unless the file names it, and a rolled-up
class keeps the threshold learned for its own scores although it now scores the maximum over its
descendants too.

The comparison is `Thresholds.decide` (score >= threshold), on the scores as the checkpoint's scoring rule
gives them (sigmoid or softmax): for a clip, the pooled clip score (`results.pool_scores`: mean or max over
windows); for a window, its own score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.answers.events import check_score_threshold
from ast_audio.answers.thresholds import Thresholds
from ast_audio.errors import ConfigError

__all__ = ["Decision", "DecisionThresholds", "decisions_of"]

DEFAULT_THRESHOLD = 0.5  # for sigmoid scores, as `answers.events.EventOptions`


@dataclasses.dataclass(frozen=True)
class DecisionThresholds:
    """The thresholds a job decides by: `default` for every label without its own, `class_thresholds`
    {label: threshold} (stored as a sorted tuple of pairs so the options stay hashable; pass a mapping). Labels
    the scores do not have are ignored, so one file serves any class selection.

    Raises `ConfigError` naming a threshold that is not a number in [0, 1].
    """

    default: float = DEFAULT_THRESHOLD
    class_thresholds: Mapping[str, float] | tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "default", check_score_threshold("the default decision threshold", self.default))
        try:
            pairs = dict(self.class_thresholds).items() if self.class_thresholds else ()
        except (TypeError, ValueError):
            got = self.class_thresholds
            raise ConfigError(f"class_thresholds must map labels to thresholds, got {got!r}") from None
        checked = tuple(sorted((str(label), check_score_threshold(f"the threshold of {label!r}", value)) for label, value in pairs))
        object.__setattr__(self, "class_thresholds", checked)

    @classmethod
    def of(cls, value: Any) -> DecisionThresholds | None:
        """The rule of `AnswerOptions(decide=value)`: None or False: off; True: the default 0.5 for every label;
        a number: that global threshold; a `Thresholds` (or a path, `os.PathLike`, to a thresholds.json): its
        per-class thresholds and its default; a `DecisionThresholds` as it is. Raises `ConfigError` for
        anything else, or a file that cannot be read (naming it)."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, os.PathLike):
            value = Thresholds.read(value)
        if isinstance(value, Thresholds):
            return cls(value.default, dict(value.thresholds))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(value)
        raise ConfigError(f"decide must be True, a threshold, a Thresholds or a path to a thresholds.json, got "
                          f"{value!r}")

    def thresholds(self) -> Thresholds:
        """The same rule as `answers.thresholds.Thresholds` (its `decide` and `threshold_array`)."""
        return Thresholds(dict(self.class_thresholds), self.default)

    def numbers(self) -> dict[str, Any]:
        """JSON-native, for a resume to compare: the default, how many classes have their own threshold, and
        "content", a hash (16 hex digits of SHA-256) of those thresholds, so another file is refused without
        listing hundreds of classes."""
        text = json.dumps([[label, value] for label, value in self.class_thresholds])
        return {"default": self.default, "classes": len(self.class_thresholds),
                "content": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]}


@dataclasses.dataclass(frozen=True)
class Decision:
    """A label found present: its `score` (clip: pooled; window: the window's) >= its `threshold`."""

    label: str
    score: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "threshold": self.threshold}


def decisions_of(scores: Any, labels: Sequence[str], thresholds: Thresholds) -> list[list[Decision]]:
    """For each row of `scores` (rows, classes), the labels at or above their threshold (`Thresholds.decide`),
    highest score first (ties in label order). Raises `ConfigError` when the last axis is not len(labels)."""
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    accepted = thresholds.decide(scores, labels)
    limits = thresholds.threshold_array(labels)
    out = []
    for row, mask in zip(scores, accepted):
        chosen = np.flatnonzero(mask)
        chosen = chosen[np.argsort(-row[chosen], kind="stable")]
        out.append([Decision(labels[i], float(row[i]), float(limits[i])) for i in chosen])
    return out
