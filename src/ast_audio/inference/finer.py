"""The finer pass of event detection in the engine: a few extra windows scored around each event's boundaries.

`refine_result` takes an input's `ClipResult` (events from the first pass, `prepare.assemble`), reads the
extra windows `answers.refine.refine` asks for from the input (the same window length, so the model sees what
it saw in the first pass), scores them with the caller's model function, applies the same class selection,
and returns the result with its refined events and the count of extra windows. Callers: the local runner
(`inference.runner.InferenceRunner.refine`, which Ray's replica runs too) and the service (`service.refine`,
scoring the extra windows through its dynamic batcher).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from ast_audio.answers.options import Answers
from ast_audio.answers.refine import refine
from ast_audio.inference.results import ClipResult

__all__ = ["refine_result"]


def refine_result(
    result: ClipResult, answers: Answers, read: Callable[[float, float], np.ndarray],
    score: Callable[[list[np.ndarray]], np.ndarray], *, window: float, hop: float, batch_size: int = 8,
) -> ClipResult:
    """`result` with events sharpened by `answers.options.refine` rounds of bisection (unchanged when the
    rounds are 0, events are off, the input failed or it has no events).

    read(start, end): the input's mono samples of [start, end] seconds at the model's rate; score(clips): the
    model's scores (len(clips), model classes) of such sample arrays; window, hop: the first pass's, seconds.
    The extra windows are scored `batch_size` at a time; `result.extra_windows` counts them.
    Raises what `read` and `score` raise (an input that cannot be read again).
    """
    rounds = answers.options.refine
    if not rounds or answers.events is None or not result.ok or not result.events:
        return result

    def score_windows(rows: np.ndarray) -> np.ndarray:
        out = []
        for first in range(0, len(rows), batch_size):
            clips = [read(float(start), float(end)) for start, end in rows[first : first + batch_size]]
            out.append(answers.select(np.asarray(score(clips))))
        return np.concatenate(out)

    events, extra = refine(np.asarray(result.windows, dtype=np.float64), result.window_scores, answers.labels,
                           score_windows, window=window, hop=hop, duration=result.duration, rounds=rounds,
                           options=answers.events)
    return dataclasses.replace(result, events=events, extra_windows=len(extra))
