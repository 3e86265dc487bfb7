"""Event-based precision, recall and F1 of detected events against reference annotations.

The event-based metrics of sound event detection (Mesaros, Heittola & Virtanen, "Metrics for polyphonic
sound event detection", Applied Sciences 6(6) 162, 2016; the definitions of the DCASE challenges and of the
`sed_eval` toolbox, against which the tests check these numbers within 1e-6):

- A detected event **matches** a reference event of the same file and label when its onset is within the
  **onset collar** (`collar`, seconds) of the reference onset and, unless `evaluate_offset` is False, its
  offset within the **offset tolerance**: the larger of the collar and `offset_ratio` times the reference
  event's length (a long sound need not end exactly).
- Each reference event matches at most one detection and each detection at most one reference event; the
  number of true positives is the largest such one-to-one matching (as sed_eval's "optimal" matching). A
  sound reported twice therefore gives one true positive and one false positive.
- Precision = TP / detections, recall = TP / reference events, F1 = 2PR / (P + R): NaN where undefined
  (no detections, or no reference events), as sed_eval; F1 is 0 when both are 0.
- Overall figures pool the counts over all classes and files (micro average); `class_average_f_measure` is
  the mean of the per-class F1 values that are defined (macro average).

Defaults are DCASE's: a 200 ms collar and an offset tolerance of half the reference length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from ast_audio.answers.events import Event
from ast_audio.errors import ConfigError


class PrecisionRecall:
    """Precision, recall and F1 of a count class that has `true_positives`, `detected` and `reference`:
    NaN where undefined (no detections, no reference), F1 0 when precision and recall are both 0, as sed_eval.
    Event-based (`EventCounts`) and segment-based (`segment_metrics.SegmentCounts`) counts share it."""

    @property
    def precision(self) -> float:
        return self.true_positives / self.detected if self.detected else math.nan

    @property
    def recall(self) -> float:
        return self.true_positives / self.reference if self.reference else math.nan

    @property
    def f_measure(self) -> float:
        precision, recall = self.precision, self.recall
        if precision == 0 and recall == 0:
            return 0.0
        return 2 * precision * recall / (precision + recall)


@dataclasses.dataclass(frozen=True)
class EventCounts(PrecisionRecall):
    """Counts of one class (or all): `reference` events, `detected` events, `true_positives`."""

    reference: int = 0
    detected: int = 0
    true_positives: int = 0

    def __add__(self, other: EventCounts) -> EventCounts:
        return EventCounts(
            self.reference + other.reference, self.detected + other.detected, self.true_positives + other.true_positives
        )


@dataclasses.dataclass(frozen=True)
class EventMetrics:
    """`overall` counts (pooled) and `per_class` counts ({label: EventCounts}, every label of either side)."""

    overall: EventCounts
    per_class: Mapping[str, EventCounts]

    @property
    def class_average_f_measure(self) -> float:
        """The mean of the defined per-class F1 values (NaN when none is defined)."""
        values = [counts.f_measure for counts in self.per_class.values() if not math.isnan(counts.f_measure)]
        return float(np.mean(values)) if values else math.nan


def _check(collar: float, offset_ratio: float) -> None:
    if not (math.isfinite(collar) and collar >= 0):
        raise ConfigError(f"collar must be a finite number of seconds >= 0, got {collar!r}")
    if not (math.isfinite(offset_ratio) and offset_ratio >= 0):
        raise ConfigError(f"offset_ratio must be a finite number >= 0, got {offset_ratio!r}")


def match_events(
    reference: Sequence[Event],
    detected: Sequence[Event],
    *,
    collar: float = 0.2,
    offset_ratio: float = 0.5,
    evaluate_offset: bool = True,
) -> list[tuple[int, int]]:
    """The matched (reference index, detected index) pairs of one file: a largest one-to-one matching.

    Among the largest matchings, the one with the smallest total onset error is chosen (so the pairs are
    the natural ones for measuring onset and offset errors); the count is the same as sed_eval's.
    """
    _check(collar, offset_ratio)
    if not reference or not detected:
        return []
    ref_on = np.array([event.start for event in reference])[:, None]
    ref_off = np.array([event.end for event in reference])[:, None]
    det_on = np.array([event.start for event in detected])[None, :]
    det_off = np.array([event.end for event in detected])[None, :]
    same_label = np.array([[r.label == d.label for d in detected] for r in reference])
    hit = same_label & (np.abs(ref_on - det_on) <= collar)
    if evaluate_offset:
        hit &= np.abs(ref_off - det_off) <= np.maximum(collar, offset_ratio * (ref_off - ref_on))
    # A pair that hits costs less than any set of pairs that miss: the assignment maximises the number of
    # hits first, then prefers small onset errors (each below 1, scaled so).
    error = np.abs(ref_on - det_on) / (1.0 + float(np.abs(ref_on - det_on).max()))
    cost = np.where(hit, error - len(reference) - len(detected), 0.0)
    rows, columns = linear_sum_assignment(cost)
    return [(int(row), int(column)) for row, column in zip(rows, columns) if hit[row, column]]


def event_based_metrics(
    reference: Mapping[str, Sequence[Event]],
    detected: Mapping[str, Sequence[Event]],
    *,
    collar: float = 0.2,
    offset_ratio: float = 0.5,
    evaluate_offset: bool = True,
    labels: Iterable[str] | None = None,
) -> EventMetrics:
    """Event-based metrics over files: {file: reference events} against {file: detected events}.

    A file on one side only counts all its events as missed or false. `labels` fixes the classes reported
    per class (default: every label of either side); the overall counts always pool every event.
    Raises `ConfigError` for a negative or non-finite collar or ratio.
    """
    _check(collar, offset_ratio)
    found = {event.label for events in (*reference.values(), *detected.values()) for event in events}
    per_class = {label: EventCounts() for label in sorted(found if labels is None else set(labels))}
    overall = EventCounts()
    for file in reference.keys() | detected.keys():
        ref, det = list(reference.get(file, ())), list(detected.get(file, ()))
        matches = match_events(ref, det, collar=collar, offset_ratio=offset_ratio, evaluate_offset=evaluate_offset)
        overall = overall + EventCounts(len(ref), len(det), len(matches))
        for label in per_class:
            hits = sum(1 for row, _ in matches if ref[row].label == label)
            counts = EventCounts(sum(e.label == label for e in ref), sum(e.label == label for e in det), hits)
            per_class[label] = per_class[label] + counts
    return EventMetrics(overall, per_class)
