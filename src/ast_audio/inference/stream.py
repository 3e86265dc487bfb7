"""Live tagging: a stream of audio in, the file's windows and scores out as soon as each window's audio is there.

A stream (chunks of samples at any rate and channel count) is mixed down to mono as the file decoder does
(`audio.decode.to_mono`: the mean of the channels), resampled to the model's rate with soxr's streaming
resampler, and kept in a `SampleRing` that holds only the samples the next windows need (at most window +
hop + one chunk). `StreamWindows` emits window k, [k*hop, k*hop + window) s, once its last sample has
arrived, reading exactly the samples `audio.decode.AudioFile.read` reads for that window of the file; when the
stream ends, the windows left are those `inference.windows.plan_windows` gives for the stream's duration (the
last one moved back to end at the end with the full length; a stream shorter than one window padded to a frame
as `inference.sources.AudioSource.read` does). `LiveTagger` runs
the reading in a thread and scores windows that are ready together in one batch with the runner's own
featuriser and backend (`InferenceRunner.features`, `.infer`), so a stream of a file at the model's rate gives
that file's window scores. Callers: `ast-audio listen` (`commands.listen`); the service's `/v1/stream`
(`service.stream`) uses the same planner, resampler, `windows_from_chunks`, `window_records` and `LiveEvents`
with the service's batcher in place of the runner.

Back-pressure: the reader hands windows over through a queue of `queue_windows` places. A source read faster
than real time (a file, a pipe) blocks there, so it is read as fast as the model keeps up; a live source
(`realtime=True`: a capture device, a network stream) cannot wait, so a window that finds the queue full is
dropped whole and counted (`LiveTagger.dropped`), and memory stays bounded either way.
"""

from __future__ import annotations

import os
import queue
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ast_audio.errors import AudioError, NotAudioError
from ast_audio.inference.results import top_labels
from ast_audio.inference.windows import plan_windows

__all__ = ["PCM_FORMATS", "PCM_RATES", "Gap", "LiveEvents", "LiveTagger", "MonoResampler", "PcmFrames", "PipeReader", "SampleRing",
           "StreamWindow", "StreamWindows", "check_pcm_rate", "container_chunks", "pcm_chunks", "pcm_to_float", "reconnecting",
           "stream_chunks", "wall_time", "window_records", "windows_from_chunks"]


@dataclass
class StreamWindow:
    """Window `index` of a stream: `start`, `end` in seconds of stream time and its mono samples at the model's
    rate (at least one frame)."""

    index: int
    start: float
    end: float
    samples: np.ndarray


@dataclass
class Gap:
    """The source dropped and was reopened: stream time from `start` to `end` s has no audio (no window
    that overlaps it is scored)."""

    start: float
    end: float


class SampleRing:
    """The samples from absolute sample index `start` to `end` (exclusive) of a stream, in a fixed array of
    `capacity` samples: appending more than fits is a bug of the caller (`OverflowError`).

    `peak` is the most samples it has held at once (memory is `capacity` float32 samples, whatever the
    stream's length).
    """

    def __init__(self, capacity: int) -> None:
        self._data = np.zeros(capacity, np.float32)
        self._offset = 0  # where sample `start` lies in _data
        self.start = 0
        self.size = 0
        self.peak = 0

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def capacity(self) -> int:
        return len(self._data)

    def append(self, samples: np.ndarray) -> None:
        """Add `samples` (mono float32) after `end`."""
        count = len(samples)
        if self.size + count > self.capacity:
            raise OverflowError(f"ring of {self.capacity} samples cannot take {count} more after {self.size}")
        if self._offset + self.size + count > self.capacity:  # compact: move what is held to the front
            self._data[: self.size] = self._data[self._offset : self._offset + self.size]
            self._offset = 0
        begin = self._offset + self.size
        self._data[begin : begin + count] = samples
        self.size += count
        self.peak = max(self.peak, self.size)

    def read(self, begin: int, stop: int) -> np.ndarray:
        """A copy of samples [begin, stop) (absolute indices, within what is held)."""
        if begin < self.start or stop > self.end or stop < begin:
            raise IndexError(f"samples [{begin}, {stop}) outside the held [{self.start}, {self.end})")
        return self._data[self._offset + begin - self.start : self._offset + stop - self.start].copy()

    def forget_before(self, index: int) -> None:
        """Drop the samples before absolute index `index`; past `end`, the ring is empty and starts there."""
        index = max(index, self.start)
        dropped = min(index - self.start, self.size)
        self._offset += dropped
        self.size -= dropped
        self.start = index
        if self.size == 0:
            self._offset = 0


