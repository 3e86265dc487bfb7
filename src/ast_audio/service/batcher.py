"""Dynamic batching: windows from concurrent requests share model calls.

A request takes a `ticket` (on the event loop); its producer, in the decoding pool, opens the upload, reserves
room for its windows on one bounded queue (`submit`), then featurises them a chunk at a time and hands each
chunk over (`feed`); a producer that is `max_batch`
windows ahead of the model waits, so a request holds at most two batches of features however long its
upload. A single model thread takes up to `max_batch` featurised windows, waiting at most `max_wait_ms` after
the first for more, runs them as one batch through the inference core, and hands each window its scores and
embedding. A request whose client went away is cancelled: its windows are dropped unscored and its producer
stops. Stopping the server (`close`, then `abort` once its grace has run out) turns away requests that have not
started and, last, the ones still running.
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

from ast_audio.service.errors import QueueFullError, ShuttingDownError

__all__ = ["DynamicBatcher", "QueueFullError", "ShuttingDownError", "Ticket"]


@dataclasses.dataclass
class Ticket:
    """One request's windows in the queue: their results arrive in `future`, in order."""

    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    windows: int = 0  # the request's windows in all (known once submitted)
    cancelled: bool = False
    fed: int = 0  # windows featurised and handed over so far
    claimed: int = 0  # windows taken into batches so far
    chunks: collections.deque = dataclasses.field(default_factory=collections.deque)  # fed, not yet claimed
    scores: list[np.ndarray] = dataclasses.field(default_factory=list)
    embeddings: list[np.ndarray] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.scores)

    @property
    def waiting(self) -> int:
        """Windows featurised and waiting for the model (what this request holds in memory)."""
        return self.fed - self.claimed

    def take(self, count: int) -> torch.Tensor:
        """The next `count` (<= waiting) featurised windows, (count, frames, mel bins)."""
        parts, needed = [], count
        while needed:
            chunk = self.chunks.popleft()
            if len(chunk) > needed:
                self.chunks.appendleft(chunk[needed:])
                chunk = chunk[:needed]
            parts.append(chunk)
            needed -= len(chunk)
        self.claimed += count
        return parts[0] if len(parts) == 1 else torch.cat(parts)


