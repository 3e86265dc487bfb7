"""One input in, one result out: the two ends of the path every front end shares.

`prepare` opens an input, applies `--strict`, plans its windows and reads them a batch at a time (so memory
follows the batch, not the input); `assemble` turns a plan and its windows' scores and embeddings into the
input's `ClipResult`, and `failed` gives an input's error result. Callers: the local runner
(`inference.runner.produce_batches`, `ResultAssembler`), the service (`service.app.Service`) and the Ray
workers (`distributed.tagging`). Nothing else opens audio for scoring or builds a `ClipResult`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ast_audio.answers.options import AnswerOptions, Answers
from ast_audio.errors import AudioError
from ast_audio.features.timing import Timing
from ast_audio.inference.results import ClipResult, pool_scores
from ast_audio.inference.sources import AudioInput, AudioSource
from ast_audio.inference.windows import plan_windows

__all__ = ["Prepared", "WindowPlan", "assemble", "failed", "prepare"]


@dataclass
class WindowPlan:
    """An input was opened: its position among the job's inputs, its name, its windows (start, end) in
    seconds, its duration in seconds, and the decoder's warning (e.g. cut short) if any."""

    index: int
    source: str
    windows: list[tuple[float, float]]
    duration: float
    warning: str | None = None


class Prepared:
    """An opened input and its window plan; its windows' samples are read lazily, a batch at a time.

    Close it (or use it as a context manager) when done: a file input holds an open decoder.
    """

    def __init__(self, source: AudioSource, plan: WindowPlan) -> None:
        self.source, self.plan = source, plan

    def __enter__(self) -> "Prepared":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.source.close()

    def clips(self, batch_size: int, first: int = 0) -> Iterator[list[np.ndarray]]:
        """The windows' mono float32 samples at the model's rate, from window `first` on, `batch_size` windows
        at a time (the last batch may be shorter). Raises the decoder's error for audio it cannot read."""
        windows = self.plan.windows
        for start in range(first, len(windows), batch_size):
            yield [self.source.read(begin, end) for begin, end in windows[start : start + batch_size]]

    def features(self, featurise: Callable[[list[np.ndarray]], Any], batch_size: int) -> Iterator[Any]:
        """`featurise(clips)` of each batch of `clips(batch_size)`: features (batch, frames, mel bins)."""
        for clips in self.clips(batch_size):
            yield featurise(clips)


def prepare(
    item: AudioInput, timing: Timing, *, window: float, hop: float, strict: bool = False, index: int = 0,
    sampling_rate: int | None = None, name: str | None = None,
) -> Prepared:
    """Open input `item` (a path, bytes, an array or a dict; the `index`-th of its job) and plan its windows
    of `window` s every `hop` s (`inference.windows.plan_windows`).

    `name` is what messages call bytes (default: their position and size). Raises `AudioError` for audio that
    cannot be used and, with `strict`, for audio with a warning (a file cut short), naming the input;
    `OSError` for a path that cannot be read. Other exceptions are a decoder failing in a way it does not
    document: callers give any of them to `ast_audio.failures.input_error`.
    """
    source = AudioSource(item, index, timing, sampling_rate, name=name)
    try:
        if strict and source.warning:
            raise AudioError(f"{source.name}: {source.warning} (--strict)")
        windows = plan_windows(source.duration, window, hop)
    except BaseException:
        source.close()
        raise
    return Prepared(source, WindowPlan(index, source.name, windows, source.duration, source.warning))


def assemble(plan: WindowPlan, scores: np.ndarray, embeddings: np.ndarray, labels: list[str],
             pooling: str = "mean", answers: AnswerOptions | Answers | None = None) -> ClipResult:
    """The `ClipResult` of an input planned as `plan`: `scores` (windows, labels) and `embeddings` (windows,
    hidden) of its windows in order, pooled over windows by `pooling` (`results.POOLINGS`).

    `answers` (options, or options built for `labels`): the class selection is applied to the window scores
    first, so the result's labels, clip scores, top-k, timeline and events all use the selected classes;
    with events on, `events` are found in the selected window scores; with decisions on, `decisions` holds the
    selected classes whose pooled clip score is at or above their threshold and `window_decisions` those of
    each window (`answers.decisions`). Raises `ConfigError` for a selection
    that names a label the model lacks (or rollup over labels that are not AudioSet's)."""
    if len(scores) != len(plan.windows) or len(embeddings) != len(plan.windows):
        raise ValueError(f"{plan.source}: {len(plan.windows)} windows but {len(scores)} scores and "
                         f"{len(embeddings)} embeddings")
    events = decisions = window_decisions = None
    if isinstance(answers, AnswerOptions):
        answers = answers.build(labels)
    if answers is not None:
        scores, labels = answers.select(scores), list(answers.labels)
        events = answers.detect(plan.windows, scores)
        if answers.decide is not None and len(scores):
            decisions = answers.decisions(pool_scores(scores, pooling))[0]
            window_decisions = answers.decisions(scores)
    return ClipResult(source=plan.source, duration=plan.duration, windows=list(plan.windows),
                      window_scores=scores, window_embeddings=embeddings, labels=labels, pooling=pooling,
                      warning=plan.warning or None, events=events, decisions=decisions,
                      window_decisions=window_decisions)


def failed(source: str, error: str, labels: list[str] | None = None) -> ClipResult:
    """The result of input `source` that failed with the one-line `error` (which names it)."""
    return ClipResult(source=source, labels=list(labels or []), error=error)
