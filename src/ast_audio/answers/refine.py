"""The finer pass: sharper event boundaries from a few extra windows scored around each onset and offset.

With windows of `window` s every `hop` s, the score track of `ast_audio.answers.events` (the minimum over the
windows that cover a stretch) puts an event's onset at the end of the last window that stayed silent: the
next window, which ends one hop later, heard enough of the sound to fire, so the sound's onset (plus the
seconds of it a window needs to fire) lies in the hop after the coarse onset. Likewise the offset lies in the
hop before the coarse offset (the start of the first silent window after the event).

This module narrows that hop by bisection, one round at a time, with windows of the same length (so the
model sees what it saw in the first pass):
- `boundary_windows(events, ...)`: for each onset `s`, windows ending at `s + step`, `s + 2 step`, ...
  (inside `span`); for each offset `e`, windows starting at `e - step`, `e - 2 step`, .... Round r of a
  bisection uses span = hop / 2**(r-1) and step = span / 2: one window per boundary and round.
- `refine_events(...)`: the events rebuilt from all the windows scored so far (the first pass's and the
  extra ones), by the same track rule and hysteresis; a silent extra window moves the boundary by `step`
  towards the inside of the event, a firing one leaves it.
- `refine(...)`: the rounds, given a function that scores windows.

After r rounds a boundary is known to hop / 2**r (0.125 s for a 0.5 s hop and 2 rounds) for 2 r extra
windows per event: with `n` events in `m` first-pass windows the finer pass costs 2 r n / m more windows
(benchmarks/bench_events.py measures it with a trained model). There (3 recordings of 2 min, 12 sounds of
0.5-3 s each, a 1.295 s window every 0.6475 s) the median onset error went from 0.28 s to 0.10 s with 2 rounds
on both boundaries (25% more windows) or on onsets only (13%), and to 0.12 s with 1 round on both (13%). More
rounds converge on where a window starts to fire, which lies a class-dependent part of a second inside the
sound (0.26 s for a tone there), not on the onset itself; so `AnswerOptions.refine` takes 1 to 3 rounds
and 1 is the one recommended.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ast_audio.answers.events import EDGE_DECIMALS, Event, EventOptions, events_from_windows
from ast_audio.errors import ConfigError


def _check_positive(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


BOUNDARIES = ("both", "onset", "offset")


def boundary_windows(
    events: Sequence[Event], window: float, duration: float, *, span: float, step: float, scored: Any = (),
    boundaries: str = "both",
) -> np.ndarray:
    """The extra windows to score around each event's boundaries: (windows, 2) start and end in seconds.

    For an onset `s`: windows ending at s + k * step for k = 1, 2, ... while k * step < span; for an offset
    `e`: windows starting at e - k * step (an onset at 0 s or an offset at `duration` has none: there the
    first pass had no silent window to bound it). Each is `window` s long, cut to [0, duration] (a window cut at
    the file's end is scored zero-padded, as the first pass's last window). Windows already in `scored`
    ((n, 2) seconds) and duplicates are left out; rows are sorted by start, then end. `boundaries` "onset"
    or "offset" asks only for the windows of that boundary (half the cost), "both" for both.
    Raises `ConfigError` for a window, duration, span or step that is not a positive number, or another
    `boundaries`.
    """
    if boundaries not in BOUNDARIES:
        raise ConfigError(f"boundaries must be one of {BOUNDARIES}, got {boundaries!r}")
    window, duration = _check_positive("window", window), _check_positive("duration", duration)
    span, step = _check_positive("span", span), _check_positive("step", step)
    offsets = step * np.arange(1, max(1, math.ceil(span / step - 1e-9)))
    # A boundary at the file's start or end has no silent window beside it: nothing to narrow.
    onsets = [event.start for event in events if event.start > 0 and boundaries != "offset"]
    offsets_at = [event.end for event in events if event.end < duration and boundaries != "onset"]
    starts = [onset + offset - window for onset in onsets for offset in offsets]
    starts += [end - offset for end in offsets_at for offset in offsets]
    starts = np.asarray(starts, dtype=np.float64)
    rows = np.stack([np.clip(starts, 0, duration), np.clip(starts + window, 0, duration)], axis=1)
    rows = np.round(rows, EDGE_DECIMALS)
    rows = rows[rows[:, 1] > rows[:, 0]]
    done = np.round(np.asarray(scored, dtype=np.float64).reshape(-1, 2), EDGE_DECIMALS)
    if len(done):
        seen = {tuple(row) for row in done.tolist()}
        rows = rows[[tuple(row) not in seen for row in rows.tolist()]] if len(rows) else rows
    return np.unique(rows, axis=0) if len(rows) else np.zeros((0, 2))


def refine_events(
    windows: Any, scores: Any, extra_windows: Any, extra_scores: Any, labels: Sequence[str],
    options: EventOptions = EventOptions(),
) -> list[Event]:
    """The events of one file from the first pass's windows and scores plus the extra ones.

    windows, extra_windows: (n, 2) and (k, 2) seconds; scores, extra_scores: (n, classes) and (k, classes)
    as the checkpoint's scoring rule gives them; k may be 0. Same errors as `events_from_windows`.
    """
    extra_windows = np.asarray(extra_windows, dtype=np.float64).reshape(-1, 2)
    extra_scores = np.asarray(extra_scores, dtype=np.float64).reshape(len(extra_windows), len(labels))
    all_windows = np.concatenate([np.asarray(windows, dtype=np.float64), extra_windows])
    all_scores = np.concatenate([np.asarray(scores, dtype=np.float64), extra_scores])
    return events_from_windows(all_windows, all_scores, labels, options)


def refine(
    windows: Any, scores: Any, labels: Sequence[str], score_windows: Callable[[np.ndarray], Any], *,
    window: float, hop: float, duration: float, rounds: int = 2, options: EventOptions = EventOptions(),
    boundaries: str = "both",
) -> tuple[list[Event], np.ndarray]:
    """Bisect every boundary (or only onsets or offsets: `boundaries`, as in `boundary_windows`) `rounds`
    times: (refined events, the extra windows scored, (k, 2) seconds).

    `score_windows(rows)` returns the (len(rows), classes) scores of (len(rows), 2) windows; it is called
    once per round (not at all when there are no events). rounds 0 returns the first pass's events.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ConfigError(f"rounds must be an integer >= 0, got {rounds!r}")
    hop = _check_positive("hop", hop)
    windows = np.asarray(windows, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    extra_windows, extra_scores = np.zeros((0, 2)), np.zeros((0, len(labels)))
    events = events_from_windows(windows, scores, labels, options)
    for round_index in range(rounds):
        span = hop / 2**round_index
        rows = boundary_windows(events, window, duration, span=span, step=span / 2,
                                scored=np.concatenate([windows, extra_windows]), boundaries=boundaries)
        if not len(rows):
            break
        extra_windows = np.concatenate([extra_windows, rows])
        extra_scores = np.concatenate([extra_scores, np.asarray(score_windows(rows), dtype=np.float64)])
        events = refine_events(windows, scores, extra_windows, extra_scores, labels, options)
    return events, extra_windows