class StreamWindows:
    """The window planner of a stream: `push` samples, get the windows their arrival completes; `finish` at the
    end of the stream gives the rest, as `plan_windows` plans the stream's duration.

    rate: samples a second (the model's); window, hop: seconds; frame_samples: the shortest window read
    (a shorter one is zero-padded); chunk_samples: the most samples added at once (longer pushes are split),
    so the ring holds at most window + hop + chunk_samples samples.
    """

    def __init__(self, rate: int, window: float, hop: float, frame_samples: int, chunk_samples: int = 4096) -> None:
        self.rate, self.window, self.hop = rate, window, hop
        self.frame_samples, self.chunk_samples = frame_samples, chunk_samples
        self.ring = SampleRing(self._span(window) + self._span(hop) + chunk_samples + 2)
        self.received = 0  # samples of stream time so far, gaps included
        self.next_index = 0
        self._gaps: list[tuple[int, int]] = []  # sample spans without audio

    def _span(self, seconds: float) -> int:
        return int(round(seconds * self.rate))

    def _start(self, index: int) -> float:
        """Window `index`'s start in seconds, rounded to 1e-9 s as `plan_windows` rounds it (9.7125, not
        15 * 0.6475 = 9.712499999999999), so the stream's window times are the file's very floats."""
        return round(index * self.hop, 9)

    def _end(self, start: float) -> float:
        return round(start + self.window, 9)

    def _bounds(self, start: float, end: float) -> tuple[int, int]:
        """Samples [begin, stop) of the window (start, end) s, computed as `AudioFile.read` computes them."""
        begin = int(round(start * self.rate))
        return begin, begin + int(round((end - start) * self.rate))

    @property
    def seconds(self) -> float:
        """Stream time so far in seconds."""
        return self.received / self.rate

    def push(self, samples: np.ndarray) -> list[StreamWindow]:
        """Add mono float32 `samples` at `rate`; the windows now complete, in order."""
        ready: list[StreamWindow] = []
        for first in range(0, len(samples), self.chunk_samples):
            piece = samples[first : first + self.chunk_samples]
            # what a later window may read: the next one's, or the last window's when the stream ends soon
            # after (moved back to end at the end, it starts at most `window` before the stream's end)
            keep_from = min(self._bounds(self._start(self.next_index), self._start(self.next_index))[0],
                            self.ring.end + len(piece) - self._span(self.window))
            if keep_from > self.ring.end:  # sparse windows (hop > window): audio between them is not kept
                skip = min(keep_from - self.ring.end, len(piece))
                self.ring.forget_before(self.ring.end + skip)
                piece = piece[skip:]
            else:
                self.ring.forget_before(keep_from)
            self.ring.append(piece)
            self.received = self.ring.end
            ready.extend(self._complete())
        return ready

    def _complete(self) -> Iterator[StreamWindow]:
        while True:
            start = self._start(self.next_index)
            begin, stop = self._bounds(start, self._end(start))
            if stop > self.received:
                return
            yield self._take(start, self._end(start), begin, stop)

    def _take(self, start: float, end: float, begin: int, stop: int) -> StreamWindow:
        samples = self.ring.read(begin, min(stop, self.received))
        if len(samples) < self.frame_samples:
            samples = np.pad(samples, (0, self.frame_samples - len(samples)))
        window = StreamWindow(self.next_index, float(start), float(end), samples)
        self.next_index += 1
        following = self._bounds(self._start(self.next_index), self._start(self.next_index))[0]
        self.ring.forget_before(min(following, self.received - self._span(self.window)))
        return window

    def skip(self, seconds: float) -> Gap:
        """The source lost `seconds` of audio: stream time moves on by that much, what is held is dropped and
        the windows go on at the first start at or after the gap's end (the grid stays k * hop)."""
        gap_start = self.received
        self.received += max(0, self._span(seconds))
        while self._bounds(self._start(self.next_index), self._start(self.next_index))[0] < self.received:
            self.next_index += 1
        self.ring.forget_before(self.received)
        return Gap(gap_start / self.rate, self.received / self.rate)

    def finish(self) -> list[StreamWindow]:
        """The windows left when the stream ends: those of `plan_windows(duration)` from `next_index` on (the
        last moved back to end at the end; the ring still holds the last `window` s). Raises `AudioError` when the stream held less than one frame of audio."""
        if self.received < self.frame_samples:
            if self.next_index:  # a gap at the very end: nothing left to score
                return []
            raise AudioError(f"the stream ended after {self.received / self.rate * 1000:.1f} ms of audio, less than "
                             f"one {self.frame_samples / self.rate * 1000:g} ms frame")
        ready = []
        for start, end in plan_windows(self.received / self.rate, self.window, self.hop)[self.next_index:]:
            begin, stop = self._bounds(start, end)
            if begin < self.ring.start:  # after a gap less than a window before the end: the audio since it
                begin, start = self.ring.start, self.ring.start / self.rate
                if begin >= stop:  # a gap at the very end: nothing left
                    break
            ready.append(self._take(start, end, begin, stop))
        return ready


