"""Atomic writes: a file appears whole under its name or not at all, with the permissions the umask gives."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator


def current_umask() -> int:
    """The process umask, read without changing it (Linux), else by setting and restoring it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


TEMP_STEM_BYTES = 40  # of the final name kept in a temporary name, to tell what it is


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, partial: str | os.PathLike | None = None) -> Iterator[str]:
    """Yield a temporary path beside `path` for the caller to write; on success it is synced, given the
    umask's permissions (0644 under 022) and renamed over `path` in one step.

    By default the temporary file has a unique hidden name and is removed on error: '.', at most the first
    `TEMP_STEM_BYTES` bytes of the name, '.', 8 random characters, '.tmp' (under 64 bytes, so a `path` whose
    name fits the file system's limit, 255 bytes on most, never fails for its temporary name). With
    `partial`, that name is used instead and kept on error, so a long job's output so far survives it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if partial is None:
        stem = os.fsencode(os.path.basename(path))[:TEMP_STEM_BYTES].decode(errors="ignore")  # whole characters
        fd, tmp_path = tempfile.mkstemp(prefix=f".{stem}.", suffix=".tmp", dir=directory)
        os.close(fd)
    else:
        tmp_path = os.fspath(partial)
    try:
        yield tmp_path
        publish(tmp_path, path)
    except BaseException:
        if partial is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
        raise


def publish(written: str, path: str | os.PathLike) -> None:
    """Sync a finished temporary file, give it the umask's permissions and rename it over `path`."""
    with open(written, "rb") as handle:
        os.fsync(handle.fileno())
    os.chmod(written, 0o666 & ~current_umask())
    os.replace(written, path)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)
