"""Window planning: the window and hop a job uses, and where the windows of an input start and end, in seconds.

The one owner of both rules; every front end (`AudioClassifier`, the command line, the service, the Ray engine)
asks here rather than writing its own default.
"""

from __future__ import annotations

import math

from ast_audio.errors import AudioError, ConfigError, UsageError
from ast_audio.features.timing import Timing

_EPSILON = 1e-9  # seconds: starts and ends closer than this to the end of the input count as at the end


def window_and_hop(
    timing: Timing, window: float | None = None, hop: float | None = None,
    default: tuple[float, float] | None = None,
) -> tuple[float, float]:
    """The (window, hop) in seconds a job uses, checked against the model's `timing`.

    `window` None: the default window, which is the model's whole input (`timing.input_seconds`, 10.255 s
    for 1024 frames) unless `default` = (window, hop) gives another (e.g. an `AudioClassifier`'s own).
    `hop` None: the default hop when the window is the default one, else half the window.
    Raises `UsageError` (a `ConfigError`; naming the range) as `check_window_and_hop` does.
    """
    default_window, default_hop = default or (timing.input_seconds, timing.input_seconds / 2)
    if window is None:
        window = default_window
    if hop is None:
        hop = default_hop if window == default_window else window / 2
    check_window_and_hop(timing, window, hop)
    return window, hop


def seconds_text(seconds: float) -> str:
    """`seconds` with every digit that tells it apart (10.2550001 stays so, 10.255 is 10.255), for messages."""
    return format(seconds, ".10g")


def check_window_and_hop(timing: Timing, window: float, hop: float) -> None:
    """Raise `UsageError` (a `ConfigError`: a bad setting, found before any work) naming the allowed range,
    unless one patch <= `window` <= the model's input and `hop` is a finite number of seconds of at least one
    frame shift (10 ms at the usual 160 samples at 16 kHz). A finer hop would give the same features shifted by
    less than a frame, and a number of windows that grows without bound (1e-9 s: 10^9 windows a second)."""
    low, high = timing.shortest_window_seconds, timing.input_seconds
    if not (isinstance(window, (int, float)) and math.isfinite(window) and low - _EPSILON <= window <= high + _EPSILON):
        raise UsageError(
            f"window {seconds_text(window)} s is outside {seconds_text(low)}-{seconds_text(high)} s: at least one "
            f"patch of {timing.patch_size} frames and at most the model's input of {timing.input_frames} frames"
        )
    shortest_hop = timing.samples_to_seconds(timing.shift_samples)
    allowed = (f"at least {seconds_text(shortest_hop)} s, one frame shift (e.g. {seconds_text(window / 2)} s, "
               "half the window)")
    if not (isinstance(hop, (int, float)) and math.isfinite(hop)):
        raise UsageError(f"hop {hop} s is not a finite number: expected a positive number of seconds, {allowed}")
    if hop <= 0:
        raise UsageError(f"hop {seconds_text(hop)} s must be positive: {allowed}")
    if hop < shortest_hop - _EPSILON:
        raise UsageError(f"hop {seconds_text(hop)} s is below one frame shift: expected {allowed}; a finer hop "
                         "gives the same features shifted by less than a frame")


def plan_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """(start, end) in seconds of the windows of an input of `duration` s: `window` s every `hop` s.

    Windows start at 0, hop, 2*hop, ... (each start rounded to 1e-9 s, so 9.7125 is not 9.712499999999999)
    and are `window` s long. A window that would run past the end of an input longer than one window is moved
    back to end at the end: it starts at duration - window and keeps its full length, so every window holds
    audio only (a model trained on full clips may read zero padding as a sound). No window starts at or past
    the end, every window has a positive length, and no two windows are the same.
    An input no longer than one window is the single window [0, duration], scored zero-padded.
    - hop <= window (overlapping or touching windows, the usual case): windows go on until the first one
      that reaches the end, so every second of the input is covered.
    - hop > window (sparse sampling of long recordings): one window at each start before the end (the last
      one moved back as above); the audio between windows is not scored.
    Raises `ConfigError` for a window or hop that is not a positive number, `AudioError` for no audio.
    """
    if not (math.isfinite(window) and math.isfinite(hop) and window > 0 and hop > 0):
        raise ConfigError(f"window and hop must be positive, got window={window}, hop={hop}")
    if not (math.isfinite(duration) and duration > 0):
        raise AudioError(f"no windows in {duration} s of audio: expected a positive duration")
    duration = float(duration)
    if duration <= window:
        return [(0.0, duration)]
    reaching_end = math.ceil((duration - window) / hop - _EPSILON) + 1  # the first window to reach the end
    starting_before_end = math.ceil(duration / hop - _EPSILON)  # starts k * hop < duration
    count = max(1, min(reaching_end, starting_before_end))
    while count > 1 and (count - 1) * hop >= duration - _EPSILON:  # rounding in the counts above
        count -= 1
    starts = [round(i * hop, 9) for i in range(count)]
    last_start = round(duration - window, 9)
    if starts[-1] + window > duration + _EPSILON:  # runs past the end: move it back, whole
        starts[-1] = last_start
        if count > 1 and starts[-1] <= starts[-2] + _EPSILON:
            starts.pop()
    ends = [min(round(start + window, 9), duration) for start in starts]
    if starts[-1] == last_start:
        ends[-1] = duration
    return [(float(start), float(end)) for start, end in zip(starts, ends)]
