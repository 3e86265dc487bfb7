"""A decision threshold per class, learned from labelled clips, and the `thresholds.json` file that keeps it.

One global threshold either floods the output with one class or misses another: scores of different
classes are not on one scale. As the AST authors do (a sigmoid and a threshold per class, chosen on
validation data), `choose_thresholds` picks, for each class, from its scores over labelled clips (scores:
clips x classes, targets: 0/1 of the same shape; a clip has the class when its score is >= the threshold):

- `target_precision=None`: the threshold that maximises F1 on those clips;
- `target_precision=0.9`: the threshold that reaches that precision with the best recall; of the
  thresholds giving that recall, the highest (the best precision, the widest margin above the negatives). Where no threshold reaches it, the threshold of the highest precision (the best recall among
  ties) is kept and the class is flagged (`ClassThreshold.status == "target not reached"`).

Candidate thresholds lie between consecutive distinct scores of the class: the chosen one is the midpoint
between the lowest score it accepts and the next lower score (so the clips it was chosen on are decided the
same way, with a margin on either side for new clips); where no score lies below, it is that lowest score.
A class with fewer than `min_positives` positive clips (default 5) keeps the global threshold and is listed
(`Thresholds.few_positives`). The global threshold is the one given, or else the best single threshold for
all classes (`best_global_threshold`: the highest mean F1 over the classes with at least one positive).

Precision = TP / clips accepted, recall = TP / positives, F1 = 2PR / (P + R), 0 where TP is 0; a
threshold that accepts nothing has precision NaN (it is never chosen).

Thresholds apply to the scores as the checkpoint's scoring rule gives them (sigmoid or softmax), the scores
`decide` and `events.EventOptions` compare; a calibration stored beside them maps those scores to
probabilities for reporting and does not move the thresholds.

`thresholds.json` (version 1) holds the per-label thresholds, the global default, and the provenance:
the data they came from, the option used, and counts and figures per class; optionally a calibration
(`ast_audio.answers.calibration`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.answers.events import check_score_threshold
from ast_audio.answers.calibration import Calibration, check_scores_and_targets
from ast_audio.errors import ConfigError
from ast_audio.io_utils import atomic_write_text

FORMAT_VERSION = 1
DEFAULT_MIN_POSITIVES = 5
LEARNED, FEW_POSITIVES, NOT_REACHED = "learned", "few positives", "target not reached"


@dataclasses.dataclass(frozen=True)
class ClassThreshold:
    """The provenance of one class's threshold: `threshold`, `positives` and `negatives` (clips),
    `precision`, `recall` and `f1` at that threshold on the clips it was chosen from, and `status`
    ("learned", "few positives": the global threshold kept, "target not reached": the best precision kept)."""

    threshold: float
    positives: int
    negatives: int
    precision: float
    recall: float
    f1: float
    status: str = LEARNED


def _curve(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """(thresholds, tp, accepted) over the distinct scores of one class, highest first: at each threshold
    the midpoint below a distinct score, the clips with score >= it accepted."""
    order = np.argsort(-scores, kind="stable")
    ordered, hits = scores[order], targets[order]
    last = np.flatnonzero(np.append(ordered[1:] != ordered[:-1], True))  # last index of each distinct value
    tp, accepted = np.cumsum(hits)[last], last + 1
    lower = np.append(ordered[last[:-1] + 1], ordered[last[-1]])
    return (ordered[last] + lower) / 2.0, tp.astype(np.float64), accepted.astype(np.float64)


def _figures(tp: np.ndarray, accepted: np.ndarray, positives: Any) -> tuple[np.ndarray, ...]:
    """(precision, recall, f1) from true positives, accepted and positive counts (arrays that broadcast):
    precision NaN where nothing is accepted, recall NaN where there are no positives, F1 0 where TP is 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(accepted > 0, tp / accepted, np.nan)
        recall = np.where(np.asarray(positives) > 0, tp / positives, np.nan)
        f1 = np.where(tp > 0, 2 * tp / (accepted + positives), 0.0)
    return precision, recall, f1


def choose_class_threshold(
    scores: np.ndarray, targets: np.ndarray, target_precision: float | None = None
) -> ClassThreshold:
    """The threshold of one class (module docstring). scores, targets: (clips,), targets bool, at least one
    clip."""
    positives = int(targets.sum())
    thresholds, tp, accepted = _curve(scores, targets)
    precision, recall, f1 = _figures(tp, accepted, positives)
    status = LEARNED
    if target_precision is None:
        best = int(np.argmax(f1))
    else:
        reached = np.flatnonzero(precision >= target_precision - 1e-12)
        if len(reached):
            # the best recall, then of the thresholds giving it the highest: the fewest false positives
            best = int(reached[np.argmax(tp[reached] >= tp[reached].max())])
        else:
            status = NOT_REACHED
            top = np.nanmax(precision)
            best = int(np.flatnonzero(precision == top)[-1])
    return ClassThreshold(
        float(thresholds[best]), positives, len(scores) - positives,
        float(precision[best]), float(recall[best]), float(f1[best]), status,
    )


