"""Labels per window from time-stamped annotations: what a window "should" score, for learning thresholds.

Thresholds decide on window scores (events come from them), so recordings with time-stamped annotations
teach thresholds through their windows: a window is **positive** for a class when an annotated event of that
class overlaps it by at least `min_overlap` (default 0.5) of the shorter of the two (the event or the window),
else negative. Why the shorter: a 0.3 s bark inside a 10 s window is the window's sound (the model is trained
on clips whose sound may be that short), and a window that only grazes a long event's edge by a fraction of
a second is not; a point event (start == end) inside or on the edge of a window makes it positive.

Only the classes the annotations name are learned: within an annotated file, the absence of an annotation of
such a class is taken as its absence; other classes are not labelled at all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ast_audio.answers.events import Event
from ast_audio.errors import ConfigError

DEFAULT_MIN_OVERLAP = 0.5


def window_targets(
    windows: Sequence[tuple[float, float]], events: Iterable[Event], labels: Sequence[str],
    min_overlap: float = DEFAULT_MIN_OVERLAP,
) -> np.ndarray:
    """(windows, classes) bool: whether an event of each label of `labels` covers each window (module
    docstring). windows: (start, end) seconds. Events of other labels are ignored. Raises `ConfigError` for
    a `min_overlap` outside (0, 1]."""
    if not 0 < min_overlap <= 1:
        raise ConfigError(f"min_overlap must be in (0, 1], got {min_overlap!r}")
    bounds = np.asarray(windows, dtype=np.float64).reshape(-1, 2)
    column = {label: index for index, label in enumerate(labels)}
    targets = np.zeros((len(bounds), len(labels)), dtype=bool)
    for event in events:
        if event.label not in column:
            continue
        touching = (bounds[:, 0] <= event.end) & (bounds[:, 1] >= event.start)
        overlap = np.minimum(bounds[:, 1], event.end) - np.maximum(bounds[:, 0], event.start)
        shorter = np.minimum(bounds[:, 1] - bounds[:, 0], event.end - event.start)
        targets[:, column[event.label]] |= touching & (overlap >= min_overlap * shorter - 1e-9)
    return targets
