"""Window planning: where the windows of an input of any length start and end, in seconds."""

from __future__ import annotations

import math

from ast_audio.errors import ConfigError


def plan_windows(duration: float, window: float, hop: float) -> list[tuple[float, float]]:
    """(start, end) in seconds of windows of `window` s every `hop` s that cover [0, duration].

    A clip no longer than one window is a single window [0, duration]; otherwise windows start at
    0, hop, 2*hop, ... until one reaches the end, and the last is cut at `duration`.
    """
    if window <= 0 or hop <= 0:
        raise ConfigError(f"window and hop must be positive, got window={window}, hop={hop}")
    if duration <= window:
        return [(0.0, duration)]
    count = math.ceil((duration - window) / hop - 1e-9) + 1
    return [(i * hop, min(i * hop + window, duration)) for i in range(count)]
