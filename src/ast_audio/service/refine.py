"""The finer pass of event detection for an upload (/v1/classify?refine=N), scored through the dynamic batcher.

It runs the engine's `inference.finer.refine_result`, as `classify --refine` does (`InferenceRunner.refine`):
the upload is opened again (`inference.prepare.prepare`) and its source reads the extra windows. Those windows
are featurised in the decoding pool and scored by the service's `DynamicBatcher`, so they share model calls
with other requests, and the queue limit, the server's stop and a client leaving apply to them as to an
upload's windows. They count against the request's window limit (`--max-windows-per-request`) with the first
pass's: a batch of extra windows that would pass it is refused (`RequestLimitError`) before it is queued.

`refine_result` is synchronous and calls its score function once per batch of extra windows, so it runs in a
pool thread (`refine_upload`). Each batch becomes a ticket: made on the event loop (the batcher's futures live
there) and handed back through `asyncio.run_coroutine_threadsafe`; queued and fed from the pool thread, as
`Service.prepare` does; waited for through the loop again. `BatchedScorer.stop` (on the loop: the client left,
the request ended) drops the batch in flight and wakes the thread, which stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import torch

from ast_audio.answers.options import Answers
from ast_audio.features.timing import Timing
from ast_audio.inference.finer import refine_result
from ast_audio.inference.prepare import prepare
from ast_audio.inference.results import ClipResult
from ast_audio.service.batcher import DynamicBatcher, Ticket
from ast_audio.service.errors import QueueFullError, RequestLimitError, ShuttingDownError

__all__ = ["BatchedScorer", "RefineStopped", "refine_upload"]

logger = logging.getLogger(__name__)

WAKE_S = 0.2  # how often a pool thread waiting on the loop looks whether its pass was stopped


class RefineStopped(ShuttingDownError):
    """The request ended while its finer pass ran: its client left, or the server stopped it (then 503)."""


class BatchedScorer:
    """`score(clips)` for `refine_result`, called from a pool thread: the model's scores (len(clips), model
    classes) of mono sample arrays at the model's rate, through `batcher`; `featurise(clips)` gives their
    features (len(clips), frames, mel bins). Upload `name` had `first_pass` windows scored; with the extra
    ones it may have `limit` (`--max-windows-per-request`). `extra` counts the windows queued so far. Raises
    `RequestLimitError` (naming the upload, the limit and its option) for a batch that would pass the limit,
    `QueueFullError` and `ShuttingDownError` as `DynamicBatcher.submit` does, what a failed model batch raised,
    and `RefineStopped` once `stop` was called."""

    def __init__(self, batcher: DynamicBatcher, featurise: Callable[[list[np.ndarray]], torch.Tensor],
                 loop: asyncio.AbstractEventLoop, *, name: str, first_pass: int, limit: int) -> None:
        self.batcher, self.featurise, self.loop = batcher, featurise, loop
        self.name, self.first_pass, self.limit = name, first_pass, limit
        self.extra = 0
        self._lock = threading.Lock()
        self._ticket: Ticket | None = None
        self._stopped = False

    def __call__(self, clips: list[np.ndarray]) -> np.ndarray:
        if self.first_pass + self.extra + len(clips) > self.limit:
            raise RequestLimitError(
                f"{self.name}: the finer pass (refine) needs more than {self.limit - self.first_pass} windows "
                f"beside the first pass's {self.first_pass}, over this server's limit of {self.limit} per request "
                "(--max-windows-per-request): fewer rounds, fewer events (a higher threshold) or a larger hop fit")
        features = self.featurise(clips)
        ticket = self._on_loop(_new_ticket(self.batcher))
        with self._lock:
            if self._stopped:
                raise RefineStopped("the request ended")
            self._ticket = ticket
        if not self.batcher.submit(ticket, len(clips)) or not self.batcher.feed(ticket, features):
            raise RefineStopped("the request ended")
        self.extra += len(clips)
        self._on_loop(_settled(ticket.future))
        return np.stack(ticket.scores)

    def stop(self) -> None:
        """The request ended (call on the loop): the batch in flight has its windows not yet scored dropped
        (counted by the batcher) and the pool thread stops at its next step. Harmless once the pass is done."""
        with self._lock:
            self._stopped = True
            ticket = self._ticket
        if ticket is not None:
            self.batcher.cancel(ticket)
            if not ticket.future.done():
                ticket.future.cancel()

    def _on_loop(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run `coroutine` on the loop and wait for its value here, looking every WAKE_S whether `stop` was
        called (so a pool thread never waits on a loop that waits for the pool)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        while True:
            try:
                return future.result(timeout=WAKE_S)
            except concurrent.futures.TimeoutError:
                if self._stopped:
                    future.cancel()
                    raise RefineStopped("the request ended") from None
            except concurrent.futures.CancelledError:
                raise RefineStopped("the request ended") from None


async def _new_ticket(batcher: DynamicBatcher) -> Ticket:
    return batcher.ticket()


async def _settled(future: asyncio.Future) -> None:
    await future


# Errors that answer the request as they would have in its first pass: a limit (422), a busy queue (503, retry),
# the request ending. Any other error is the finer pass failing: the first pass's events stay, as the runner does.
ANSWERED = (RequestLimitError, QueueFullError, RefineStopped)


def refine_upload(result: ClipResult, answers: Answers, data: bytes, timing: Timing, scorer: BatchedScorer, *,
                  window: float, hop: float, batch_size: int) -> tuple[ClipResult, BaseException | None]:
    """Run in a pool thread: (`result` with its events refined, None), or for an error that answers the
    request (`ANSWERED`: a limit, a full queue, the request ended) (`result`, that error); never raises. Any
    other failure (the upload cannot be read again, a model batch failed, the server is stopping) keeps the
    first pass's events with a warning logged, as `InferenceRunner.refine` does. `window`, `hop`: the first
    pass's, seconds; `batch_size`: extra windows per ticket."""
    try:
        with prepare(data, timing, window=window, hop=hop, name=result.source) as again:
            return refine_result(result, answers, again.source.read, scorer, window=window, hop=hop,
                                 batch_size=batch_size), None
    except ANSWERED as exc:
        return result, exc
    except ShuttingDownError:  # a started request finishes at a stop, with what it has
        logger.warning("%s: the server is stopping: first-pass events kept, not refined", result.source)
        return result, None
    except Exception as exc:  # noqa: BLE001 - any decoder or batch failure: keep what the first pass found
        logger.warning("%s: the finer pass failed, first-pass events kept: %s", result.source, exc)
        return result, None