def precision_recall_f1(decisions: Any, targets: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-class (precision, recall, f1), each (classes,), of 0/1 decisions against 0/1 targets, both
    (clips, classes): precision NaN where nothing is accepted, recall NaN where no positives, F1 0 where
    TP is 0."""
    decisions, targets = np.asarray(decisions, dtype=bool), np.asarray(targets, dtype=bool)
    tp = (decisions & targets).sum(axis=0).astype(np.float64)
    return _figures(tp, decisions.sum(axis=0), targets.sum(axis=0))


def best_global_threshold(scores: Any, targets: Any) -> tuple[float, float]:
    """(threshold, mean F1): the one threshold for every class with the highest mean F1 over the classes
    with at least one positive. scores, targets: (clips, classes). Candidates are the midpoints between
    consecutive distinct scores of all classes pooled (at most 2000, at their quantiles). Raises
    `ConfigError` when no class has a positive."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=bool)
    columns = np.flatnonzero(targets.any(axis=0))
    if len(columns) == 0:
        raise ConfigError("no class has a positive clip: no threshold can be chosen")
    distinct = np.unique(scores[:, columns])
    candidates = np.append((distinct[1:] + distinct[:-1]) / 2.0, distinct[-1])
    if len(candidates) > 2000:
        candidates = np.unique(np.quantile(candidates, np.linspace(0, 1, 2000)))
    f1_sum = np.zeros(len(candidates))
    for column in columns:
        column_scores, column_targets = np.sort(scores[:, column]), targets[:, column]
        positive_scores = np.sort(scores[column_targets, column])
        accepted = len(column_scores) - np.searchsorted(column_scores, candidates, side="left")
        tp = len(positive_scores) - np.searchsorted(positive_scores, candidates, side="left")
        with np.errstate(invalid="ignore", divide="ignore"):
            f1_sum += np.where(tp > 0, 2 * tp / (accepted + len(positive_scores)), 0.0)
    best = int(np.argmax(f1_sum))
    return float(candidates[best]), float(f1_sum[best] / len(columns))


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Per-class thresholds and where they came from (module docstring).

    thresholds: {label: threshold} for the classes learned (or "target not reached"); others use `default`.
    default: the global threshold. source: the data they came from (e.g. a path or manifest). method: "f1"
    or "precision". target_precision: the target of method "precision", else None. min_positives: the
    option used. classes: {label: ClassThreshold}, every class seen. calibration: optional, fitted on the
    same data.
    """

    thresholds: Mapping[str, float]
    default: float
    source: str = ""
    method: str = "f1"
    target_precision: float | None = None
    min_positives: int = DEFAULT_MIN_POSITIVES
    classes: Mapping[str, ClassThreshold] = dataclasses.field(default_factory=dict)
    calibration: Calibration | None = None

    @property
    def few_positives(self) -> list[str]:
        """The classes that kept the global threshold for lack of positives, in label order."""
        return sorted(label for label, item in self.classes.items() if item.status == FEW_POSITIVES)

    @property
    def not_reached(self) -> list[str]:
        """The classes whose threshold does not reach the target precision on its data, in label order."""
        return sorted(label for label, item in self.classes.items() if item.status == NOT_REACHED)

    def threshold_array(self, labels: Sequence[str]) -> np.ndarray:
        """(classes,) float64: the threshold of each label (its own, else the default)."""
        return np.array([self.thresholds.get(label, self.default) for label in labels], dtype=np.float64)

    def decide(self, scores: Any, labels: Sequence[str]) -> np.ndarray:
        """A bool mask of the shape of `scores` (..., classes): score >= the label's threshold. Raises
        `ConfigError` when the last axis is not len(labels)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape[-1:] != (len(labels),):
            raise ConfigError(f"scores must end with {len(labels)} classes, got shape {scores.shape}")
        return scores >= self.threshold_array(labels)

    def for_labels(self, labels: Sequence[str]) -> dict[str, float]:
        """{label: threshold} for every label of `labels` (own or default): `EventOptions(class_thresholds=...)`."""
        return {label: float(value) for label, value in zip(labels, self.threshold_array(labels))}

    def unknown_labels(self, labels: Sequence[str]) -> list[str]:
        """The labels with a threshold here that `labels` (e.g. the model's) lack, sorted: to report."""
        return sorted(set(self.thresholds) - set(labels))

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "version": FORMAT_VERSION,
            "default": self.default,
            "thresholds": dict(sorted(self.thresholds.items())),
            "provenance": {
                "source": self.source, "method": self.method, "target_precision": self.target_precision,
                "min_positives": self.min_positives,
                "classes": {
                    label: _nan_to_none(dataclasses.asdict(item)) for label, item in sorted(self.classes.items())
                },
            },
        }
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict()
        return data

    def to_json(self) -> str:
        """The `thresholds.json` text (version 1; NaN figures written as null), ending with a newline."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "thresholds.json") -> Thresholds:
        """The thresholds of a `thresholds.json` text. Raises `ConfigError` ("source: ...") naming what was
        expected: not JSON, another version, a threshold that is not a number in [0, 1], a malformed
        provenance."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{source}: not JSON ({error.msg} at line {error.lineno})") from None
        return _from_dict(data, source)

    def write(self, path: str | os.PathLike) -> None:
        """Writes `to_json()` to `path` atomically (honouring the umask)."""
        atomic_write_text(path, self.to_json())

    @classmethod
    def read(cls, path: str | os.PathLike) -> Thresholds:
        """`from_json` of a file; raises `ConfigError` naming the file when it cannot be read."""
        try:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{os.fspath(path)}: cannot read thresholds ({error})") from None
        return cls.from_json(text, os.fspath(path))


