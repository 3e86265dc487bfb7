"""The inference core every front end shares: inputs -> windows -> features -> model -> scores -> results.

`InferenceRunner.run` decodes and featurises windows in a background thread (threads per stage: `ThreadBudget`)
while the model works on the previous batch; windows of several inputs share a batch, and
each input's `ClipResult` comes out, in input order, as soon as its last window is scored. Inputs are opened
and planned by `inference.prepare.prepare` and their results built by `inference.prepare.assemble`, the two
ends the service and the Ray workers share; `InferenceRunner.infer` (features -> scores, embeddings) is the
model stage all three run.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ast_audio.answers.options import AnswerOptions, Answers
from ast_audio.errors import ConfigError, UsageError
from ast_audio.failures import input_error
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.features.timing import Timing
from ast_audio.inference.backends import Backend
from ast_audio.inference.results import POOLINGS, ClipResult
from ast_audio.inference.finer import refine_result
from ast_audio.inference.prepare import WindowPlan, assemble, failed, prepare
from ast_audio.inference.sources import AudioInput, input_name
from ast_audio.model.scoring import logits_to_scores
from ast_audio.inference.windows import check_window_and_hop
from ast_audio.runtime import ThreadBudget

logger = logging.getLogger(__name__)


@dataclass
class InputFailure:
    """An input could not be read (in full); no result but this error."""

    index: int
    source: str
    error: str


@dataclass
class FeatureBatch:
    """Features of up to batch-size windows; keys[i] = (input index, window index) of row i."""

    keys: list[tuple[int, int]]
    features: torch.Tensor


Event = WindowPlan | InputFailure | FeatureBatch


def produce_batches(
    inputs: Iterable[AudioInput], featurise: Any, timing: Timing, *, window: float, hop: float, batch_size: int,
    sampling_rate: int | None = None, strict: bool = False,
) -> Iterator[Event]:
    """Open each input, plan its windows, read them and yield feature batches of `batch_size` windows.

    `featurise(list of sample arrays) -> features`. A bad input yields an `InputFailure` and the rest go on;
    with `strict`, so does an input with a warning (e.g. cut short).
    """
    pending = _PendingBatch(featurise)
    for index, item in enumerate(inputs):
        try:
            prepared = prepare(item, timing, window=window, hop=hop, strict=strict, index=index,
                               sampling_rate=sampling_rate)
        except Exception as exc:  # one input's fault, whatever its kind, is that input's error row
            yield InputFailure(index, input_name(item, index), input_error(input_name(item, index), exc))
            continue
        plan = prepared.plan
        pending.names[index] = plan.source
        yield plan
        try:
            for window_index, (clip,) in enumerate(prepared.clips(1)):  # a window at a time: inputs share batches
                pending.add((index, window_index), clip)
                if len(pending.clips) == batch_size:
                    yield from pending.flush()
        except Exception as exc:
            yield InputFailure(index, plan.source, input_error(plan.source, exc))
        finally:
            prepared.close()
    yield from pending.flush()


class _PendingBatch:
    """Windows read but not yet featurised."""

    def __init__(self, featurise: Any) -> None:
        self.featurise = featurise
        self.keys: list[tuple[int, int]] = []
        self.clips: list[np.ndarray] = []
        self.names: dict[int, str] = {}

    def add(self, key: tuple[int, int], samples: np.ndarray) -> None:
        self.keys.append(key)
        self.clips.append(samples)

    def flush(self) -> Iterator[Event]:
        """The batch's features; when they cannot be computed (e.g. NaN samples), each input's apart, so
        that only the inputs at fault fail."""
        if not self.clips:
            return
        keys, clips = self.keys, self.clips
        self.keys, self.clips = [], []
        try:
            features = self.featurise(clips)
        except Exception as exc:
            yield from self._apart(keys, clips, exc)
            return
        yield FeatureBatch(keys, features)

    def _apart(self, keys: list[tuple[int, int]], clips: list[np.ndarray], exc: Exception) -> Iterator[Event]:
        indices = list(dict.fromkeys(key[0] for key in keys))
        for index in indices:
            rows = [row for row, key in enumerate(keys) if key[0] == index]
            error = exc if len(indices) == 1 else None
            if error is None:
                try:
                    features = self.featurise([clips[row] for row in rows])
                except Exception as retried:
                    error = retried
            if error is not None:
                yield InputFailure(index, self.names[index], input_error(self.names[index], error))
            else:
                yield FeatureBatch([keys[row] for row in rows], features)


class ResultAssembler:
    """Collects window scores into per-input `ClipResult`s (`prepare.assemble`) and releases them in input order."""

    def __init__(self, labels: list[str], pooling: str, answers: Answers | None = None) -> None:
        self.labels, self.pooling, self.answers = labels, pooling, answers
        self._plans: dict[int, WindowPlan] = {}
        self._scores: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}  # (windows, labels), (windows, hidden)
        self._remaining: dict[int, int] = {}
        self._finished: dict[int, ClipResult] = {}
        self._next = 0

    def plan(self, event: WindowPlan) -> None:
        self._plans[event.index] = event
        self._scores[event.index] = None
        self._remaining[event.index] = len(event.windows)

    def fail(self, event: InputFailure) -> None:
        if event.index < self._next or event.index in self._finished:
            return  # already complete, or already failed
        for pending in (self._plans, self._scores, self._remaining):
            pending.pop(event.index, None)
        labels = self.labels if self.answers is None else list(self.answers.labels)
        self._finished[event.index] = failed(event.source, event.error, labels)

    def add(self, keys: list[tuple[int, int]], scores: np.ndarray, embeddings: np.ndarray) -> float:
        """Rows of scores and embeddings for the (input, window) `keys`; returns the seconds of audio they
        complete (each window adds what it covers past the previous one, so an input adds its duration)."""
        seconds = 0.0
        for row, (index, window_index) in enumerate(keys):
            plan = self._plans.get(index)
            if plan is None:  # its input failed after some windows were batched
                continue
            end = plan.windows[window_index][1]
            seconds += end - (plan.windows[window_index - 1][1] if window_index else 0.0)
            if self._scores[index] is None:
                count = len(plan.windows)
                self._scores[index] = (np.empty((count, scores.shape[1]), np.float32),
                                       np.empty((count, embeddings.shape[1]), np.float32))
            window_scores, window_embeddings = self._scores[index]
            window_scores[window_index] = scores[row]
            window_embeddings[window_index] = embeddings[row]
            self._remaining[index] -= 1
            if self._remaining[index] == 0:
                del self._remaining[index], self._scores[index], self._plans[index]
                self._finished[index] = assemble(plan, window_scores, window_embeddings, self.labels, self.pooling,
                                                 self.answers)
        return seconds

    def ready(self) -> Iterator[ClipResult]:
        """The finished results that are next in input order."""
        while self._next in self._finished:
            yield self._finished.pop(self._next)
            self._next += 1


class InferenceRunner:
    """A backend, the feature extractor and the model's timing: features and scores for batches of windows."""

    def __init__(
        self, backend: Backend, extractor: ASTFeatureExtractor, timing: Timing, labels: list[str],
        score_function: str, *, batch_size: int = 8, threads: ThreadBudget | None = None,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        if extractor.num_mel_bins != timing.options.num_mel_bins:
            raise ConfigError(
                f"feature extractor makes {extractor.num_mel_bins} mel bins but the model expects "
                f"{timing.options.num_mel_bins}"
            )
        if extractor.max_length != timing.input_frames:
            logger.warning("preprocessor max_length %d differs from the model's %d; using the model's",
                           extractor.max_length, timing.input_frames)
        self.backend, self.extractor, self.timing = backend, extractor, timing
        self.labels, self.score_function, self.batch_size = labels, score_function, batch_size
        self.threads = threads or ThreadBudget.for_machine()

    def features(self, clips: list[np.ndarray]) -> torch.Tensor:
        """Normalised features (batch, input frames, mel bins) of mono sample arrays at the model's rate."""
        return self.extractor(clips, sampling_rate=self.timing.sampling_rate, return_tensors="pt",
                              max_length=self.timing.input_frames)["input_values"]

    def infer(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Scores (batch, labels) and pooled embeddings (batch, hidden) of a feature batch."""
        self.threads.enter_model_stage()
        logits, pooled = self.backend(features)
        return logits_to_scores(logits, self.score_function).numpy(), pooled.numpy()

    def refine(self, result: ClipResult, item: AudioInput, answers: Answers | None, window: float, hop: float,
               sampling_rate: int | None = None, index: int = 0) -> ClipResult:
        """`result` after the finer pass (`inference.finer.refine_result`) when the answers ask for one; the
        input is opened again to read the extra windows. Should that fail, the first pass's events stay (a
        warning is logged): the input did score."""
        if answers is None or not answers.options.refine or not result.ok or not result.events:
            return result
        try:
            with prepare(item, self.timing, window=window, hop=hop, index=index, sampling_rate=sampling_rate) as again:
                return refine_result(result, answers, again.source.read,
                                     lambda clips: self.infer(self.features(clips))[0], window=window, hop=hop,
                                     batch_size=self.batch_size)
        except Exception as exc:  # noqa: BLE001 - any decoder failure: keep what the first pass found
            logger.warning("%s: the finer pass failed, first-pass events kept: %s", result.source, exc)
            return result

    def run(
        self, inputs: Iterable[AudioInput], *, window: float, hop: float, pooling: str = "mean",
        sampling_rate: int | None = None, strict: bool = False, progress: Callable[[float], Any] | None = None,
        answers: AnswerOptions | None = None, batch_size: int | None = None,
    ) -> Iterator[ClipResult]:
        """A `ClipResult` per input, in order, as soon as it is complete; a bad input gives a result with
        `error` set and the others go on. `strict`: an input with a warning (cut short) is an error too.
        `progress(seconds)` is called after each model batch with the seconds of audio it completed; a
        `progress` with a `plan` method is also given each input's `WindowPlan` as the input is opened.
        `answers`: the class selection and events (`prepare.assemble`); its names are checked against the
        model's labels before any input is opened (`ConfigError`). `batch_size`: this call's windows per model
        call (None: the runner's; the scores are the same, only speed and memory change)."""
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
            raise UsageError(f"batch_size must be at least 1, got {batch_size!r}")
        built = answers.build(self.labels) if answers is not None and answers.active else None
        check_window_and_hop(self.timing, window, hop)
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        items = list(inputs)
        events = produce_batches(items, self.features, self.timing, window=window, hop=hop,
                                 batch_size=batch_size or self.batch_size, sampling_rate=sampling_rate, strict=strict)
        assembler = ResultAssembler(self.labels, pooling, built)
        done = 0  # results come out in input order, one per input
        for event in in_background(events, self.threads):
            if isinstance(event, WindowPlan):
                assembler.plan(event)
                if hasattr(progress, "plan"):  # e.g. a bar that shows a total once every input is open
                    progress.plan(event)
            elif isinstance(event, InputFailure):
                assembler.fail(event)
            else:
                seconds = assembler.add(event.keys, *self.infer(event.features))
                if progress is not None:
                    progress(seconds)
            for result in assembler.ready():
                yield self.refine(result, items[done], built, window, hop, sampling_rate, done)
                done += 1


def in_background(events: Iterator[Event], threads: ThreadBudget, depth: int = 4) -> Iterator[Event]:
    """Run the `events` generator in a thread (with the feature-stage thread budget), `depth` events ahead.

    Closing the returned iterator stops the thread; an exception in the thread is raised here.
    """
    channel: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                channel.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            threads.enter_feature_stage()
            try:
                for event in events:
                    if not put(event):
                        return
            finally:
                events.close()  # closes the source being read when the consumer stops early
            put(done)
        except BaseException as exc:  # surface it in the consumer, not as a silent thread death
            put(exc)

    producer = threading.Thread(target=produce, name="ast-audio-features", daemon=True)
    producer.start()
    try:
        while (item := channel.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()
