"""The finer pass of event detection: which extra windows it asks for, and the boundaries it narrows."""

from __future__ import annotations

import numpy as np
import pytest

from ast_audio.answers.events import Event, EventOptions, events_from_windows
from ast_audio.answers.refine import boundary_windows, refine
from ast_audio.errors import ConfigError
from ast_audio.inference.windows import plan_windows

OPTIONS = EventOptions(threshold=0.5, threshold_off=0.3)
NEED = 0.2  # seconds of the sound a simulated window must hold to fire


def simulated_scores(rows: np.ndarray, sounds: list[tuple[float, float]]) -> np.ndarray:
    """(windows, 1): 0.9 where a window holds at least NEED s of one of the sounds, else 0.05."""
    rows = np.asarray(rows, dtype=np.float64)
    heard = np.zeros(len(rows))
    for onset, offset in sounds:
        heard = np.maximum(heard, np.minimum(rows[:, 1], offset) - np.maximum(rows[:, 0], onset))
    return np.where(heard >= NEED - 1e-9, 0.9, 0.05)[:, None]


def test_boundary_windows_around_onset_and_offset_skip_scored_and_file_edges() -> None:
    events = [Event("x", 2.0, 5.0), Event("x", 0.0, 1.0), Event("x", 8.0, 10.0)]
    rows = boundary_windows(events, 1.0, 10.0, span=0.5, step=0.25)
    # onset 2.0: a window ending at 2.25; offset 5.0: one starting at 4.75; offset 1.0: one starting at
    # 0.75; onset 8.0: one ending at 8.25; nothing for the onset at 0 s and the offset at the file's end.
    assert rows.tolist() == [[0.75, 1.75], [1.25, 2.25], [4.75, 5.75], [7.25, 8.25]]
    finer = boundary_windows(events[:1], 1.0, 10.0, span=0.5, step=0.125, scored=[[1.25, 2.25]])
    assert finer.tolist() == [[1.125, 2.125], [1.375, 2.375], [4.625, 5.625], [4.75, 5.75], [4.875, 5.875]]
    onsets = boundary_windows(events, 1.0, 10.0, span=0.5, step=0.25, boundaries="onset")
    assert onsets.tolist() == [[1.25, 2.25], [7.25, 8.25]]
    assert boundary_windows([], 1.0, 10.0, span=0.5, step=0.25).shape == (0, 2)
    with pytest.raises(ConfigError, match="boundaries"):
        boundary_windows(events, 1.0, 10.0, span=0.5, step=0.25, boundaries="onsets")
    with pytest.raises(ConfigError, match="step"):
        boundary_windows(events, 1.0, 10.0, span=0.5, step=0.0)


@pytest.mark.parametrize("onset, offset", [(20.13, 22.71), (33.0, 33.9), (47.61, 50.4)])
def test_two_rounds_narrow_each_boundary_to_a_quarter_hop(onset: float, offset: float) -> None:
    window, hop, duration = 1.0, 0.5, 60.0
    windows = np.array(plan_windows(duration, window, hop))
    sounds = [(onset, offset), (5.3, 6.1)]
    scores = simulated_scores(windows, sounds)
    coarse = events_from_windows(windows, scores, ["x"], OPTIONS)
    calls = []

    def score_windows(rows: np.ndarray) -> np.ndarray:
        calls.append(len(rows))
        return simulated_scores(rows, sounds)

    events, extra = refine(windows, scores, ["x"], score_windows, window=window, hop=hop, duration=duration,
                           rounds=2, options=OPTIONS)
    assert len(coarse) == len(events) == 2 and calls == [4, 4] and len(extra) == 8
    target = next(event for event in events if abs(event.start - onset) < 1)
    before = next(event for event in coarse if abs(event.start - onset) < 1)
    # The boundary of the track is where a window first holds NEED s of the sound: onset + NEED.
    assert 0 <= onset + NEED - target.start < hop / 4 + 1e-9
    assert 0 <= target.end - (offset - NEED) < hop / 4 + 1e-9
    assert abs(onset + NEED - before.start) <= hop and abs(before.end - (offset - NEED)) <= hop
    calls.clear()
    onsets_only, extra = refine(windows, scores, ["x"], score_windows, window=window, hop=hop, duration=duration,
                                rounds=2, options=OPTIONS, boundaries="onset")
    assert calls == [2, 2] and len(extra) == 4
    # The onsets narrowed as with both boundaries, the offsets left where the first pass put them.
    assert [(e.start, e.end) for e in onsets_only] == [(f.start, e.end) for e, f in zip(coarse, events)]


def test_no_events_scores_nothing_and_zero_rounds_is_the_first_pass() -> None:
    windows = np.array(plan_windows(10.0, 1.0, 0.5))
    quiet = np.full((len(windows), 1), 0.05)

    def never(rows: np.ndarray) -> np.ndarray:
        raise AssertionError("no events: nothing to score")

    assert refine(windows, quiet, ["x"], never, window=1.0, hop=0.5, duration=10.0)[0] == []
    loud = simulated_scores(windows, [(3.1, 4.2)])
    events, extra = refine(windows, loud, ["x"], never, window=1.0, hop=0.5, duration=10.0, rounds=0)
    assert events == events_from_windows(windows, loud, ["x"], OPTIONS) and extra.shape == (0, 2)
    with pytest.raises(ConfigError, match="rounds"):
        refine(windows, loud, ["x"], never, window=1.0, hop=0.5, duration=10.0, rounds=-1)
