"""Job output that survives crashes and never collides: a lock per output, a partial file streamed as
results come, a state file recording each finished input, and resume.

For an output FILE a job holds `.FILE.lock` (a second job on the same output fails at once, naming the
first one's process), streams to `FILE.partial`, appends each finished input (its path, size and
modification time, and the text it added) to `.FILE.state.jsonl`, and renames the partial to FILE at the
end. With resume, the inputs recorded there are skipped unless their file changed since; an input cut off
mid-write is redone; options that differ from the ones that wrote FILE are refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

from ast_audio.errors import ASTAudioError, ConfigError, UsageError
from ast_audio.inference.writers import Renderer, json_text
from ast_audio.io_utils import atomic_write_text

STATE_VERSION = 1


class OutputBusyError(ASTAudioError):
    """Another run is writing the same output."""


def hidden_sibling(path: str, suffix: str) -> str:
    """`dir/.name<suffix>` for `dir/name`."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}{suffix}")


@contextlib.contextmanager
def output_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (on `.name.lock` beside it) or fail at once naming its holder."""
    lock_path = hidden_sibling(path, ".lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise OutputBusyError(
                f"{path}: another ast-audio run (process {holder}) is writing this output; wait for it to end or "
                "choose another output"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


def check_output_file(path: str, option: str = "--output") -> None:
    """Raise `UsageError` (one line naming `option` and `path`) unless a file can be written at `path`:
    not a folder, writable if it exists, and its folder writable or creatable (missing folders are created)."""
    if path.endswith(os.sep) or os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; expected a file name, e.g. {os.path.join(path, 'results')}"
                         f"{'.png' if option == '--plot' else '.jsonl'}")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: no permission to write this file")
    _check_folder_on_the_way(os.path.dirname(os.path.abspath(path)), option, path)


def check_output_folder(path: str, option: str = "--output-dir") -> None:
    """Raise `UsageError` unless `path` is a writable folder or one that can be created (with its parents)."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a file; expected a folder (it is created if missing)")
    _check_folder_on_the_way(os.path.abspath(path), option, path)


def _check_folder_on_the_way(folder: str, option: str, path: str) -> None:
    """The nearest existing folder of `folder` (itself or an ancestor) must be a folder we may write in."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: no permission to write in the folder {existing}")


def input_stamp(item: Any) -> dict[str, int] | None:
    """Size and modification time of a file input (None for other inputs): a changed file is redone."""
    if not isinstance(item, (str, os.PathLike)):
        return None
    try:
        stat = os.stat(item)
    except OSError:
        return None
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class ResumableOutput:
    """Stream `renderer`'s chunks to FILE via FILE.partial; see the module docstring.

    >>> with ResumableOutput("out.jsonl", renderer, {"model": "m"}, resume=True) as output:
    ...     for path in output.todo(paths):
    ...         output.write(path, text)
    """

    def __init__(self, path: str, renderer: Renderer, options: dict[str, Any], resume: bool = False) -> None:
        self.path, self.renderer, self.options, self.resume = os.fspath(path), renderer, options, resume
        self.partial = f"{self.path}.partial"
        self.state_path = hidden_sibling(self.path, ".state.jsonl")
        self.kept: dict[str, dict[str, Any]] = {}  # input -> its state entry, from an earlier run
        self._stack = contextlib.ExitStack()
        self._stream: IO[str] | None = None
        self._state: IO[str] | None = None
        self._written = 0

    def __enter__(self) -> "ResumableOutput":
        self._stack.enter_context(output_lock(self.path))
        try:
            if self.resume:
                self.kept = self._read_state()
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        """A fresh partial and state file holding the kept inputs (in their earlier order) and nothing else."""
        header = json.dumps({"ast_audio_output": STATE_VERSION, "options": self.options})
        atomic_write_text(self.state_path, "".join(
            [header + "\n"] + [json_text(entry) + "\n" for entry in self.kept.values()]
        ))
        self._state = self._stack.enter_context(open(self.state_path, "a", encoding="utf-8"))
        self._stream = self._stack.enter_context(open(self.partial, "w", encoding="utf-8", newline=""))
        self._stream.write(self.renderer.header())
        for entry in self.kept.values():
            self._emit(entry["chunk"])
        self._stream.flush()

    def _read_state(self) -> dict[str, dict[str, Any]]:
        """The complete entries of the state file, checked against this run's options."""
        if not os.path.exists(self.state_path):
            if os.path.exists(self.path):
                raise ConfigError(
                    f"{self.path}: cannot resume: no record of the run that wrote it ({self.state_path} is missing); "
                    "rerun without --resume to start over"
                )
            return {}
        with open(self.state_path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().split("\n") if line]  # not splitlines(): names may hold U+2028
        header = json.loads(lines[0]) if lines else {}
        differences = _differences(header.get("options", {}), self.options)
        if differences:
            raise ConfigError(
                f"{self.path}: cannot resume: it was written with other options ({'; '.join(differences)}); rerun "
                "without --resume to start over, or choose another output"
            )
        kept: dict[str, dict[str, Any]] = {}
        for line in lines[1:]:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the run died
                continue
            if input_stamp(entry["input"]) in (None, entry["stamp"]):  # unchanged (or gone: its result stays)
                kept[entry["input"]] = entry
            else:
                kept.pop(entry["input"], None)  # changed since: redone
        return kept

    def todo(self, inputs: list[Any]) -> list[Any]:
        """The inputs still to do: those not finished earlier, or whose file changed since (redone)."""
        return [item for item in inputs
                if not (isinstance(item, (str, os.PathLike)) and os.fspath(item) in self.kept)]

    def write(self, item: Any, chunk: str) -> None:
        """Add one input's text to the output, then record the input as finished."""
        self._emit(chunk)
        self._stream.flush()
        entry = {"input": os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(item),
                 "stamp": input_stamp(item), "chunk": chunk}
        self._state.write(json_text(entry) + "\n")
        self._state.flush()

    def _emit(self, chunk: str) -> None:
        if self._written:
            self._stream.write(self.renderer.separator)
        self._stream.write(chunk)
        self._written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        # On error the partial file stays, holding every finished input; the state file says which.
        try:
            if exc_type is None:
                self._stream.write(self.renderer.footer())
                self._stream.close()
                self.renderer.finish(self.partial, self.path)
        finally:
            self._stack.__exit__(exc_type, exc, tb)


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    return [f"{key} was {before.get(key)!r}, now {now.get(key)!r}" for key in sorted(set(before) | set(now))
            if before.get(key) != now.get(key)]


class StreamOutput:
    """The same interface over a stream (stdout): no lock, no state, no resume."""

    def __init__(self, renderer: Renderer, stream: IO[str] | None = None) -> None:
        self.renderer, self.stream = renderer, stream or sys.stdout
        self._written = 0

    def __enter__(self) -> "StreamOutput":
        self.stream.write(self.renderer.header())
        return self

    def todo(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def write(self, item: Any, chunk: str) -> None:
        if self._written:
            self.stream.write(self.renderer.separator)
        self.stream.write(chunk)
        self.stream.flush()
        self._written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.stream.write(self.renderer.footer())
        self.stream.flush()
