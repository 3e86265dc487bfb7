"""uvicorn's WebSocket protocol, parsing what one read of the socket brings a slice at a time.

uvicorn's default protocol (`websockets-sansio`) parses every frame of a read (up to 256 KiB, asyncio's read
size) in one callback: a client sending a few bytes per message puts ~26000 frames in a read, and the event loop,
which every request and stream shares, stops for 0.5-2 s each read (a /healthz p95 of 1.2 s during such a flood;
AMD EPYC, shared). This one hands the parser `SLICE_BYTES` at a time, one slice per turn of the loop, the socket
not read meanwhile (so what waits is at most one read), and otherwise is uvicorn's: the frames, their order, the
flow control and the keepalive are its. A keepalive ping left unanswered (uvicorn then closes with 1011) is logged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

logger = logging.getLogger(__name__)

SLICE_BYTES = 8192  # parsed per turn of the event loop: ~800 frames of a few bytes, about a millisecond's work


class _GatedTransport:
    """The socket's transport as the protocol sees it: its `resume_reading` waits while a read is still being
    parsed (uvicorn resumes reading as soon as the app has taken its messages). Everything else is the transport's."""

    def __init__(self, transport: asyncio.Transport, protocol: SlicedWebSocketProtocol) -> None:
        self._transport, self._protocol = transport, protocol
        self.reading_wanted = True

    def pause_reading(self) -> None:
        self.reading_wanted = False
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self.reading_wanted = True
        if not self._protocol.backlog:
            self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class SlicedWebSocketProtocol(WebSocketsSansIOProtocol):
    """`WebSocketsSansIOProtocol` whose reads are parsed `SLICE_BYTES` per turn of the loop (the module's text)."""

    backlog = b""  # the part of the last read not parsed yet

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._real_transport = transport
        super().connection_made(_GatedTransport(transport, self))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        if self.backlog:  # a read that came before the reading paused: after the rest, in order
            self.backlog += data
            return
        self._parse(data)

    def _parse(self, data: bytes) -> None:
        piece, self.backlog = data[:SLICE_BYTES], data[SLICE_BYTES:]
        if self.backlog:
            self._real_transport.pause_reading()
            self.loop.call_soon(self._parse_backlog)
        super().data_received(piece)

    def keepalive_timeout(self) -> None:
        if not self.close_sent and not self._real_transport.is_closing():
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown"
            logger.warning("the WebSocket client %s left the keepalive ping unanswered for %g s (or its socket "
                           "was not read that long): closed with 1011", client, self.ping_timeout)
        super().keepalive_timeout()

    def _parse_backlog(self) -> None:
        data, self.backlog = self.backlog, b""
        if self._real_transport.is_closing():
            return
        self._parse(data)
        if not self.backlog and self.transport.reading_wanted:  # type: ignore[attr-defined]
            self._real_transport.resume_reading()
