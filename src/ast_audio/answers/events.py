"""Sound events from per-window scores: one score track per class, then onset and offset by hysteresis.

A tagger scores overlapping windows (10.255 s every 5.1275 s by default), so one sound lifts the score of
every window that hears it. Reporting each window above a threshold would report one sound several times;
this module turns the windows of one file into one **event** per sound: a `label`, an `onset` (`start`) and
an `offset` (`end`) in seconds from the file's start, the peak score (`score`) and the mean score (`mean`)
over the event.

Step 1, the score track. The window boundaries (every start and every end) cut the file into segments; on
each segment, the track of a class is the **minimum** of the scores of the windows that cover it (NaN where
no window does, e.g. between windows when the hop is longer than the window). The track is piecewise
constant, so it is kept exactly as `ScoreTrack` (segment edges and values) rather than sampled on a fine grid
(an hour at 10 ms steps would be 360,000 points per class); `ScoreTrack.on_grid(step)` samples it on a
regular grid for plots. Why the minimum: a window scores high when the sound is anywhere in it, so the sound
is where every window that heard that stretch agrees; the mean (or the maximum) spreads one sound over the
whole union of the windows that heard it. With windows that fire whenever they hold any of the sound, the
onset lies between the end of the last silent window and the end of the first window that fired, a stretch
one hop long: the minimum puts the onset at the start of that stretch, within one hop of the truth (half a
hop in the median), and the offset likewise. In a simulation (`benchmarks/sim_event_track.py`: sounds of
0.2-3 s, scores rising with the part of the sound a window holds) the median onset error was 0.31-0.50 hop
with the minimum (0.50 at the default 10.255 s / 5.1275 s), 0.59-1.30 hop with the mean and 1.3-2.3 hop with
the maximum; with hysteresis 0.5 / 0.3 the mean reached 1.3-2.2 hop, as its half-heard shoulders pass
`threshold_off`. No rule reported a sound twice. For finer boundaries, score short windows around each onset
and offset (a second pass) and rebuild the track from all the windows.

Step 2, events by hysteresis (double thresholding, as in DCASE systems): an event is a stretch of the track
at or above `threshold_off` that reaches `threshold` somewhere. A track that hovers around one threshold
therefore gives one event, not a flicker of many. It is symmetric in time (the same audio reversed gives the
same events, mirrored). Then events of one class separated by a gap shorter than `min_gap` seconds are
merged into one, and events shorter than `min_duration` seconds are dropped (merging first, so pieces of one
sound count together).

Thresholds apply to the checkpoint's scores as its scoring rule gives them (`ast_audio.model.scoring`):
sigmoid probabilities for multi-label checkpoints (AudioSet), where the defaults 0.5 / 0.3 suit, or softmax
probabilities for single-label ones, which share 1 among the classes, so a class competing with a similar
one may need lower thresholds. A class may have its own threshold (`EventOptions.class_thresholds`, e.g.
learned on labelled audio); its off threshold keeps the same proportion to it as `threshold_off` to
`threshold`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ast_audio.errors import ConfigError

# Window edges are rounded to this many decimals of a second (1 us), so that 2 * 5.1275 and 10.255, which
# differ in the last bit, make one edge, and 3.2 stays 3.2.
EDGE_DECIMALS = 6


@dataclasses.dataclass(frozen=True)
class Event:
    """One sound: `label`, `start` and `end` in seconds from the file's start (start < end), `score` (the
    peak of the class's track within the event) and `mean` (its time-weighted mean over the covered part of
    the event). Events read from annotation files have `score` and `mean` None."""

    label: str
    start: float
    end: float
    score: float | None = None
    mean: float | None = None

    @property
    def duration(self) -> float:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        """{label, start, end, score, mean}: the event as it appears in JSON records."""
        return dataclasses.asdict(self)


def _check_threshold(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    return float(value)


# The default off threshold as a share of the on threshold (0.3 for 0.5), the one rule of every front end.
DEFAULT_OFF_RATIO = 0.6


def check_score_threshold(name: str, value: object) -> float:
    """`value` as a float when it is a number in [0, 1] (scores are sigmoid or softmax probabilities); raises
    `ConfigError` naming `name` and the value otherwise."""
    number = _check_threshold(name, value)
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{name} must be a score in [0, 1], got {number:g}")
    return number


@dataclasses.dataclass(frozen=True)
class EventOptions:
    """How scores become events (see the module docstring).

    threshold: an event must reach this score (default 0.5, for sigmoid scores); in [0, 1], as scores are.
    threshold_off: an event lasts while the score stays at or above this (default None: 0.6 x threshold,
        0.3 for 0.5, as on the command line; in [0, 1] and <= threshold; equal to threshold means no
        hysteresis).
    min_duration: events shorter than this many seconds are dropped (default 0: keep all).
    min_gap: events of one class separated by less than this many seconds are merged (default 0).
    class_thresholds: {label: threshold} overriding `threshold` for those classes (labels the scores do
        not have are ignored, so one file of learned thresholds serves any class selection). Stored as a
        sorted tuple of pairs so the options stay hashable; pass a mapping.

    Raises `ConfigError` (a ValueError) naming the value: a threshold (own or of a class) that is not a
    number in [0, 1], threshold_off above threshold, a negative duration or gap.
    """

    threshold: float = 0.5
    threshold_off: float | None = None
    min_duration: float = 0.0
    min_gap: float = 0.0
    class_thresholds: Mapping[str, float] | tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        threshold = check_score_threshold("threshold", self.threshold)
        if self.threshold_off is None:
            object.__setattr__(self, "threshold_off", DEFAULT_OFF_RATIO * threshold)
        threshold_off = check_score_threshold("threshold_off", self.threshold_off)
        if threshold_off > threshold:
            raise ConfigError(f"threshold_off {threshold_off:g} is above threshold {threshold:g}: it must be <= it")
        for name in ("min_duration", "min_gap"):
            value = _check_threshold(name, getattr(self, name))
            if value < 0:
                raise ConfigError(f"{name} must be >= 0 seconds, got {value:g}")
        try:
            pairs = dict(self.class_thresholds).items() if self.class_thresholds else ()
        except (TypeError, ValueError):
            got = self.class_thresholds
            raise ConfigError(f"class_thresholds must map labels to thresholds, got {got!r}") from None
        if threshold <= 0 and pairs:
            raise ConfigError(f"class_thresholds need a positive threshold (for the off proportion), got {threshold:g}")
        checked = ((str(label), check_score_threshold(f"threshold of {label!r}", value)) for label, value in pairs)
        checked = tuple(sorted(checked))
        object.__setattr__(self, "class_thresholds", checked)

    def thresholds(self, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(on, off): float64 arrays of shape (len(labels),), the thresholds of each label."""
        on = np.full(len(labels), float(self.threshold))
        off = np.full(len(labels), float(self.threshold_off))
        own = dict(self.class_thresholds)
        for index, label in enumerate(labels):
            if label in own:
                on[index] = own[label]
                off[index] = own[label] * (self.threshold_off / self.threshold)
        return on, off


