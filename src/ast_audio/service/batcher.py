"""Dynamic batching: windows from concurrent requests share model calls.

Requests put their windows' features on one bounded queue; a single model thread takes up to `max_batch`
of them, waiting at most `max_wait_ms` after the first for more, runs them as one batch through the
inference core, and hands each window its scores and embedding. A request whose client went away marks
its windows cancelled, and the model thread drops them unscored.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from ast_audio.service.errors import QueueFullError

__all__ = ["DynamicBatcher", "QueueFullError", "Ticket"]


@dataclasses.dataclass
class Ticket:
    """One request's windows in the queue: their results arrive in `future`, in order."""

    features: torch.Tensor  # (windows, frames, mel bins)
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    cancelled: bool = False
    claimed: int = 0  # windows taken into batches so far
    scores: list[np.ndarray] = dataclasses.field(default_factory=list)
    embeddings: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.scores)


class DynamicBatcher:
    """Batches windows across requests for `infer(features) -> (scores, embeddings)` on one model thread."""

    def __init__(self, infer: Callable, *, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000
        self.max_queue, self.on_batch = max_queue, on_batch
        self._tickets: collections.deque[Ticket] = collections.deque()
        self._queued = 0  # windows waiting
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ast-audio-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the windows already queued, then stop the model thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, features: torch.Tensor) -> Ticket:
        """Queue a request's windows; raises `QueueFullError` when they do not fit."""
        loop = asyncio.get_running_loop()
        ticket = Ticket(features, loop.create_future(), loop)
        with self._lock:
            if self._queued + len(features) > self.max_queue and self._queued > 0:
                raise QueueFullError(f"{self._queued} windows are queued (limit {self.max_queue})")
            self._tickets.append(ticket)
            self._queued += len(features)
            self._lock.notify_all()
        return ticket

    def cancel(self, ticket: Ticket) -> None:
        """Drop a request's windows that are not in a batch yet (its client went away)."""
        with self._lock:
            if ticket.cancelled:
                return
            ticket.cancelled = True
            if ticket in self._tickets:
                self._tickets.remove(ticket)
                self._queued -= len(ticket.features) - ticket.claimed

    # ------------------------------------------------------------------------------- model thread
    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            rows = torch.cat([ticket.features[start:stop] for ticket, start, stop in batch])
            try:
                scores, embeddings = self.infer(rows)
            except Exception as exc:  # a failed batch fails its requests, not the server
                for ticket, _, _ in batch:
                    ticket.loop.call_soon_threadsafe(_set_exception, ticket.future, exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(rows))
            offset = 0
            for ticket, start, stop in batch:
                count = stop - start
                ticket.scores.extend(scores[offset : offset + count])
                ticket.embeddings.extend(embeddings[offset : offset + count])
                offset += count
                if ticket.done == len(ticket.features):
                    ticket.loop.call_soon_threadsafe(_set_result, ticket.future, ticket)

    def _take(self) -> list[tuple[Ticket, int, int]] | None:
        """Up to max_batch windows (ticket, start, stop), waiting at most max_wait after the first; None to stop."""
        with self._lock:
            while not self._queued and not self._stopping:
                self._lock.wait()
            if not self._queued:
                return None
            deadline = time.monotonic() + self.max_wait
            while self._queued < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            return self._slice()

    def _slice(self) -> list[tuple[Ticket, int, int]]:
        batch, room = [], self.max_batch
        while self._tickets and room:
            ticket = self._tickets[0]
            start = ticket.claimed
            stop = min(len(ticket.features), start + room)
            batch.append((ticket, start, stop))
            ticket.claimed = stop
            room -= stop - start
            self._queued -= stop - start
            if stop == len(ticket.features):
                self._tickets.popleft()
        return batch


def _set_result(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
