"""What one input's failure says: the rule every per-input boundary (local runner, statistics, Ray, service)
shares, so that any exception while opening, decoding or featurising an input becomes that input's error."""

from __future__ import annotations

import logging

from ast_audio.errors import ASTAudioError

logger = logging.getLogger(__name__)


def input_error(name: str, exc: Exception) -> str:
    """The error text of input `name` that failed with `exc`.

    The errors this package raises on purpose (`ASTAudioError`) and `OSError` carry a message that names the
    input; anything else (a library failing in a way it does not document, or a bug) is given as
    "name: Type: message", its traceback logged at INFO (shown with -v).
    """
    if isinstance(exc, (ASTAudioError, OSError)):
        return str(exc)
    logger.info("%s: %s while reading or featurising it", name, type(exc).__name__, exc_info=exc)
    return f"{name}: {type(exc).__name__}: {exc}"
