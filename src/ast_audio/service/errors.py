"""The service's errors and their HTTP statuses: one table from exception type to status, one rule to apply it.

Callers: `service.app` (its exception handlers), `service.uploads` and `service.batcher` (raise these).
"""

from __future__ import annotations

from ast_audio.errors import ASTAudioError, AudioError, ConfigError, NotAudioError


class HTTPRejection(Exception):
    """A request refused with `status` and a one-line `message` (sent as {"error": message})."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


class QueueFullError(ASTAudioError):
    """The queue cannot take a request's windows now; try again shortly."""


# The most specific class in an error's MRO decides: NotAudioError is 415 although it is an AudioError (422).
STATUSES: dict[type[BaseException], int] = {
    NotAudioError: 415,  # the upload is not audio any decoder here recognises
    AudioError: 422,  # audio, but unusable: too short, NaN samples, corrupt, longer than the server's limit
    ConfigError: 422,  # a query value out of range (window, hop)
    QueueFullError: 503,  # busy: retry shortly
    ASTAudioError: 500,  # anything else this package raised on purpose
}
RETRY_AFTER_S = 1


def rejection(error: ASTAudioError) -> HTTPRejection:
    """The HTTP answer to one of this package's errors, by the STATUSES table."""
    status = next(STATUSES[cls] for cls in type(error).__mro__ if cls in STATUSES)
    if status == 503:
        return HTTPRejection(503, f"server busy: {error}; retry shortly", {"Retry-After": str(RETRY_AFTER_S)})
    return HTTPRejection(status, str(error))