class DynamicBatcher:
    """Batches windows across requests for `infer(features) -> (scores, embeddings)` on one model thread."""

    def __init__(self, infer: Callable, *, max_batch: int = 8, max_wait_ms: float = 10.0, max_queue: int = 256,
                 on_batch: Callable[[int], None] | None = None, on_drop: Callable[[int], None] | None = None) -> None:
        self.infer, self.max_batch, self.max_wait = infer, max_batch, max_wait_ms / 1000
        self.max_queue, self.on_batch, self.on_drop = max_queue, on_batch, on_drop
        self._closing: ShuttingDownError | None = None  # set by `close`: no new request is taken
        self._tickets: collections.deque[Ticket] = collections.deque()
        self._queued = 0  # windows submitted and not yet in a batch
        self._ready = 0  # of those, the ones featurised
        self._lock = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ast-audio-model", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Finish the windows already queued (their producers go on feeding them), then stop the model thread."""
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        self._thread.join()

    @property
    def closed(self) -> bool:
        """True once `close` or `abort` was called: no new request is taken."""
        return self._closing is not None

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def ready(self) -> int:
        """Windows featurised and waiting for the model, over all requests."""
        return self._ready

    def ticket(self) -> Ticket:
        """A new request's ticket, its results to arrive in `ticket.future` on the running event loop (call
        from the loop); nothing is queued before `submit`."""
        loop = asyncio.get_running_loop()
        return Ticket(loop.create_future(), loop)

    def submit(self, ticket: Ticket, windows: int) -> bool:
        """Queue `ticket`'s `windows` (fed later with `feed`; any thread); raises `QueueFullError` when they do
        not fit (a request alone in the queue is taken whatever its size), `ShuttingDownError` once `close` was
        called. False if it was cancelled."""
        with self._lock:
            if ticket.cancelled:
                return False
            if self._closing is not None:
                raise self._closing
            if self._queued + windows > self.max_queue and self._queued > 0:
                raise QueueFullError(f"{self._queued} windows are queued (limit {self.max_queue})")
            ticket.windows = windows
            self._tickets.append(ticket)
            self._queued += windows
        return True

    def feed(self, ticket: Ticket, features: torch.Tensor) -> bool:
        """Hand over the next windows' features (windows, frames, mel bins) of `ticket`, first waiting while it
        has `max_batch` or more windows waiting for the model. False when the ticket was cancelled or failed
        (stop producing)."""
        with self._lock:
            while ticket.waiting >= self.max_batch and not ticket.cancelled:
                self._lock.wait()
            if ticket.cancelled:
                return False
            if ticket.fed + len(features) > ticket.windows:
                raise ValueError(f"fed {ticket.fed + len(features)} windows to a ticket of {ticket.windows}")
            ticket.chunks.append(features)
            ticket.fed += len(features)
            self._ready += len(features)
            self._lock.notify_all()
        return True

    def cancel(self, ticket: Ticket) -> int:
        """Drop a request's windows that are not in a batch yet (its client went away); its producer stops. The
        number of windows dropped unscored (also given to `on_drop`)."""
        with self._lock:
            dropped = self._drop(ticket)
        self._dropped(dropped)
        return dropped

    def fail(self, ticket: Ticket, error: BaseException) -> None:
        """The producer could not featurise `ticket`'s windows: drop them and fail the request with `error`."""
        with self._lock:
            self._drop(ticket)
        ticket.loop.call_soon_threadsafe(_set_exception, ticket.future, error)

    def close(self, error: ShuttingDownError) -> int:
        """Stop taking requests: `submit` raises `error` from now on, and the queued requests none of whose
        windows has reached the model yet fail with it at once; the ones already started go on. The number of
        windows dropped unscored (also given to `on_drop`)."""
        with self._lock:
            self._closing = error
            waiting = [ticket for ticket in self._tickets if ticket.claimed == 0]
        return self._turn_away(waiting, error)

    def abort(self, error: ShuttingDownError) -> int:
        """`close`, and fail every request still queued with `error`, started or not (a stop whose grace ran
        out). The number of windows dropped unscored."""
        with self._lock:
            self._closing = error
            queued = list(self._tickets)
        return self._turn_away(queued, error)

    def _turn_away(self, tickets: list[Ticket], error: BaseException) -> int:
        dropped = 0
        with self._lock:
            for ticket in tickets:
                dropped += self._drop(ticket)
        for ticket in tickets:
            ticket.loop.call_soon_threadsafe(_set_exception, ticket.future, error)
        self._dropped(dropped)
        return dropped

    def _dropped(self, windows: int) -> None:
        if windows and self.on_drop is not None:
            self.on_drop(windows)

    def _drop(self, ticket: Ticket) -> int:
        """Take `ticket` off the queue (call under the lock); its windows not yet in a batch, now never scored."""
        if ticket.cancelled:
            return 0
        ticket.cancelled = True
        dropped = 0
        if ticket in self._tickets:
            self._tickets.remove(ticket)
            dropped = ticket.windows - ticket.claimed
            self._queued -= dropped
            self._ready -= ticket.waiting
        ticket.chunks.clear()
        self._lock.notify_all()
        return dropped

    # ------------------------------------------------------------------------------- model thread
    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            rows = torch.cat([features for _, features in batch]) if len(batch) > 1 else batch[0][1]
            try:
                scores, embeddings = self.infer(rows)
            except Exception as exc:  # a failed batch fails its requests, not the server
                for ticket, _ in batch:
                    self.fail(ticket, exc)
                continue
            if self.on_batch is not None:
                self.on_batch(len(rows))
            offset = 0
            for ticket, features in batch:
                count = len(features)
                ticket.scores.extend(scores[offset : offset + count])
                ticket.embeddings.extend(embeddings[offset : offset + count])
                offset += count
                if ticket.done == ticket.windows:
                    ticket.loop.call_soon_threadsafe(_set_result, ticket.future, ticket)

    def _take(self) -> list[tuple[Ticket, torch.Tensor]] | None:
        """Up to max_batch featurised windows (ticket, features), waiting at most max_wait after the first for
        more; None once stopping with nothing queued."""
        with self._lock:
            while not self._ready and not (self._stopping and not self._queued):
                self._lock.wait()
            if not self._ready:
                return None
            deadline = time.monotonic() + self.max_wait
            while self._ready < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._lock.wait(remaining)
            batch = self._slice()
            self._lock.notify_all()  # producers waiting for room
            return batch

    def _slice(self) -> list[tuple[Ticket, torch.Tensor]]:
        batch, room = [], self.max_batch
        for ticket in list(self._tickets):
            if not room:
                break
            count = min(ticket.waiting, room)
            if not count:
                continue  # its producer has not caught up: later requests' windows go first
            batch.append((ticket, ticket.take(count)))
            room -= count
            self._queued -= count
            self._ready -= count
            if ticket.claimed == ticket.windows:
                self._tickets.remove(ticket)
        return batch


def _set_result(future: asyncio.Future, value: object) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)
