"""Running the app under uvicorn with the service's stop.

SIGTERM (or a first Ctrl-C) stops accepting connections and closes the service (`Service.close`): requests none
of whose windows has reached the model yet, and any that still arrive, get 503 with Retry-After at once; the
requests the model has started on finish; live streams (/v1/stream) get their error and close 1013. Once `grace_s` has passed, the ones still running get 503 too
(`Service.abort`). A second SIGTERM or Ctrl-C aborts at once. Either way the server then exits.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import uvicorn

from ast_audio.service.app import Service

try:  # builds on uvicorn's sans-I/O WebSocket protocol (uvicorn 0.35+); an older or changed uvicorn: its own
    from ast_audio.service.websocket_protocol import SlicedWebSocketProtocol as WEBSOCKET_PROTOCOL
except ImportError:
    WEBSOCKET_PROTOCOL = "auto"

GRACE_BACKSTOP_S = 5.0  # uvicorn cancels what is left this long after the service's grace


class GracefulServer(uvicorn.Server):
    """`uvicorn.Server` that closes `service` when a stop begins and aborts it after `grace_s` seconds."""

    def __init__(self, config: uvicorn.Config, service: Service, grace_s: float) -> None:
        config.timeout_graceful_shutdown = int(grace_s + GRACE_BACKSTOP_S)
        super().__init__(config)
        self.service, self.grace_s = service, grace_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit and sig == signal.SIGTERM:  # a second SIGTERM forces, as a second Ctrl-C does
            self.force_exit = True
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.service.close()
        timer = asyncio.get_running_loop().call_later(self.grace_s, self.service.abort)
        forcing = asyncio.ensure_future(self._abort_when_forced())
        try:
            await self.service.end_streams()  # their error and close 1013 before uvicorn closes the sockets (1012)
            await super().shutdown(sockets)
        finally:
            timer.cancel()
            forcing.cancel()
            if self.force_exit:  # uvicorn skips the app's shutdown then, leaving its lifespan task to be cancelled
                self.service.abort()  # (a CancelledError traceback): run it here, after the abort it is quick
                await self.lifespan.shutdown()

    async def _abort_when_forced(self) -> None:
        while not self.force_exit:
            await asyncio.sleep(0.05)
        self.service.abort()


def serve(app, listening: socket.socket, grace_s: float) -> bool:
    """Serve `app` (from `service.app.create_app`) on the bound socket `listening` until SIGTERM or Ctrl-C;
    True once it had started. SIGTERM and SIGINT end it quietly: the handlers uvicorn restores and signals
    again on its way out are no-ops here, so a graceful stop returns normally."""
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: None)
    # uvicorn's own limit on a WebSocket message, above the service's (which answers with a message first)
    frame_limit = max(16 * 2**20, int(2 * app.state.service.settings.max_stream_message_mb * 2**20))
    config = uvicorn.Config(app, log_level="warning", ws_max_size=frame_limit, ws=WEBSOCKET_PROTOCOL)
    server = GracefulServer(config, app.state.service, grace_s)
    server.run(sockets=[listening])
    return server.started