@dataclasses.dataclass(frozen=True, eq=False)
class ScoreTrack:
    """The score track of each class over one file: piecewise constant on segments.

    edges: (segments + 1,) float64 seconds, increasing; segment i is [edges[i], edges[i + 1]].
    values: (segments, classes) float64; NaN on a segment that no window covers.
    labels: the class names, one per column.
    """

    edges: np.ndarray
    values: np.ndarray
    labels: tuple[str, ...]

    def on_grid(self, step: float) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) sampled every `step` seconds from the first edge: times (points,) and values
        (points, classes), each point taking the segment it falls in (NaN outside every window)."""
        step = _check_threshold("step", step)
        if step <= 0:
            raise ConfigError(f"step must be > 0 seconds, got {step:g}")
        times = self.edges[0] + step * np.arange(int(math.floor((self.edges[-1] - self.edges[0]) / step + 1e-9)) + 1)
        segment = np.clip(np.searchsorted(self.edges, times, side="right") - 1, 0, len(self.values) - 1)
        return times, self.values[segment]


def score_track(windows: Any, scores: Any, labels: Sequence[str]) -> ScoreTrack:
    """The score track of one file from its windows' scores (the minimum over covering windows).

    windows: (windows, 2) start and end in seconds (any order; may overlap or leave gaps; end > start).
    scores: (windows, classes) scores, one row per window. labels: `classes` names.
    Raises `ConfigError` when the shapes disagree, a window is empty or reversed, or a value is not finite.
    """
    windows = np.asarray(windows, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    labels = tuple(labels)
    if windows.ndim != 2 or windows.shape[1] != 2 or len(windows) == 0:
        raise ConfigError(f"windows must be (windows >= 1, 2) start/end seconds, got shape {windows.shape}")
    if scores.shape != (len(windows), len(labels)):
        raise ConfigError(f"scores must be (windows, classes) = ({len(windows)}, {len(labels)}), got {scores.shape}")
    if not (np.isfinite(windows).all() and np.isfinite(scores).all()):
        raise ConfigError("windows and scores must be finite (no NaN or infinity)")
    windows = np.round(windows, EDGE_DECIMALS)
    if (windows[:, 1] <= windows[:, 0]).any():
        bad = windows[np.argmax(windows[:, 1] <= windows[:, 0])]
        raise ConfigError(f"window ({bad[0]:g}, {bad[1]:g}) s must end after it starts")
    edges = np.unique(windows)
    first = np.searchsorted(edges, windows[:, 0])
    last = np.searchsorted(edges, windows[:, 1])  # exclusive: segments first .. last - 1
    counts = last - first
    segment = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
    values = np.full((len(edges) - 1, len(labels)), np.inf)
    np.minimum.at(values, segment, np.repeat(scores, counts, axis=0))
    values[np.isinf(values)] = np.nan
    return ScoreTrack(edges, values, labels)


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[first, last) index pairs of the runs of True in a 1-d boolean array."""
    padded = np.concatenate(([False], mask, [False]))
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(changes[0::2].tolist(), changes[1::2].tolist()))


