"""Segment-based precision, recall, F1 and error rate of detected events against reference annotations.

The segment-based metrics of sound event detection (Mesaros, Heittola & Virtanen, "Metrics for polyphonic
sound event detection", Applied Sciences 6(6) 162, 2016; the definitions of the DCASE challenges and of
`sed_eval.sound_event.SegmentBasedMetrics`, against which the tests check these numbers within 1e-6):

- Each file is cut into segments of `segment_length` seconds (default 1 s) from its start; a class is
  **active** in segment i ([i * L, (i + 1) * L)) when an event of it overlaps the segment: from segment
  floor(onset / L) to segment ceil(offset / L) - 1. The file's length is its duration where given
  (events beyond it are cut off), else the latest offset of either side, rounded up to whole segments.
- Per class, over all segments of all files: TP (active in both), FP (detected only), FN (reference only),
  TN (in neither). Precision = TP / (TP + FP), recall = TP / (TP + FN), F1 = 2PR / (P + R), NaN where
  undefined (0 when P and R are 0), as sed_eval. Per-class error rate = (FN + FP) / reference-active
  segments (a class alone has no substitutions).
- Overall: TP, FP, FN pooled over classes and segments (micro average), and the error rate of the paper
  (eq. 5): in each segment, substitutions S = min(N_ref, N_sys) - TP, deletions D = max(0, N_ref - N_sys),
  insertions I = max(0, N_sys - N_ref); ER = (sum S + sum D + sum I) / sum N_ref.
- Error rates are NaN where no segment of the class is active in the reference (sed_eval divides by
  N_ref + machine epsilon there, giving huge values instead).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ast_audio.answers.events import Event
from ast_audio.answers.metrics import PrecisionRecall
from ast_audio.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SegmentCounts(PrecisionRecall):
    """Segment counts of one class (or all, pooled): `true_positives`, `false_positives`,
    `false_negatives`, `true_negatives`, and for the overall error rate `substitutions`, `deletions` and
    `insertions` (per class these are 0, FN and FP)."""

    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0
    true_negatives: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    def __add__(self, other: SegmentCounts) -> SegmentCounts:
        return SegmentCounts(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

    @property
    def reference(self) -> int:
        """Active segments in the reference (N_ref)."""
        return self.true_positives + self.false_negatives

    @property
    def detected(self) -> int:
        """Active segments in the detections (N_sys)."""
        return self.true_positives + self.false_positives

    @property
    def error_rate(self) -> float:
        """(S + D + I) / N_ref; NaN where N_ref is 0."""
        errors = self.substitutions + self.deletions + self.insertions
        return errors / self.reference if self.reference else math.nan


@dataclasses.dataclass(frozen=True)
class SegmentMetrics:
    """`overall` counts, `per_class` counts ({label: SegmentCounts}), the `segment_length` in seconds."""

    overall: SegmentCounts
    per_class: Mapping[str, SegmentCounts]
    segment_length: float

    @property
    def class_average_f_measure(self) -> float:
        """The mean of the defined per-class F1 values (NaN when none is defined)."""
        values = [c.f_measure for c in self.per_class.values() if not math.isnan(c.f_measure)]
        return float(np.mean(values)) if values else math.nan

    @property
    def class_average_error_rate(self) -> float:
        """The mean of the defined per-class error rates (NaN when none is defined)."""
        values = [c.error_rate for c in self.per_class.values() if not math.isnan(c.error_rate)]
        return float(np.mean(values)) if values else math.nan


def activity(events: Iterable[Event], labels: Sequence[str], segments: int, segment_length: float) -> np.ndarray:
    """(segments, classes) bool: where each label of `labels` is active (module docstring). Events of other
    labels are ignored; events beyond the last segment are cut off."""
    column = {label: index for index, label in enumerate(labels)}
    roll = np.zeros((segments, len(labels)), dtype=bool)
    for event in events:
        if event.label in column:
            first = int(math.floor(event.start / segment_length))
            last = int(math.ceil(event.end / segment_length))
            roll[max(first, 0) : max(last, 0), column[event.label]] = True
    return roll


def _file_counts(reference: np.ndarray, detected: np.ndarray) -> tuple[SegmentCounts, list[SegmentCounts]]:
    tp, fp, fn = reference & detected, detected & ~reference, reference & ~detected
    n_ref, n_sys, n_tp = reference.sum(axis=1), detected.sum(axis=1), tp.sum(axis=1)
    overall = SegmentCounts(
        int(n_tp.sum()), int(fp.sum()), int(fn.sum()), int((~reference & ~detected).sum()),
        int((np.minimum(n_ref, n_sys) - n_tp).sum()),
        int(np.maximum(0, n_ref - n_sys).sum()), int(np.maximum(0, n_sys - n_ref).sum()),
    )
    per_class = []
    for c in range(reference.shape[1]):
        fn_c, fp_c = int(fn[:, c].sum()), int(fp[:, c].sum())
        tn_c = int((~reference[:, c] & ~detected[:, c]).sum())
        per_class.append(SegmentCounts(int(tp[:, c].sum()), fp_c, fn_c, tn_c, 0, fn_c, fp_c))
    return overall, per_class


def segment_based_metrics(
    reference: Mapping[str, Sequence[Event]],
    detected: Mapping[str, Sequence[Event]],
    *,
    durations: Mapping[str, float] | None = None,
    segment_length: float = 1.0,
    labels: Iterable[str] | None = None,
) -> SegmentMetrics:
    """Segment-based metrics over files: {file: reference events} against {file: detected events}.

    durations: {file: seconds}, the evaluated length of each file (default: its latest offset on either
    side). labels: the classes evaluated (default: every label of either side); events of other labels are
    left out of the overall counts too, as in sed_eval. A file on one side only counts all its activity as
    missed or false. Raises `ConfigError` for a segment length that is not a positive number or a duration
    that is negative or not finite.
    """
    if not (isinstance(segment_length, (int, float)) and math.isfinite(segment_length) and segment_length > 0):
        raise ConfigError(f"segment_length must be a positive number of seconds, got {segment_length!r}")
    found = {event.label for events in (*reference.values(), *detected.values()) for event in events}
    labels = sorted(found if labels is None else set(labels))
    overall, per_class = SegmentCounts(), [SegmentCounts() for _ in labels]
    for file in sorted(reference.keys() | detected.keys()):
        ref, det = list(reference.get(file, ())), list(detected.get(file, ()))
        if durations is not None and file in durations:
            length = durations[file]
            if not (isinstance(length, (int, float)) and math.isfinite(length) and length >= 0):
                raise ConfigError(f"duration of {file!r} must be a finite number of seconds >= 0, got {length!r}")
        else:
            length = max((event.end for event in (*ref, *det)), default=0.0)
        segments = int(math.ceil(length / segment_length))
        file_overall, file_classes = _file_counts(
            activity(ref, labels, segments, segment_length), activity(det, labels, segments, segment_length)
        )
        overall = overall + file_overall
        per_class = [total + counts for total, counts in zip(per_class, file_classes)]
    return SegmentMetrics(overall, dict(zip(labels, per_class)), float(segment_length))
