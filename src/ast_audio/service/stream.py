"""Live streams over a WebSocket (`/v1/stream`): audio in as it plays, the records `ast-audio listen` prints out.

One connection is one `LiveStream`. Its audio messages go to a decoder thread (raw PCM framed by
`inference.stream.PcmFrames`, or a container decoded by PyAV through `container_chunks` reading the messages as
a file), which turns them into windows with the code `listen` runs (`windows_from_chunks`: `MonoResampler`,
`StreamWindows`, the file's last-window rule at the end). Windows ready together are featurised in the service's
decoding pool and scored through the service's `DynamicBatcher`, so streams and uploads share model calls; their
records come from `window_records` and their events from `LiveEvents`, as listen's do.

A live stream cannot wait: at most `2 x max_batch` windows wait for the model; a window that finds no room is
dropped whole and counted (`realtime`, the default; `realtime=false` makes the reader wait instead, as
`listen --no-realtime` does, and the client with it). Memory per stream is bounded however long it runs: the
ring buffer, those windows, a few audio messages.

Errors end a stream with {"error": MESSAGE, "status": HTTP_STATUS} and a close code chosen by the error's type
(`close_code`, one table); the service's HTTP status table gives the message and the status
(`service.errors.rejection`), so a client tells a refused key (401) from other policy closes (all 1008) by the
status, not the words. The protocol is
described in the README's "Serving" section.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ast_audio.errors import AudioError, ConfigError
from ast_audio.inference.stream import (PCM_FORMATS, LiveEvents, PcmFrames, StreamWindow, StreamWindows,
                                        container_chunks, wall_time, window_records, windows_from_chunks)
from ast_audio.service.errors import (HTTPRejection, IdleStreamError, MessageTooBigError, QueueFullError,
                                      RequestLimitError, ShuttingDownError, StreamPolicyError, UnknownMessageError,
                                      rejection)

if TYPE_CHECKING:
    from ast_audio.service.app import Service

logger = logging.getLogger(__name__)

STREAM_FORMATS = (*PCM_FORMATS, "container")
DROP_NOTICE_S = 1.0  # at most one {"dropped": ...} warning this often (the summary counts them all)
INCOMING_MESSAGES = 4  # audio pieces waiting for the decoder thread; beyond, the socket is not read
GATHER_BYTES = 2**16  # small audio messages are joined into pieces up to this size while the decoder is busy
GATHER_WAIT_S = 0.02  # a piece gathered goes to the decoder when no message came for this long
STOP_WAIT_S = 5.0  # how long a server's stop waits for its streams to send their error and close


class ClientGone(Exception):
    """The client closed the connection: nothing more can be sent."""


# Close codes (RFC 6455, 7.4.1) by error type; the most specific class in an error's MRO decides.
CLOSE_CODES: dict[type[BaseException], int] = {
    MessageTooBigError: 1009,  # message too big
    StreamPolicyError: 1008,  # policy: too many streams, idle
    UnknownMessageError: 1003,  # unsupported data
    AudioError: 1003,  # audio that cannot be decoded or used (junk bytes, NaN samples, under one frame)
    ConfigError: 1008,  # a query value out of range, a label the model lacks
    RequestLimitError: 1008,
    ShuttingDownError: 1013,  # try again later
    QueueFullError: 1013,
    BaseException: 1011,  # unexpected: logged with its traceback
}


def close_code(error: BaseException) -> int:
    """The close code for `error`: `CLOSE_CODES` by type; an `HTTPRejection` by its status (415: 1003, 503:
    1013, other 5xx: 1011, 4xx: 1008, as a bad query or a wrong API key)."""
    if isinstance(error, HTTPRejection):
        return {415: 1003, 503: 1013}.get(error.status, 1011 if error.status >= 500 else 1008)
    return CLOSE_CODES[next(cls for cls in type(error).__mro__ if cls in CLOSE_CODES)]


async def refuse(websocket: WebSocket, error: BaseException) -> int:
    """Send {"error": MESSAGE, "status": HTTP_STATUS} (the status /v1/classify would answer, by
    `service.errors.STATUSES`: 401 a missing or wrong key, 422 a bad value, 429 too many streams, ...) and close with `close_code(error)`, accepting the connection first if it was not
    (a browser cannot read an HTTP refusal of a WebSocket); a client already gone is let go. The code."""
    code = close_code(error)
    answer = error if isinstance(error, HTTPRejection) else rejection(error)
    if code == 1011:
        logger.error("/v1/stream failed", exc_info=error)
    try:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept()
        if websocket.application_state == WebSocketState.CONNECTED:
            await websocket.send_text(json.dumps({"error": answer.message, "status": answer.status}))
            await websocket.close(code)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass  # the client left first
    return code


async def first_message_key(websocket: WebSocket, timeout: float) -> str | None:
    """The API key a browser (which cannot set a WebSocket's headers) sends as the first message, the text
    {"api_key": KEY}; the connection is accepted to read it. None when no such message comes within `timeout` s."""
    await websocket.accept()
    try:
        message = await asyncio.wait_for(websocket.receive(), timeout)
    except asyncio.TimeoutError:
        return None
    try:
        value = json.loads(message.get("text") or "null")
    except ValueError:
        return None
    key = value.get("api_key") if isinstance(value, dict) else None
    return key if isinstance(key, str) else None


@dataclass(frozen=True)
class StreamRequest:
    """What a connection asked for, checked: `sample_format` one of `STREAM_FORMATS`; `rate` (Hz) and
    `channels` of PCM; `window`, `hop` in seconds; `top_k` labels per window; `realtime`: drop windows when the
    model falls behind (else the reader waits); `answers`: the built `Answers` or None; `events`: find events."""

    sample_format: str
    rate: int | None
    channels: int
    window: float
    hop: float
    top_k: int = 5
    realtime: bool = True
    answers: Any = None
    events: bool = False


class StreamRegistry:
    """The open streams of a service, within `max_streams` and `max_per_client` (by client address)."""

    def __init__(self, max_streams: int, max_per_client: int) -> None:
        self.max_streams, self.max_per_client = max_streams, max_per_client
        self._open: dict[LiveStream, str] = {}

    @property
    def active(self) -> int:
        return len(self._open)

    def enter(self, stream: LiveStream, client: str) -> None:
        """Count `stream` in; `StreamPolicyError` naming the limit when it would pass one (call on the loop)."""
        if len(self._open) >= self.max_streams:
            raise StreamPolicyError(f"this server has {len(self._open)} streams open, its limit (--max-streams); "
                                    "try again later")
        if sum(address == client for address in self._open.values()) >= self.max_per_client:
            raise StreamPolicyError(f"too many streams from {client}: this server takes {self.max_per_client} per "
                                    "client (--max-streams-per-client)")
        self._open[stream] = client

    def leave(self, stream: LiveStream) -> None:
        self._open.pop(stream, None)

    async def stop_all(self, error: BaseException, timeout: float = STOP_WAIT_S) -> None:
        """End every open stream with `error` (its message and close code) and wait at most `timeout` s for them."""
        streams = list(self._open)
        for stream in streams:
            stream.stop(error)
        if streams:
            await asyncio.wait([asyncio.ensure_future(stream.closed.wait()) for stream in streams], timeout=timeout)


class MessageReader:
    """A file to read (`read` only: a stream cannot seek) over byte strings as they arrive, for PyAV."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces, self._piece, self._offset = pieces, memoryview(b""), 0

    def read(self, size: int = -1) -> bytes:
        while self._offset >= len(self._piece):
            piece = next(self._pieces, None)
            if piece is None:
                return b""
            self._piece, self._offset = memoryview(piece), 0
        stop = len(self._piece) if size is None or size < 0 else self._offset + size
        data = self._piece[self._offset : stop].tobytes()
        self._offset += len(data)
        return data


async def serve_stream(service: Service, websocket: WebSocket, request: StreamRequest) -> None:
    """Serve one `/v1/stream` connection (its key and query already checked) to its end, within the service's
    stream limits; every way it ends is counted in the service's metrics."""
    stream = LiveStream(service, websocket, request)
    client = websocket.client.host if websocket.client else "unknown"
    try:
        if service.stopping:
            raise ShuttingDownError("the server is stopping")
        service.streams.enter(stream, client)
    except (StreamPolicyError, ShuttingDownError) as error:
        service.metrics.streams.labels(end=str(await refuse(websocket, error))).inc()
        return
    how = "1011"
    try:
        if websocket.application_state == WebSocketState.CONNECTING:
            await websocket.accept()
        how = await stream.run()
    finally:
        service.streams.leave(stream)
        service.metrics.streams.labels(end=how).inc()


class LiveStream:
    """One connection's stream: a decoder thread, a receiving task and a scoring task (see the module's text).

    `windows`: scored so far; `dropped`: dropped whole because the model fell behind; `closed`: set once it ended.
    """

    def __init__(self, service: Service, websocket: WebSocket, request: StreamRequest) -> None:
        self.service, self.websocket, self.request = service, websocket, request
        timing = service.runner.timing
        self.planner = StreamWindows(timing.sampling_rate, request.window, request.hop, timing.frame_samples)
        self.events = LiveEvents(request.answers, request.hop) if request.events else None
        self.windows = self.dropped = 0
        self.max_waiting = 2 * service.settings.max_batch  # windows waiting for the model at most
        self.closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._stopped: asyncio.Future = self._loop.create_future()  # `stop`'s error
        self._waiting: collections.deque[StreamWindow] = collections.deque()
        self._lock = threading.Condition()
        self._incoming: queue.Queue[bytes | None] = queue.Queue(maxsize=INCOMING_MESSAGES)
        self._halt = threading.Event()  # the decoder thread stops
        self._decoded = False  # the decoder thread has ended (under the lock)
        self._decode_error: BaseException | None = None
        self._wake = asyncio.Event()  # windows arrived, or the decoder ended
        self._noticed = (0, -DROP_NOTICE_S)  # drops reported so far, and when

    def stop(self, error: BaseException) -> None:
        """End the stream with `error` (the server is stopping); call on the loop."""
        if not self._stopped.done():
            self._stopped.set_exception(error)

    async def run(self) -> str:
        """Serve the connection to its end: the close code sent ("1000" after the summary), or "disconnected"."""
        decoder = threading.Thread(target=self._decode, name="ast-audio-stream", daemon=True)
        decoder.start()
        receiver, scorer = asyncio.ensure_future(self._receive()), asyncio.ensure_future(self._score_all())
        try:
            await asyncio.wait({receiver, scorer, self._stopped}, return_when=asyncio.FIRST_COMPLETED)
            for task in (self._stopped, receiver, scorer):  # the stop first, then the client's doing
                if task.done() and task.cancelled():  # its pool shut down under it: the server's abort
                    raise ShuttingDownError("the server stopped before this stream ended")
                if task.done() and task.exception() is not None:
                    raise task.exception()
            try:
                await self.websocket.close(1000)
            except (WebSocketDisconnect, OSError, RuntimeError):
                return "disconnected"  # it left just after the summary
            return "1000"
        except (ClientGone, WebSocketDisconnect):
            return "disconnected"
        except Exception as error:  # noqa: BLE001 - every failure ends this stream alone, with its message
            return str(await refuse(self.websocket, error))
        finally:
            self._halt_decoder()
            for task in (receiver, scorer):
                task.cancel()
            await asyncio.gather(receiver, scorer, return_exceptions=True)
            if self._stopped.done():
                self._stopped.exception()  # retrieved: no "never retrieved" warning
            self.closed.set()

    # ------------------------------------------------------------------------------- receiving (the loop)
    async def _receive(self) -> None:
        """Audio messages to the decoder until {"type": "end"}, then watch for the client leaving. Raises
        `ClientGone`, `StreamPolicyError` (no audio for the idle timeout), `MessageTooBigError`,
        `UnknownMessageError`.

        Small messages are gathered (`_gather`) while the decoder thread is busy, so a client sending a sample
        per message costs the decoder a piece per turn rather than per message, and the socket is read on."""
        settings = self.service.settings
        idle, limit = settings.stream_idle_timeout_s, int(settings.max_stream_message_mb * 2**20)
        last_audio, ended, pending = time.monotonic(), False, bytearray()
        while True:
            timeout = None if ended else max(0.0, last_audio + idle - time.monotonic())
            if pending:
                timeout = GATHER_WAIT_S if timeout is None else min(timeout, GATHER_WAIT_S)
            try:
                message = await asyncio.wait_for(self.websocket.receive(), timeout)
            except asyncio.TimeoutError:
                if pending:  # nothing more came: what was gathered goes on, waiting for room if need be
                    last_audio += await self._put(bytes(pending))
                    pending.clear()
                    continue
                raise IdleStreamError(f"no audio for {idle:g} s: this server ends a stream idle that long "
                                      "(--stream-idle-timeout-s)") from None
            if message["type"] == "websocket.disconnect":
                raise ClientGone
            data, text = message.get("bytes"), message.get("text")
            if data is not None and not ended:
                if len(data) > limit:
                    raise MessageTooBigError(f"a message of {len(data)} bytes is larger than this server's limit of "
                                             f"{limit} bytes (--max-stream-message-mb)")
                if data:
                    pending += data
                    last_audio = time.monotonic()
                    if not self._gather(len(pending)):
                        last_audio += await self._put(bytes(pending))
                        pending.clear()
            elif text is not None and _is_end(text):
                if not ended:
                    ended = True
                    if pending:
                        await self._put(bytes(pending))
                        pending.clear()
                    await self._put(None)

    def _gather(self, pending: int) -> bool:
        """True to keep `pending` bytes for more: the decoder thread has a piece waiting still and they are
        under `GATHER_BYTES` (an idle decoder takes what there is at once: no latency added)."""
        return pending < GATHER_BYTES and not self._incoming.empty()

    async def _put(self, data: bytes | None) -> float:
        """Hand a piece to the decoder thread, waiting (the socket unread meanwhile) while it is behind; the
        seconds it waited, which the idle timeout does not count (the server, not the client, was slow)."""
        started = time.monotonic()
        while True:
            try:
                self._incoming.put_nowait(data)
                return time.monotonic() - started
            except queue.Full:
                await asyncio.sleep(0.01)

    # ------------------------------------------------------------------------------- decoding (a thread)
    def _decode(self) -> None:
        try:
            for item, droppable in windows_from_chunks(self._chunks(), self.planner, stopped=self._halt.is_set):
                if isinstance(item, StreamWindow) and not self._hand_over(item, droppable):
                    break
        except BaseException as exc:  # noqa: BLE001 - reported by the scoring task
            self._decode_error = exc
        finally:
            with self._lock:
                self._decoded = True
            self._wake_soon()

    def _chunks(self) -> Iterator[tuple[np.ndarray, int]]:
        """(frames, channels) float32 samples and their rate, as the messages arrive."""
        if self.request.sample_format == "container":
            yield from container_chunks(MessageReader(self._messages()), "the stream")
            return
        pcm = PcmFrames(self.request.sample_format, self.request.channels)
        for data in self._messages():
            samples = pcm(data)
            if len(samples):
                yield samples, self.request.rate

    def _messages(self) -> Iterator[bytes]:
        while not self._halt.is_set():
            data = self._incoming.get()
            if data is None:  # the audio is over, or the stream stops
                return
            yield data

    def _hand_over(self, window: StreamWindow, droppable: bool) -> bool:
        """Queue `window` for the model: dropped (and counted) when the queue is full and the stream is live,
        else wait for room. False when the stream stops."""
        with self._lock:
            while len(self._waiting) >= self.max_waiting and not self._halt.is_set():
                if droppable and self.request.realtime:
                    self.dropped += 1
                    self.service.metrics.dropped.inc()
                    return True
                self._lock.wait(0.1)
            if self._halt.is_set():
                return False
            self._waiting.append(window)
        self._wake_soon()
        return True

    def _wake_soon(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the loop has closed: the server is gone
            pass

    def _halt_decoder(self) -> None:
        """Stop the decoder thread wherever it waits (for a message, for room); what it holds is let go, the
        windows still waiting counted as dropped (as an upload's when its client leaves)."""
        self._halt.set()
        with self._lock:
            left = len(self._waiting)
            self._waiting.clear()
            self._lock.notify_all()
        if left:
            self.service.metrics.dropped.inc(left)
        while True:
            try:
                self._incoming.put_nowait(None)
                return
            except queue.Full:
                try:
                    self._incoming.get_nowait()
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------------------- scoring (the loop)
    async def _score_all(self) -> None:
        """Score the windows as they come, a batch at a time; at the end, the events left and the summary.
        Raises what the decoder raised (after the windows read before it), or what scoring raised."""
        while True:
            self._wake.clear()
            batch, finished = self._take()
            if batch:
                await self._score(batch)
                await self._notice_drops()
            elif finished:
                break
            else:
                await self._wake.wait()
        if self._decode_error is not None:
            raise self._decode_error
        for event in self.events.close() if self.events is not None else ():
            await self._send({"event": event.to_dict()})
        await self._send({"summary": {"windows": self.windows, "dropped": self.dropped,
                                      "seconds": self.planner.seconds}}, stamped=False)

    def _take(self) -> tuple[list[StreamWindow], bool]:
        """Up to a batch of the waiting windows, and True once the decoder has ended and none are left."""
        with self._lock:
            batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), self.service.settings.max_batch))]
            self._lock.notify_all()
            return batch, self._decoded and not self._waiting

    async def _score(self, batch: list[StreamWindow]) -> None:
        """Featurise `batch` in the decoding pool, score it through the batcher, send its records and events."""
        service = self.service
        features = await self._loop.run_in_executor(service.pool, service.runner.features,
                                                    [window.samples for window in batch])
        ticket = service.batcher.ticket()
        try:
            service.batcher.submit(ticket, len(batch))
        except QueueFullError:  # the server is busy: a live stream drops rather than waits
            with self._lock:
                self.dropped += len(batch)
            service.metrics.dropped.inc(len(batch))
            return
        try:
            service.batcher.feed(ticket, features)
            await ticket.future
        finally:
            service.batcher.cancel(ticket)  # the client left or the stream stopped: its windows are dropped
        records, selected = window_records(batch, np.stack(ticket.scores), service.runner.labels,
                                           self.request.answers, self.request.top_k)
        self.windows += len(batch)
        service.metrics.stream_windows.inc(len(batch))
        for record in records:
            await self._send(record)
        if self.events is not None:
            for event in self.events.add([(window.start, window.end) for window in batch], selected):
                await self._send({"event": event.to_dict()})

    async def _notice_drops(self) -> None:
        """A {"dropped": N, "warning": ...} message when windows were dropped since the last one, at most one
        each `DROP_NOTICE_S`."""
        reported, at = self._noticed
        if self.dropped > reported and time.monotonic() - at >= DROP_NOTICE_S:
            self._noticed = (self.dropped, time.monotonic())
            await self._send({"dropped": self.dropped, "warning": f"the model falls behind the stream: "
                                                                  f"{self.dropped} window(s) dropped so far"},
                             stamped=False)

    async def _send(self, record: dict[str, Any], stamped: bool = True) -> None:
        """Send one record (with its wall-clock time when `stamped`); `ClientGone` when the client has left."""
        try:
            await self.websocket.send_text(json.dumps({**record, "wall_time": wall_time()} if stamped else record))
        except (WebSocketDisconnect, OSError, RuntimeError):
            raise ClientGone from None


def _is_end(text: str) -> bool:
    """True for {"type": "end"}; False for {"api_key": ...} (a browser sends it first; harmless later);
    `UnknownMessageError` for anything else."""
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if isinstance(value, dict) and value.get("type") == "end":
        return True
    if isinstance(value, dict) and set(value) == {"api_key"}:
        return False
    raise UnknownMessageError(f"unknown message {text[:80]!r}: expected binary audio or the text "
                              '{"type": "end"}')