def _merge(spans: list[tuple[int, int]], edges: np.ndarray, min_gap: float) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for first, last in spans:
        if merged and edges[first] - edges[merged[-1][1]] < min_gap:
            merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def _class_events(track: ScoreTrack, column: int, on: float, off: float, options: EventOptions) -> list[Event]:
    values = track.values[:, column]
    with np.errstate(invalid="ignore"):
        above_off, above_on = values >= off, values >= on  # NaN compares False: no event where nothing heard
    spans = [(first, last) for first, last in _runs(above_off) if above_on[first:last].any()]
    events = []
    for first, last in _merge(spans, track.edges, options.min_gap):
        start, end = float(track.edges[first]), float(track.edges[last])
        if end - start < options.min_duration:
            continue
        inside, lengths = values[first:last], np.diff(track.edges[first : last + 1])
        covered = ~np.isnan(inside)
        heard = inside[covered]
        mean = np.sum(heard * lengths[covered]) / np.sum(lengths[covered])
        # Clipped so that a constant track's mean is that constant exactly, not one rounding off it.
        mean = float(np.clip(mean, heard.min(), heard.max()))
        events.append(Event(track.labels[column], start, end, float(heard.max()), mean))
    return events


def detect_events(track: ScoreTrack, options: EventOptions = EventOptions()) -> list[Event]:
    """The events of every class on `track`, by hysteresis, merging and minimum duration (module docstring).

    Returns events sorted by start, then end, then label; a class that never reaches its threshold has none.
    """
    on, off = options.thresholds(track.labels)
    with np.errstate(invalid="ignore"):
        firing = np.flatnonzero((track.values >= on).any(axis=0))  # most classes never fire: skip them at once
    events = [event for column in firing for event in _class_events(track, column, on[column], off[column], options)]
    return sorted(events, key=lambda event: (event.start, event.end, event.label))


def events_from_windows(
    windows: Any, scores: Any, labels: Sequence[str], options: EventOptions = EventOptions()
) -> list[Event]:
    """`detect_events(score_track(windows, scores, labels), options)`: the events of one file.

    windows: (windows, 2) seconds; scores: (windows, classes) as the checkpoint's scoring rule gives them
    (after any class selection); labels: `classes` names. A file shorter than one window has one window
    [0, duration], so an event there spans the whole file.
    """
    return detect_events(score_track(windows, scores, labels), options)