def _nan_to_none(item: dict[str, Any]) -> dict[str, Any]:
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in item.items()}


def _number(value: Any, what: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{source}: {what} must be a finite number, got {value!r}")
    return float(value)


def _score(value: Any, what: str, source: str) -> float:
    """A threshold: a number in [0, 1], as the scores it is compared with (`events.check_score_threshold`)."""
    return check_score_threshold(f"{source}: {what}", value)


def _count(value: Any, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: 'min_positives' must be an integer >= 1, got {value!r}")
    return value


def _class_threshold(label: str, item: Any, source: str) -> ClassThreshold:
    fields = [field.name for field in dataclasses.fields(ClassThreshold)]
    if not isinstance(item, dict) or set(item) != set(fields):
        raise ConfigError(f"{source}: provenance of {label!r} must have the fields {', '.join(fields)}, got {item!r}")
    values = {key: math.nan if item[key] is None else item[key] for key in fields}
    return ClassThreshold(**values)


def _from_dict(data: Any, source: str) -> Thresholds:
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        got = data.get("version") if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{source}: expected a thresholds file of version {FORMAT_VERSION}, got version {got!r}")
    if not isinstance(data.get("thresholds"), dict):
        raise ConfigError(f"{source}: 'thresholds' must be an object {{label: threshold}}")
    thresholds = {
        str(label): _score(value, f"threshold of {label!r}", source) for label, value in data["thresholds"].items()
    }
    default = _score(data.get("default"), "'default'", source)
    provenance = data.get("provenance", {})
    if not isinstance(provenance, dict) or not isinstance(provenance.get("classes", {}), dict):
        raise ConfigError(f"{source}: 'provenance' must be an object with 'classes' {{label: {{...}}}}")
    target = provenance.get("target_precision")
    calibration = data.get("calibration")
    return Thresholds(
        thresholds, default,
        source=str(provenance.get("source", "")), method=str(provenance.get("method", "f1")),
        target_precision=None if target is None else _number(target, "'target_precision'", source),
        min_positives=_count(provenance.get("min_positives", DEFAULT_MIN_POSITIVES), source),
        classes={label: _class_threshold(label, item, source) for label, item in provenance.get("classes", {}).items()},
        calibration=None if calibration is None else Calibration.from_dict(calibration, source),
    )


def choose_thresholds(
    scores: Any,
    targets: Any,
    labels: Sequence[str],
    *,
    target_precision: float | None = None,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    default: float | None = None,
    source: str = "",
) -> Thresholds:
    """A threshold per class from labelled clips (module docstring).

    scores: (clips, classes) float; targets: (clips, classes) 0/1; labels: the `classes` names.
    target_precision: None to maximise F1, else a precision in (0, 1] to reach with the best recall.
    min_positives: classes with fewer positive clips keep the global threshold. default: the global
    threshold; None for `best_global_threshold` on these clips (or 0.5 when no class has a positive).
    Raises `ConfigError` for shapes that disagree, no clips, a target outside (0, 1], min_positives < 1.
    """
    scores, targets = check_scores_and_targets(scores, targets, labels)
    if len(scores) == 0:
        raise ConfigError("no clips: thresholds need labelled clips")
    if target_precision is not None and not (0 < _number(target_precision, "target precision", "options") <= 1):
        raise ConfigError(f"target precision must be in (0, 1], got {target_precision!r}")
    if isinstance(min_positives, bool) or not isinstance(min_positives, int) or min_positives < 1:
        raise ConfigError(f"min_positives must be an integer >= 1, got {min_positives!r}")
    if default is None:
        default = best_global_threshold(scores, targets)[0] if targets.any() else 0.5
    default = _score(default, "default threshold", "options")
    own, classes = {}, {}
    for column, label in enumerate(labels):
        column_scores, column_targets = scores[:, column], targets[:, column]
        if column_targets.sum() < min_positives:
            figures = precision_recall_f1((column_scores >= default)[:, None], column_targets[:, None])
            positives = int(column_targets.sum())
            classes[label] = ClassThreshold(
                default, positives, len(scores) - positives, *(float(v[0]) for v in figures), FEW_POSITIVES
            )
            continue
        classes[label] = choose_class_threshold(column_scores, column_targets, target_precision)
        own[label] = classes[label].threshold
    method = "f1" if target_precision is None else "precision"
    return Thresholds(own, float(default), source, method, target_precision, min_positives, classes)
