"""The service's errors and their HTTP statuses: one table from exception type to status, one rule to apply it.

Callers: `service.app` (its exception handlers), `service.stream` (a live stream's error record and its own errors),
`service.uploads` and `service.batcher` (raise these).
"""

from __future__ import annotations

from ast_audio.errors import ASTAudioError, AudioError, ConfigError, DamagedAudioError, NotAudioError


class HTTPRejection(Exception):
    """A request refused with `status` and a one-line `message` (sent as {"error": message})."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class QueueFullError(ASTAudioError):
    """The queue cannot take a request's windows now; try again shortly."""


class ShuttingDownError(ASTAudioError):
    """The server is stopping (SIGTERM): a request not yet started is turned away; retry (another replica, or
    this one once restarted)."""


class RequestLimitError(ASTAudioError):
    """A request asks more than this server allows (longer audio, more windows): names the limit and its option."""


class StreamPolicyError(ASTAudioError):
    """A live stream refused or ended by the server's policy: too many streams (--max-streams,
    --max-streams-per-client)."""


class IdleStreamError(StreamPolicyError):
    """A live stream sent no audio for --stream-idle-timeout-s."""


class MessageTooBigError(ASTAudioError):
    """A live stream's message larger than the server's limit (--max-stream-message-mb)."""


class UnknownMessageError(ASTAudioError):
    """A live stream's text message that is neither {"type": "end"} nor {"api_key": ...}."""


# The most specific class in an error's MRO decides: NotAudioError is 415 although it is an AudioError (422).
STATUSES: dict[type[BaseException], int] = {
    NotAudioError: 415,  # the upload is not audio any decoder here recognises
    DamagedAudioError: 422,  # audio, but damaged or cut off before anything decodes (an M4A without its moov)
    AudioError: 422,  # audio, but unusable: too short, NaN samples, corrupt
    ConfigError: 422,  # a query value out of range (window, hop)
    RequestLimitError: 422,  # over --max-duration-s or --max-windows-per-request
    IdleStreamError: 408,  # a live stream without audio for too long
    StreamPolicyError: 429,  # too many live streams (the server's, or one client's)
    MessageTooBigError: 413,  # a live stream's message over the limit
    UnknownMessageError: 400,  # a live stream's text message the protocol does not have
    QueueFullError: 503,  # busy: retry shortly
    ShuttingDownError: 503,  # stopping: retry
    ASTAudioError: 500,  # anything else this package raised on purpose
    MemoryError: 500,  # out of memory: answered in JSON like every error, the server stays up
    BaseException: 500,  # a bug: answered in JSON, logged with its traceback
}
RETRY_AFTER_S = 1
RETRYABLE = {QueueFullError: "server busy", ShuttingDownError: "server shutting down"}


def rejection(error: BaseException) -> HTTPRejection:
    """The HTTP answer to `error`, by the STATUSES table (the first class of its MRO listed there)."""
    kind = next(cls for cls in type(error).__mro__ if cls in STATUSES)
    status = STATUSES[kind]
    if kind in RETRYABLE:
        return HTTPRejection(status, f"{RETRYABLE[kind]}: {error}; retry shortly", {"Retry-After": str(RETRY_AFTER_S)})
    if kind is MemoryError:
        return HTTPRejection(status, "the server ran out of memory on this request: a larger hop, a shorter upload "
                                     "or a smaller --max-windows-per-request needs less")
    if not isinstance(error, ASTAudioError):
        return HTTPRejection(status, f"internal error ({type(error).__name__}): see the server's log")
    return HTTPRejection(status, str(error))
