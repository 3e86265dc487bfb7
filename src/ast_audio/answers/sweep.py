"""How event detection trades precision for recall: a threshold sweep, and PSDS.

`threshold_sweep` detects events at each threshold of a series (`events.detect_events` on each file's score
track, every class at that threshold, the off threshold in the options' proportion to it, the options'
minimum duration and gap) and scores them against reference events with the event-based metrics of
`metrics.event_based_metrics` (onset collar, offset tolerance): precision, recall and F1 per class and
overall at each threshold, the precision-recall curve of each class.

`psds` computes the Polyphonic Sound Detection Score (Bilen et al., "A framework for the robust evaluation
of sound event detection", ICASSP 2020) with `sed_scores_eval` (Ebbers, Serizel & Haeb-Umbach, ICASSP 2022:
the exact PSD-ROC over all thresholds), an optional dependency (the `dev` extra). The score tracks go in
as they are: piecewise constant on their segments (`ScoreTrack.edges`), a segment no window covers scored
0. The defaults are DCASE's scenario 1 (dtc = gtc = 0.7, no cross-trigger, alpha_st = 1, eFPR up to 100
per hour); scenario 2 is dtc = gtc = 0.1, cttc = 0.3, alpha_ct = 0.5, alpha_st = 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.answers.events import Event, EventOptions, ScoreTrack, detect_events
from ast_audio.answers.metrics import EventCounts, event_based_metrics
from ast_audio.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class ThresholdSweep:
    """Event-based counts at each threshold.

    thresholds: (points,) float64, increasing. overall: one `EventCounts` per threshold (pooled over
    classes). per_class: {label: one `EventCounts` per threshold}.
    """

    thresholds: np.ndarray
    overall: tuple[EventCounts, ...]
    per_class: Mapping[str, tuple[EventCounts, ...]]

    def curve(self, label: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(precision, recall), each (points,), of one class (None: overall); NaN where undefined."""
        counts = self.overall if label is None else self.per_class[label]
        return np.array([c.precision for c in counts]), np.array([c.recall for c in counts])

    def rows(self) -> list[dict[str, Any]]:
        """One row per class (label "" for overall) and threshold: label, threshold, precision, recall,
        f_measure, reference, detected, true_positives (NaN figures as None): for CSV and JSON."""
        rows = []
        for label, counts in [("", self.overall), *self.per_class.items()]:
            for threshold, count in zip(self.thresholds, counts):
                figures = {name: getattr(count, name) for name in ("precision", "recall", "f_measure")}
                rows.append({
                    "label": label, "threshold": float(threshold),
                    **{name: None if math.isnan(value) else value for name, value in figures.items()},
                    "reference": count.reference, "detected": count.detected, "true_positives": count.true_positives,
                })
        return rows


def _at(options: EventOptions, threshold: float) -> EventOptions:
    ratio = options.threshold_off / options.threshold if options.threshold > 0 else 1.0
    return dataclasses.replace(options, threshold=threshold, threshold_off=threshold * ratio, class_thresholds=())


def threshold_sweep(
    tracks: Mapping[str, ScoreTrack],
    reference: Mapping[str, Sequence[Event]],
    thresholds: Sequence[float],
    *,
    options: EventOptions = EventOptions(),
    collar: float = 0.2,
    offset_ratio: float = 0.5,
    evaluate_offset: bool = True,
) -> ThresholdSweep:
    """Event-based metrics at each threshold (module docstring).

    tracks: {file: its score track}; reference: {file: reference events} (files without a track count their
    events as missed). thresholds: the series (sorted here; e.g. np.linspace(0.05, 0.95, 19)). The classes
    are the tracks' labels. Raises `ConfigError` for no thresholds, a threshold that is not finite, or
    tracks whose labels differ.
    """
    values = np.unique(np.asarray(thresholds, dtype=np.float64))
    if values.size == 0 or not np.isfinite(values).all():
        raise ConfigError(f"thresholds must be a non-empty series of finite numbers, got {list(thresholds)!r}")
    label_sets = {track.labels for track in tracks.values()}
    if len(label_sets) > 1:
        raise ConfigError("every score track of a sweep must have the same labels")
    labels = next(iter(label_sets), tuple(sorted({e.label for events in reference.values() for e in events})))
    overall, per_class = [], {label: [] for label in labels}
    for threshold in values:
        at = _at(options, float(threshold))
        detected = {file: detect_events(track, at) for file, track in tracks.items()}
        result = event_based_metrics(
            reference, detected, collar=collar, offset_ratio=offset_ratio, evaluate_offset=evaluate_offset,
            labels=labels,
        )
        overall.append(result.overall)
        for label in labels:
            per_class[label].append(result.per_class[label])
    return ThresholdSweep(values, tuple(overall), {label: tuple(counts) for label, counts in per_class.items()})


