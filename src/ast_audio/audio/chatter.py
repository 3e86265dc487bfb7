"""Keeping decoder libraries' own messages off the user's stderr.

libsndfile decodes MP3 with libmpg123, which prints "Note: Illegal Audio-MPEG-Header ...", "Warning: Xing
stream size off ..." and "[src/libmpg123/...] error: ..." lines straight to file descriptor 2 while it reads
tags, pictures or a cut-off stream. They are not errors of ours (what matters is reported in the result), so
while a decoder runs, descriptor 2 goes to a temporary file; afterwards everything else written there (by
other threads, say a progress bar) is passed on to the real stderr and the decoder lines are dropped.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator

DECODER_LINE = re.compile(rb"^(Note|Warning|Error|error): |^\[src/libmpg123/|^\[[\w/.]+\.c:\d+\] (error|warning)")

_lock = threading.Lock()
_depth = 0
_saved_fd: int | None = None
_capture: tempfile._TemporaryFileWrapper | None = None


@contextlib.contextmanager
def quiet_decoder_chatter() -> Iterator[None]:
    """Run the enclosed decoder calls with their stderr lines dropped (nested and concurrent uses share one
    redirection, kept until the last of them ends)."""
    global _depth, _saved_fd, _capture
    with _lock:
        if _depth == 0:
            _flush_python_streams()
            _capture = tempfile.TemporaryFile()
            _saved_fd = os.dup(2)
            os.dup2(_capture.fileno(), 2)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _flush_python_streams()
                os.dup2(_saved_fd, 2)
                os.close(_saved_fd)
                _capture.seek(0)
                kept = b"".join(line for line in _capture.read().splitlines(keepends=True)
                                if not DECODER_LINE.match(line))
                _capture.close()
                _saved_fd = _capture = None
                if kept:
                    os.write(2, kept)


def _flush_python_streams() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