def pcm_to_float(array: np.ndarray) -> np.ndarray:
    """Samples of any PCM dtype as float32 in [-1, 1]: signed integers divided by 2^(bits-1), unsigned
    ones centred on their middle (as libsndfile and the file decoder read them), floats as they are."""
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "i":
        return (array / float(np.iinfo(array.dtype).max + 1)).astype(np.float32)
    if array.dtype.kind == "u":
        middle = (np.iinfo(array.dtype).max + 1) / 2
        return ((array - middle) / middle).astype(np.float32)
    raise AudioError(f"unsupported sample format {array.dtype}")


PCM_FORMATS = {"s16le": "<i2", "f32le": "<f4"}  # raw PCM sample formats a stream may be sent in -> NumPy dtypes
PCM_RATES = (1000, 768000)  # Hz: the sampling rates raw PCM is taken at (check_pcm_rate says why)


def check_pcm_rate(rate: Any, name: str = "rate") -> int:
    """`rate` (Hz) of raw PCM a stream is sent in, checked: an integer within `PCM_RATES`, else `ConfigError`
    naming `name` (the option or parameter) and the value. Below 1000 Hz nothing the model hears survives (it
    listens up to 8 kHz) and a few bytes would make minutes of stream time; 768 kHz is the highest rate audio
    interfaces use. Callers: `ast-audio listen` (--rate), the service's `/v1/stream` (rate)."""
    from ast_audio.errors import ConfigError

    low, high = PCM_RATES
    if isinstance(rate, bool) or not isinstance(rate, int) or not low <= rate <= high:
        raise ConfigError(f"{name} {rate!r} is out of range: raw PCM must be {low} to {high} Hz (below {low} Hz "
                          "there is no sound the model hears, and a few bytes would be minutes of stream)")
    return rate