@dataclasses.dataclass(frozen=True)
class PSDSResult:
    """`psds` (the score, 0..1), `per_class` ({label: the single-class PSDS}) and the options it used."""

    psds: float
    per_class: Mapping[str, float]
    dtc_threshold: float
    gtc_threshold: float
    cttc_threshold: float | None
    alpha_ct: float
    alpha_st: float
    max_efpr: float


def _writable_frame_class() -> type:
    """A DataFrame whose `to_numpy` returns a writable copy. Why: pandas 3 (copy-on-write) hands out read-only
    arrays, and sed_scores_eval 0.0.4's compiled detection takes typed memoryviews, which refuse them."""
    import pandas as pd

    class WritableSeries(pd.Series):
        @property
        def _constructor(self) -> type:
            return WritableSeries

        def to_numpy(self, *args: Any, **kwargs: Any) -> np.ndarray:
            return np.array(super().to_numpy(*args, **kwargs))

    class WritableFrame(pd.DataFrame):
        @property
        def _constructor(self) -> type:
            return WritableFrame

        @property
        def _constructor_sliced(self) -> type:
            return WritableSeries

        def to_numpy(self, *args: Any, **kwargs: Any) -> np.ndarray:
            return np.array(super().to_numpy(*args, **kwargs))

    return WritableFrame


def psds(
    tracks: Mapping[str, ScoreTrack],
    reference: Mapping[str, Sequence[Event]],
    durations: Mapping[str, float],
    *,
    dtc_threshold: float = 0.7,
    gtc_threshold: float = 0.7,
    cttc_threshold: float | None = None,
    alpha_ct: float = 0.0,
    alpha_st: float = 1.0,
    max_efpr: float = 100.0,
) -> PSDSResult:
    """The PSDS of the score tracks against reference events (module docstring), with sed_scores_eval.

    tracks: {file: score track}; reference: {file: events} (a file without events: an empty list);
    durations: {file: seconds}. Every track's file needs a duration and reference events (possibly none).
    Raises `ConfigError` when sed_scores_eval is not installed, or the files or labels disagree.
    """
    try:
        from sed_scores_eval import intersection_based
        from sed_scores_eval.base_modules.scores import create_score_dataframe
    except ImportError:
        raise ConfigError("PSDS needs sed_scores_eval: pip install sed_scores_eval (or ast-audio[dev])") from None
    files = sorted(tracks)
    missing = [file for file in files if file not in durations or file not in reference]
    if missing:
        raise ConfigError(f"PSDS needs a duration and reference events for every file; missing for {missing[:5]}")
    label_sets = {track.labels for track in tracks.values()}
    if len(label_sets) != 1:
        raise ConfigError("PSDS needs score tracks with one set of labels")
    labels = list(next(iter(label_sets)))
    writable = _writable_frame_class()
    scores = {
        file: writable(create_score_dataframe(np.nan_to_num(tracks[file].values, nan=0.0), tracks[file].edges, labels))
        for file in files
    }
    truth = {file: [(e.start, e.end, e.label) for e in reference[file] if e.label in labels] for file in files}
    value, per_class, *_ = intersection_based.psds(
        scores, truth, {file: float(durations[file]) for file in files},
        dtc_threshold=dtc_threshold, gtc_threshold=gtc_threshold, cttc_threshold=cttc_threshold,
        alpha_ct=alpha_ct, alpha_st=alpha_st, max_efpr=max_efpr,
    )
    return PSDSResult(
        float(value), {label: float(v) for label, v in per_class.items()},
        dtc_threshold, gtc_threshold, cttc_threshold, alpha_ct, alpha_st, max_efpr,
    )
