"""Job output that survives crashes and never collides: a lock per output, a partial file streamed as
results come, a state file recording each finished input, and resume.

For an output FILE a job holds `.FILE.lock` while it runs (a second job on the same output fails at once,
naming the first one's process; the lock file is removed when the job ends), streams to `FILE.partial`,
appends each finished input (its path, size and modification time, and where its text lies in the output:
byte offset, length, CRC-32) to `.FILE.state.jsonl`, and renames the partial to FILE at the end. The state
file stays beside FILE, the record `--resume` reads (one short line per input; for Parquet, whose file is not
the text, it holds the text too). With resume, the inputs recorded are skipped unless their file changed
since; an input cut off mid-write is redone; options that differ from the ones that wrote FILE are refused.
Without resume, a run onto an output whose earlier run stopped part-way is refused (pass resume or
overwrite), so finished work is never thrown away without a word.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import tempfile
import zlib
from collections.abc import Iterator
from typing import IO, Any

from ast_audio.errors import ASTAudioError, UsageError
from ast_audio.jobs.writers import Renderer, json_text
from ast_audio.io_utils import atomic_write_text

STATE_VERSION = 2  # 1 held each input's text; 2 where the text lies in the output


class OutputBusyError(ASTAudioError):
    """Another run is writing the same output."""


def hidden_sibling(path: str, suffix: str) -> str:
    """`dir/.name<suffix>` for `dir/name`."""
    directory, name = os.path.split(os.path.abspath(path))
    return os.path.join(directory, f".{name}{suffix}")


@contextlib.contextmanager
def output_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on `path` (on `.name.lock` beside it, removed on release) or fail at once naming
    its holder."""
    lock_path = hidden_sibling(path, ".lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    fd = _locked_file(lock_path, path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)  # while still holding it: a run that opened this file sees it gone and retries
        os.close(fd)  # closing releases the lock


def _locked_file(lock_path: str, path: str, attempts: int = 20) -> int:
    """A descriptor of `lock_path` holding its exclusive lock, the file still under that name."""
    for _ in range(attempts):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputBusyError(
                f"{path}: another ast-audio run (process {holder}) is writing this output; wait for it to end or "
                "choose another output"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(lock_path).st_ino == os.fstat(fd).st_ino:
                return fd
        os.close(fd)  # the run that held it removed it as we opened it: take the new one
    raise OutputBusyError(f"{path}: could not take the output's lock {lock_path}")


def check_output_file(path: str, option: str = "--output", example: str = "results.jsonl") -> None:
    """Raise `UsageError` (one line naming `option` and `path`) unless a file can be written at `path`:
    not a folder, writable if it exists, and its folder writable or creatable (missing folders are created)."""
    if not path:
        raise UsageError(f"{option}: an empty name; expected a file name, e.g. {example}")
    if path.endswith(os.sep) or os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; expected a file name, e.g. {os.path.join(path, example)}")
    if os.path.exists(path) and not os.path.isfile(path):  # the finished output is renamed onto it
        raise UsageError(f"{option} {path}: not a regular file (a device, pipe or socket); expected a file name, "
                         f"e.g. {example}")
    if os.path.exists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))  # opened to write, nothing written
        except PermissionError:
            raise UsageError(f"{option} {path}: no permission to write this file") from None
        except OSError as exc:
            raise UsageError(f"{option} {path}: cannot write this file ({exc.strerror})") from None
    _check_folder_on_the_way(os.path.dirname(os.path.abspath(path)), option, path)


def check_output_folder(path: str, option: str = "--output-dir") -> None:
    """Raise `UsageError` unless `path` is a writable folder or one that can be created (with its parents)."""
    if not path:
        raise UsageError(f"{option}: an empty name; expected a folder")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a file; expected a folder (it is created if missing)")
    _check_folder_on_the_way(os.path.abspath(path), option, path)