class PcmFrames:
    """Interleaved raw PCM (`sample_format` one of `PCM_FORMATS`, `channels` interleaved) as its bytes arrive, in
    pieces of any size: each call gives the whole frames received so far as (frames, channels) float32
    (`pcm_to_float`); a frame split between two pieces waits for its rest (at most one frame is held)."""

    def __init__(self, sample_format: str, channels: int) -> None:
        self.dtype, self.channels = np.dtype(PCM_FORMATS[sample_format]), channels
        self.frame_bytes = self.dtype.itemsize * channels
        self._pending = b""

    def __call__(self, data: bytes) -> np.ndarray:
        pending = self._pending + data if self._pending else data
        whole = len(pending) // self.frame_bytes * self.frame_bytes
        self._pending = bytes(pending[whole:])
        return pcm_to_float(np.frombuffer(pending, dtype=self.dtype, count=whole // self.dtype.itemsize)
                            .reshape(-1, self.channels))


class PipeReader:
    """A binary file-like reader of an open file descriptor (standard input: 0) for a stream read in a thread:
    `read(size)` gives the bytes there now (at least one, at most `size`, as `read1` does) as soon as any
    arrive, and b"" at the end of the stream or once `stopped()` is True (asked every `poll` s while nothing
    arrives), so a stop ends the stream as its end would. It reads the descriptor with `os.read`, never through
    Python's buffered `sys.stdin.buffer`, whose lock a thread blocked in it still holds at interpreter shutdown
    (a fatal error on Ctrl-C). Callers: `ast-audio listen` (raw PCM, and containers through PyAV)."""

    def __init__(self, fd: int, stopped: Callable[[], bool] = lambda: False, poll: float = 0.1) -> None:
        self.fd, self._stopped, self.poll = fd, stopped, poll

    def read(self, size: int = -1) -> bytes:
        size = size if size and size > 0 else 1 << 16
        while not self._stopped():
            try:
                ready, _, _ = select.select([self.fd], [], [], self.poll)
            except (OSError, ValueError):  # not selectable (a closed descriptor): read as it is
                ready = [self.fd]
            if ready:
                return os.read(self.fd, size)
        return b""

    read1 = read


def pcm_chunks(handle: Any, sample_format: str, channels: int, rate: int, limit: int | None = None,
               frames: int = 4096) -> Iterator[Chunk]:
    """(frames, channels) float32 chunks of interleaved raw PCM (`PCM_FORMATS`) read from the binary file-like
    `handle` as it arrives (`read1` when it has one: what is there now), until its end or `limit` bytes."""
    pcm = PcmFrames(sample_format, channels)
    read = getattr(handle, "read1", handle.read)
    left = limit
    while left is None or left > 0:
        size = frames * pcm.frame_bytes if left is None else min(left, frames * pcm.frame_bytes)
        data = read(size)
        if not data:
            return
        left = None if left is None else left - len(data)
        samples = pcm(data)
        if len(samples):
            yield samples, rate


WAV_PCM_FORMATS = {(1, 16): "s16le", (3, 32): "f32le"}  # (WAV format tag, bits a sample) -> PCM_FORMATS name


def stream_chunks(handle: Any, name: str) -> Iterator[Chunk]:
    """The chunks of a container arriving on the binary file-like `handle` (standard input): a WAV of 16-bit
    integer or 32-bit float PCM is read here, its samples as soon as they arrive, up to the length its data chunk
    gives (none, 0 or 0xFFFFFFFF: to the end), since FFmpeg's WAV demuxer holds back the first 64 KiB to look
    for S/PDIF data in them (2 s of 16 kHz mono before the first window); anything else (other WAVs included)
    through `container_chunks`. Errors as `container_chunks`'."""
    read, layout = _wav_header(handle)
    if layout is None:
        yield from container_chunks(_Prefixed(read, handle), name)
        return
    sample_format, channels, rate, size = layout
    yield from pcm_chunks(handle, sample_format, channels, rate, None if size in (0, 0xFFFFFFFF) else size)


def _read_exactly(handle: Any, count: int) -> bytes:
    data = b""
    while len(data) < count and (piece := handle.read(count - len(data))):
        data += piece
    return data


def _wav_header(handle: Any) -> tuple[bytes, tuple[str, int, int, int] | None]:
    """Reads a RIFF/WAVE header up to its data chunk: (the bytes read, (sample format, channels, rate, data
    bytes) when its samples are PCM `pcm_chunks` reads, else None: not such a WAV)."""
    import struct

    read = _read_exactly(handle, 12)
    if read[:4] != b"RIFF" or read[8:12] != b"WAVE":
        return read, None
    layout = None
    while len(header := _read_exactly(handle, 8)) == 8:
        read += header
        tag, size = header[:4], int.from_bytes(header[4:], "little")
        if tag == b"data":
            return read, None if layout is None else (*layout, size)
        if size > 1 << 20:  # no header chunk is that long: left to FFmpeg
            break
        body = _read_exactly(handle, size + (size & 1))
        read += body
        if tag == b"fmt " and len(body) >= 16:
            code, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if code == 0xFFFE and len(body) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the sub-format's tag
                code = struct.unpack_from("<H", body, 24)[0]
            sample_format = WAV_PCM_FORMATS.get((code, bits))
            layout = (sample_format, channels, rate) if sample_format and channels and rate else None
    return read, None


class _Prefixed:
    """`handle` with `prefix` (bytes already read from it) put back in front."""

    def __init__(self, prefix: bytes, handle: Any) -> None:
        self.prefix, self.handle = prefix, handle

    def read(self, size: int = -1) -> bytes:
        if not self.prefix:
            return self.handle.read(size)
        cut = len(self.prefix) if size is None or size < 0 else size
        data, self.prefix = self.prefix[:cut], self.prefix[cut:]
        return data


STALL_SECONDS = 10.0  # a source that sends nothing for this long (opening or streaming) has stalled
READ_BYTES = 4096  # what PyAV asks a file-like source for at once: a small read keeps a slow stream's latency low


class _CountedReader:
    """A file-like source's `read`, counting the bytes it gave (an empty stream is told apart from garbage)."""

    def __init__(self, handle: Any) -> None:
        self.handle, self.received = handle, 0

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.received += len(data)
        return data


def container_chunks(target: Any, name: str, device_format: str | None = None) -> Iterator[Chunk]:
    """(frames, channels) float32 chunks of the first audio stream of what FFmpeg (PyAV) opens at `target` (a
    URL, a path, ``pipe:0``, or a file-like object with ``read``), decoded as it arrives; `AudioError` naming
    `name` when it cannot be opened or decoded, is empty, or sends nothing for `STALL_SECONDS` (`NotAudioError`
    for data no demuxer recognises). Callers: `ast-audio listen`, the service's `/v1/stream`."""
    import av

    counted = _CountedReader(target) if hasattr(target, "read") else None
    try:
        container = av.open(counted or target, format=device_format, timeout=(STALL_SECONDS, STALL_SECONDS),
                            buffer_size=READ_BYTES)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        if counted is not None and counted.received == 0 and not isinstance(exc, av.error.ExitError):
            raise AudioError(f"{name}: empty: the stream ended before any data") from None
        # data no demuxer recognises is not audio (415 in the service); a URL or device that fails is not that
        kind = NotAudioError if isinstance(exc, av.error.InvalidDataError) else AudioError
        raise kind(f"{name}: cannot be opened as audio ({_reason(exc)})") from None
    try:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise AudioError(f"{name}: no audio stream")
        for frame in container.decode(stream):
            array = frame.to_ndarray()
            array = array.T if frame.format.is_planar else array.reshape(-1, len(frame.layout.channels))
            yield pcm_to_float(array), frame.sample_rate
    except (av.error.FFmpegError, OSError) as exc:
        raise AudioError(f"{name}: the stream broke off ({_reason(exc)})") from None
    finally:
        container.close()


def _reason(exc: BaseException) -> str:
    """Why PyAV failed, in our words where FFmpeg's are its internals' (a timeout is "Immediate exit requested")."""
    import av

    if isinstance(exc, av.error.ExitError):
        return f"no data for {STALL_SECONDS:g} s"
    return str(getattr(exc, "strerror", None) or exc)


class MonoResampler:
    """Chunks of (frames, channels) float32 at `rate` -> mono float32 at `target` (soxr's streaming
    resampler, high quality, when the rates differ); `flush` gives the resampler's last samples."""

    def __init__(self, rate: int, target: int) -> None:
        self.rate, self.target = rate, target
        self._stream = None
        if rate != target:
            import soxr

            self._stream = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        mono = samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if not np.isfinite(mono).all():
            raise AudioError("the stream contains NaN or infinite samples")
        return mono if self._stream is None else self._stream.resample_chunk(mono, last=False)

    def flush(self) -> np.ndarray:
        if self._stream is None:
            return np.zeros(0, np.float32)
        return self._stream.resample_chunk(np.zeros(0, np.float32), last=True)


# What a source yields: (frames, channels) samples and their rate, or a Gap in seconds of lost audio (its start
# and end are filled in by the planner, which owns stream time).
Chunk = tuple[np.ndarray, int]


class LiveTagger:
    """Windows of a stream scored as they complete, one batch for the windows ready together.

    runner: the `InferenceRunner` (its `features` and `infer`); answers: the built `Answers` (class selection)
    or None; window, hop: seconds; top_k: labels per window; realtime: drop windows when the model falls
    behind instead of blocking the reader; queue_windows: windows waiting at most; events: find events
    (`LiveEvents`; needs `answers` with events on); stop_grace: seconds `stop` waits for a reader blocked on
    its source.
    """

    def __init__(self, runner: Any, answers: Any, *, window: float, hop: float, top_k: int = 5,
                 realtime: bool = False, queue_windows: int = 16, batch_size: int = 8, events: bool = False,
                 stop_grace: float = 1.0) -> None:
        self.runner, self.answers, self.top_k = runner, answers, top_k
        timing = runner.timing
        self.planner = StreamWindows(timing.sampling_rate, window, hop, timing.frame_samples)
        self.realtime, self.batch_size = realtime, batch_size
        self.dropped = 0
        self.windows = 0
        self.events = LiveEvents(answers, hop) if events else None
        self._queue: queue.Queue = queue.Queue(maxsize=max(queue_windows, batch_size))
        self._stop = threading.Event()  # the stream ends: at a `stop`, or when the caller leaves `run`
        self._done = threading.Event()  # the scorer takes nothing more
        self._stopped_at: float | None = None
        self.stop_grace = stop_grace
        self._reader: threading.Thread | None = None

    def stop(self) -> None:
        """End the stream here, as its end would (safe from a signal handler): the reader stops at its next chunk
        and the last windows are those `StreamWindows.finish` plans for the audio that arrived (as `until` ends
        it); every window complete by then is scored and the events still open are closed, then `run` returns.
        A reader blocked on its source longer than `stop_grace` s is left behind (a daemon thread): the windows
        it had completed are scored without it. An error the source raises after the stop is not raised."""
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """True once `stop` was called (a source reading in its own loop polls it to end there)."""
        return self._stopped_at is not None

    def _offer(self, item: Any, droppable: bool) -> bool:
        """Hand `item` to the scorer: False when the scorer takes nothing more."""
        while not self._done.is_set():
            try:
                if droppable and self.realtime:
                    self._queue.put_nowait(item)
                else:
                    self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if droppable and self.realtime:
                    self.dropped += 1
                    return True
        return False

    def _read(self, chunks: Iterable[Chunk | float], until: float | None) -> None:
        """The reader thread: chunks -> windows (and gaps) onto the queue; then None, or the error raised."""
        try:
            for item, droppable in windows_from_chunks(chunks, self.planner, until, self._stop.is_set):
                if not self._offer(item, droppable):
                    break
            self._offer(None, droppable=False)
        except BaseException as exc:  # noqa: BLE001 - reported in the scoring thread
            if not self.stopping:  # after a stop, a source cut short (or empty) is the stop's doing
                self._offer(exc, droppable=False)
            self._offer(None, droppable=False)

    def run(self, chunks: Iterable[Chunk | float], until: float | None = None) -> Iterator[dict[str, Any]]:
        """Records as windows are scored: {"start", "end", "labels"} per window (the labels as `top_labels`
        gives them, classify's `windows` form; and "decisions" when the answers decide), {"gap": {"start", "end"}} per reconnect and, with events,
        {"event": {label, start, end, score, mean}} as each event becomes final (the rest at the end).
        `until`: stop after this many seconds of stream time. Raises what the source raised (e.g.
        `AudioError`) after the records of the windows read before it."""
        reader = threading.Thread(target=self._read, args=(chunks, until), name="ast-audio-listen", daemon=True)
        self._reader = reader
        reader.start()
        error: BaseException | None = None
        try:
            while True:
                batch, finished = self._next_batch()
                for item in batch:
                    if isinstance(item, BaseException):
                        error = item
                windows = [item for item in batch if isinstance(item, StreamWindow)]
                records, scores = self._score(windows)
                for item in batch:
                    if isinstance(item, Gap):
                        yield {"gap": {"start": item.start, "end": item.end}}
                    elif isinstance(item, StreamWindow):
                        yield records.pop(0)
                if self.events is not None and windows:
                    for event in self.events.add([(window.start, window.end) for window in windows], scores):
                        yield {"event": event.to_dict()}
                if finished:
                    for event in self.events.close() if self.events is not None and error is None else []:
                        yield {"event": event.to_dict()}
                    break
        finally:
            self._stop.set()
            self._done.set()
            reader.join(timeout=1)  # a reader blocked on its source is a daemon: it ends with the process
        if error is not None:
            raise error

    def _next_batch(self) -> tuple[list[Any], bool]:
        """What is waiting (at least one item, at most a batch of windows); True when the reader is done (or,
        after a stop, blocked past the grace: nothing more will come in time)."""
        batch = [self._first()]
        while sum(isinstance(item, StreamWindow) for item in batch) < self.batch_size and batch[-1] is not None:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        finished = batch[-1] is None
        return [item for item in batch if item is not None], finished

    def _first(self) -> Any:
        """The next item from the reader, waiting for it; None for the end."""
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stopped_at is not None and (
                        self._reader is None or not self._reader.is_alive()
                        or time.monotonic() - self._stopped_at > self.stop_grace):
                    return None

    def _score(self, windows: list[StreamWindow]) -> tuple[list[dict[str, Any]], np.ndarray | None]:
        """The windows' records and their (selected) scores (windows, classes)."""
        if not windows:
            return [], None
        scores, _ = self.runner.infer(self.runner.features([window.samples for window in windows]))
        self.windows += len(windows)
        return window_records(windows, scores, self.runner.labels, self.answers, self.top_k)


def window_records(windows: Sequence[StreamWindow], scores: np.ndarray, labels: Sequence[str], answers: Any,
                   top_k: int) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The records of scored stream windows, as `ast-audio listen` prints them and `/v1/stream` sends them:
    {"start", "end", "labels"} per window (the top `top_k` as `top_labels` gives them, classify's `windows` form),
    with "decisions" when the answers decide; and the selected scores (windows, selected classes) events are
    found on.

    windows: the windows (their `start`, `end` in seconds); scores: the model's (windows, len(labels)); labels:
    the model's; answers: the built `Answers` (class selection, decisions) or None for the model's classes.
    """
    if answers is not None:
        scores, labels = answers.select(scores), answers.labels
    records = [{"start": window.start, "end": window.end, "labels": top_labels(row, list(labels), top_k)}
               for window, row in zip(windows, scores)]
    decided = answers.decisions(scores) if answers is not None else None
    for record, decisions in zip(records, decided or ()):  # classify's windows carry them the same way
        record["decisions"] = [decision.to_dict() for decision in decisions]
    return records, scores


def windows_from_chunks(chunks: Iterable[Chunk | float], planner: StreamWindows, until: float | None = None,
                        stopped: Callable[[], bool] = lambda: False) -> Iterator[tuple[StreamWindow | Gap, bool]]:
    """The windows of a stream of chunks as `planner` completes them, each with True when it may be dropped (a
    window its audio completed while the stream goes on) or False (a gap, or the windows of the stream's end:
    the resampler's last samples and `planner.finish`).

    chunks: (frames, channels) samples and their rate (mixed down and resampled to the planner's rate by a
    `MonoResampler`, a new one when the rate changes), or seconds of lost audio (a float: `planner.skip`).
    until: stream time in seconds after which the stream ends (the last window ends there); stopped: asked
    before each chunk, True ends the stream there. Raises what the chunks or the resampler raise (`AudioError`),
    and `AudioError` from `planner.finish` for a stream of less than one frame. Callers: `LiveTagger` (listen),
    `service.stream` (/v1/stream).
    """
    resampler: MonoResampler | None = None
    limit = None if until is None else int(round(until * planner.rate))
    for chunk in chunks:
        if stopped():
            break
        if isinstance(chunk, float):  # seconds of audio lost by a reconnect
            yield planner.skip(chunk), False
            continue
        samples, rate = chunk
        if resampler is None or resampler.rate != rate:
            resampler = MonoResampler(rate, planner.rate)
        mono = resampler(samples)
        if limit is not None:
            mono = mono[: max(0, limit - planner.received)]
        for window in planner.push(mono):
            yield window, True
        if limit is not None and planner.received >= limit:
            break
    else:
        if resampler is not None:
            for window in planner.push(resampler.flush()):
                yield window, False
    for window in planner.finish():
        yield window, False


class LiveEvents:
    """The events of a stream, each given once, when no later window can change it: the answers' own rule
    (`Answers.detect` over the windows so far), so the events of a whole stream are those classify finds in
    the file.

    Why an event is final: windows only lower the score track where they overlap it (the track is the minimum
    over covering windows) and no window starts before `settled` (the last window's start: the next one starts a
    hop later, but the stream's last window, moved back to end at the stream's end, may start anywhere after
    it, `plan_windows`), so the track before `settled` is final; an event that ends more than `min_gap` before it, with no run at or above the
    off threshold starting within `min_gap` after it that goes on to `settled` (which could still reach the
    threshold and merge), is final. Memory: the windows before the earliest point a pending event or a run
    still open could start are dropped (the ones kept are clipped there, which leaves the track from there on
    as it was); at most `max_windows` are kept, beyond which the oldest go (an event longer than that many
    hops then starts where the kept windows do).
    """

    def __init__(self, answers: Any, hop: float, max_windows: int = 4096) -> None:
        self.answers, self.hop, self.max_windows = answers, hop, max_windows
        self.options = answers.events
        self._spans: list[tuple[float, float]] = []
        self._scores: list[np.ndarray] = []
        self._clip_from = 0.0
        self._given: set[tuple[str, float]] = set()  # (label, end) of the events given, from _clip_from on

    def add(self, spans: list[tuple[float, float]], scores: np.ndarray) -> list[Any]:
        """Windows (start, end) s and their selected scores (windows, classes); the events now final."""
        self._spans += spans
        self._scores += list(scores)
        settled = self._spans[-1][0]
        events, track = self._detect()
        on, off = self.options.thresholds(track.labels)
        open_runs = self._open_runs(track, off, settled)
        final, pending = [], []
        for event in events:
            if (event.label, event.end) in self._given:
                continue
            column = track.labels.index(event.label)
            merging = any(event.end <= start < event.end + self.options.min_gap for start in open_runs[column])
            (final if event.end + self.options.min_gap < settled and not merging else pending).append(event)
        for event in final:
            self._given.add((event.label, event.end))
        starts = [event.start for event in pending] + [start for column in open_runs for start in column]
        self._forget_before(min([settled, *starts]))
        return final

    def close(self) -> list[Any]:
        """The events not given yet when the stream ends (one still open is closed at the end)."""
        if not self._spans:
            return []
        events, _ = self._detect()
        return [event for event in events if (event.label, event.end) not in self._given]

    def _detect(self) -> tuple[list[Any], Any]:
        from ast_audio.answers.events import score_track

        spans = [(max(start, self._clip_from), end) for start, end in self._spans]
        scores = np.stack(self._scores)
        return self.answers.detect(spans, scores) or [], score_track(spans, scores, self.answers.labels)

    @staticmethod
    def _open_runs(track: Any, off: np.ndarray, settled: float) -> list[list[float]]:
        """Per class, the starts of the runs at or above its off threshold that reach `settled`."""
        with np.errstate(invalid="ignore"):
            above = track.values >= off
        runs: list[list[float]] = []
        for column in range(above.shape[1]):
            padded = np.concatenate(([False], above[:, column], [False]))
            changes = np.flatnonzero(padded[1:] != padded[:-1])
            runs.append([float(track.edges[first]) for first, last in zip(changes[0::2], changes[1::2])
                         if track.edges[last] >= settled - 1e-9])
        return runs

    def _forget_before(self, cut: float) -> None:
        """Drop the windows that end by `cut` and clip the others there (beyond `max_windows`, the oldest go and
        the clip point moves to the end of the last of them).

        Ends and `cut` are compared as the score track sees them, rounded to `EDGE_DECIMALS`: a window ending a
        hair after `cut` (9.7125 against a next start of 15 * 0.6475 = 9.712499999999999) ends at `cut` on the
        track, so it goes; kept, it would be clipped to an empty window the track refuses."""
        from ast_audio.answers.events import EDGE_DECIMALS

        def edge(seconds: float) -> float:
            return float(np.round(seconds, EDGE_DECIMALS))  # as `score_track` rounds window edges

        cut = max(edge(cut), self._clip_from)
        keep = next((i for i, (_, end) in enumerate(self._spans) if edge(end) > cut), len(self._spans))
        forced = len(self._spans) - self.max_windows
        if forced > keep:
            keep, cut = forced, max(cut, edge(self._spans[forced - 1][1]))
        del self._spans[:keep], self._scores[:keep]
        self._clip_from = max(self._clip_from, cut)
        self._given = {(label, end) for label, end in self._given if end > self._clip_from}

    @property
    def kept(self) -> int:
        """Windows held now."""
        return len(self._spans)


def wall_time(seconds: float | None = None) -> str:
    """`seconds` since the epoch (now when None) as ISO 8601 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    stamp = time.time() if seconds is None else seconds
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stamp)) + f".{int(stamp % 1 * 1000):03d}Z"


def reconnecting(open_chunks: Callable[[], Iterator[Chunk]], attempts: int, *, backoff: float = 1.0,
                 reopen_at_end: bool = False, on_retry: Callable[[int, str], None] | None = None,
                 ) -> Iterator[Chunk | float]:
    """The chunks of `open_chunks()`, reopened when it fails (or ends cleanly, with `reopen_at_end`: by default a
    clean end, all a source announced delivered, is the stream's end, not a drop) up to `attempts`
    times in a row, waiting `backoff` s, then twice that, ... (at most 30 s); after a reopen, the seconds of
    wall time without audio (a float) before the chunks go on (none when no audio had come yet). Raises
    `AudioError` when the attempts are spent (naming the last error). `on_retry(attempt, reason)` is told of
    each retry."""
    failures, lost_at, started = 0, None, False
    while True:
        reason = "the stream ended"
        try:
            for chunk in open_chunks():
                if lost_at is not None:
                    if started:  # stream time begins with the first audio: no gap before it
                        yield time.monotonic() - lost_at
                    lost_at, failures = None, 0
                started = True
                yield chunk
            if not reopen_at_end:
                return
        except AudioError as exc:
            reason = str(exc)
        if failures >= attempts:
            if attempts == 0 and reason == "the stream ended":
                return
            raise AudioError(f"{reason}; gave up after {attempts} reconnect attempt(s)" if attempts else reason)
        lost_at = lost_at if lost_at is not None else time.monotonic()
        failures += 1
        if on_retry is not None:
            on_retry(failures, reason)
        time.sleep(min(30.0, backoff * 2 ** (failures - 1)))