def _check_folder_on_the_way(folder: str, option: str, path: str) -> None:
    """The nearest existing folder of `folder` (itself or an ancestor) must be a folder where a file can be
    created: probed by creating one and removing it."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{option} {path}: {existing} is a file, not a folder")
    try:  # permissions are not the whole story (/sys, /proc, a read-only mount): create a file to know
        descriptor, probe = tempfile.mkstemp(prefix=".ast-audio-probe-", dir=existing)
        os.close(descriptor)
        os.unlink(probe)
    except PermissionError:
        raise UsageError(f"{option} {path}: no permission to write in the folder {existing}") from None
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create files in the folder {existing} ({exc.strerror})") from None


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

    `resume`: keep what an earlier run of the same options finished; `overwrite`: start again even though an
    earlier run stopped part-way (without either, that is refused with `UsageError`: exit 2).

    >>> with ResumableOutput("out.jsonl", renderer, {"model": "m"}, resume=True) as output:
    ...     for path in output.todo(paths):
    ...         output.write(path, text)
    """

    def __init__(self, path: str, renderer: Renderer, options: dict[str, Any], resume: bool = False,
                 overwrite: bool = False) -> None:
        if resume and overwrite:
            raise UsageError("--resume and --overwrite exclude each other: go on from an earlier run, or start again")
        self.path, self.renderer, self.options = os.fspath(path), renderer, options
        self.resume, self.overwrite = resume, overwrite
        self.partial = f"{self.path}.partial"
        self.state_path = hidden_sibling(self.path, ".state.jsonl")
        self.kept: dict[str, dict[str, Any]] = {}  # input -> its state entry (with its "chunk"), from an earlier run
        # Parquet (a renderer with its own finish) turns the text into another file: the state keeps the text.
        self._text_in_state = type(renderer).finish is not Renderer.finish
        self._stack = contextlib.ExitStack()
        self._stream: IO[bytes] | None = None
        self._state: IO[str] | None = None
        self._written = 0
        self._offset = 0

    def __enter__(self) -> "ResumableOutput":
        self._stack.enter_context(output_lock(self.path))
        try:
            if self.resume:
                self.kept = self._read_state()
            elif not self.overwrite:
                self._refuse_unfinished()
            self._start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def _start(self) -> None:
        """A fresh partial and state file holding the kept inputs (in their earlier order) and nothing else."""
        self._stream = self._stack.enter_context(open(self.partial, "wb"))
        self._put(self.renderer.header())
        entries = [self._emit(entry["input"], entry["stamp"], entry["chunk"]) for entry in self.kept.values()]
        self._stream.flush()
        header = json.dumps({"ast_audio_output": STATE_VERSION, "options": self.options})
        atomic_write_text(self.state_path, "".join(line + "\n" for line in [header, *entries]))
        self._state = self._stack.enter_context(open(self.state_path, "a", encoding="utf-8"))

    def _entries(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The state file's header and its complete entries ({} and [] without one)."""
        if not os.path.exists(self.state_path):
            return {}, []
        with open(self.state_path, encoding="utf-8") as handle:
            lines = [line for line in handle.read().split("\n") if line]  # not splitlines(): names may hold U+2028
        entries = []
        for line in lines[1:]:
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # the line being written when the run died
                continue
        return (json.loads(lines[0]) if lines else {}), entries

    def _refuse_unfinished(self) -> None:
        """Raise `UsageError` when an earlier run onto this output stopped after finishing some inputs."""
        header, entries = self._entries()
        if not entries or not os.path.exists(self.partial):
            return
        differences = _differences(header.get("options", {}), self.options)
        done = f"an earlier run stopped after {len(entries)} inputs (kept in {self.partial})"
        if differences:
            raise UsageError(f"{self.path}: {done}, with other options ({'; '.join(differences)}); pass --overwrite "
                              "to start again, or choose another output")
        raise UsageError(f"{self.path}: {done}; pass --resume to go on from there, or --overwrite to start again")

    def _read_state(self) -> dict[str, dict[str, Any]]:
        """The entries of the state file whose text is still where it says, checked against this run's options."""
        if not os.path.exists(self.state_path):
            if os.path.exists(self.path):
                raise UsageError(
                    f"{self.path}: cannot resume: no record of the run that wrote it ({self.state_path} is missing); "
                    "rerun without --resume to start over"
                )
            return {}
        header, entries = self._entries()
        differences = _differences(header.get("options", {}), self.options)
        if differences:
            again = "pass --overwrite instead of --resume" if os.path.exists(self.partial) else \
                "rerun without --resume"
            raise UsageError(
                f"{self.path}: cannot resume: it was written with other options ({'; '.join(differences)}); {again} "
                "to start over, or choose another output"
            )
        kept: dict[str, dict[str, Any]] = {}
        text = self._earlier_text() if header.get("ast_audio_output") == STATE_VERSION else b""
        for entry in entries:
            chunk = entry.get("chunk")
            if chunk is None and "offset" in entry:
                span = text[entry["offset"] : entry["offset"] + entry["length"]]
                chunk = span.decode("utf-8") if zlib.crc32(span) == entry["crc32"] else None
            if chunk is not None and input_stamp(entry["input"]) in (None, entry["stamp"]):
                kept[entry["input"]] = {**entry, "chunk": chunk}  # unchanged (or gone: its result stays)
            else:
                kept.pop(entry["input"], None)  # changed since, or its text is not there: redone
        return kept

    def _earlier_text(self) -> bytes:
        """The text the state's offsets point into: the partial of a stopped run, else the finished output."""
        for candidate in (self.partial, self.path):
            if os.path.exists(candidate) and not self._text_in_state:
                with open(candidate, "rb") as handle:
                    return handle.read()
        return b""

    def todo(self, inputs: list[Any]) -> list[Any]:
        """The inputs still to do: those not finished earlier, or whose file changed since (redone)."""
        return [item for item in inputs
                if not (isinstance(item, (str, os.PathLike)) and os.fspath(item) in self.kept)]

    def write(self, item: Any, chunk: str) -> None:
        """Add one input's text to the output, then record the input as finished."""
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else str(item)
        entry = self._emit(name, input_stamp(item), chunk)
        self._stream.flush()
        self._state.write(entry + "\n")
        self._state.flush()

    def _emit(self, name: str, stamp: dict[str, int] | None, chunk: str) -> str:
        """Write one input's text (after the separator) and return its state line."""
        if self._written:
            self._put(self.renderer.separator)
        data = chunk.encode("utf-8")
        entry: dict[str, Any] = {"input": name, "stamp": stamp}
        if self._text_in_state:
            entry["chunk"] = chunk
        else:
            entry.update(offset=self._offset, length=len(data), crc32=zlib.crc32(data))
        self._stream.write(data)
        self._offset += len(data)
        self._written += 1
        return json_text(entry)  # a name that is not UTF-8 is escaped, not an encoding error

    def _put(self, text: str) -> None:
        data = text.encode("utf-8")
        self._stream.write(data)
        self._offset += len(data)

    def __exit__(self, exc_type, exc, tb) -> None:
        # On error the partial file stays, holding every finished input; the state file says which.
        try:
            if exc_type is None:
                self._put(self.renderer.footer())
                self._stream.close()
                self.renderer.finish(self.partial, self.path)
        finally:
            self._stack.__exit__(exc_type, exc, tb)


def _differences(before: dict[str, Any], now: dict[str, Any]) -> list[str]:
    from ast_audio.jobs.comparison import option_differences

    return option_differences(before, now)


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
