"""Sample-exact clips of a source file, written as WAV at the source's own rate, for a person to listen to.

A clip of [start, end] seconds with `padding` seconds either side holds the source's samples
`first = round((start - padding) * rate)` to `last = round((end + padding) * rate)` (exclusive), clipped to
the file: `first` at least 0, `last` at most the file's frames (so a clip at a file edge has less padding on
that side; nothing is invented). The samples are the source's own, every channel, at its rate:

- files libsndfile reads (WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...) are read at the stored sample format where
  it is integer PCM (read as left-justified int32, so nothing is rescaled) and written with the same
  subtype (8-bit signed PCM, which WAV lacks, as 16-bit); float and compressed sources as 32-bit float;
- other files (decoded by PyAV) are read as mono float32 (`audio.decode.AudioFile`) and written as 32-bit
  float; their samples are the decoder's.

Files are written atomically and honour the umask.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ast_audio.errors import AudioError
from ast_audio.io_utils import atomic_path


@dataclasses.dataclass(frozen=True)
class ClipSpan:
    """Where a clip lies in its source: samples [`first`, `last`) at `rate` Hz."""

    first: int
    last: int
    rate: int

    @property
    def start(self) -> float:
        """The clip's start in the source, seconds."""
        return self.first / self.rate

    @property
    def end(self) -> float:
        """The clip's end in the source, seconds."""
        return self.last / self.rate


def clip_span(start: float, end: float, padding: float, rate: int, frames: int) -> ClipSpan:
    """The samples of [start - padding, end + padding] seconds at `rate`, clipped to [0, frames] (module
    docstring). Raises `AudioError` for a negative padding or an end before the start."""
    if padding < 0 or end < start:
        raise AudioError(f"a clip needs padding >= 0 and end >= start, got {start:g}-{end:g} s, padding {padding:g}")
    first = min(max(0, int(round((start - padding) * rate))), frames)
    last = min(frames, max(first, int(round((end + padding) * rate))))
    return ClipSpan(first, last, int(rate))


def _soundfile_subtype(subtype: str) -> tuple[str, str]:
    """(dtype to read, WAV subtype to write) for a libsndfile subtype."""
    if subtype in ("PCM_16", "PCM_24", "PCM_32", "PCM_U8"):
        return "int32", subtype
    if subtype == "PCM_S8":
        return "int32", "PCM_16"
    if subtype == "DOUBLE":
        return "float64", "DOUBLE"
    return "float32", "FLOAT"


class ClipCutter:
    """An open source file cutting clips: `cut(start, end, padding, path) -> ClipSpan`. Raises `AudioError`
    naming the file when it cannot be opened or read."""

    def __init__(self, source: str) -> None:
        import soundfile

        self.source = source
        try:
            self._file = soundfile.SoundFile(source)
        except (RuntimeError, soundfile.LibsndfileError, OSError):
            self._file = None
            from ast_audio.audio.decode import AudioFile

            with AudioFile(source) as audio:
                self._samples = audio.read(sampling_rate=None)
                self.rate = int(audio.sample_rate)
            self.frames, self._dtype, self._subtype = len(self._samples), "float32", "FLOAT"
        else:
            self.rate, self.frames = int(self._file.samplerate), int(self._file.frames)
            self._dtype, self._subtype = _soundfile_subtype(self._file.subtype)

    def read(self, span: ClipSpan) -> np.ndarray:
        """The samples of `span`: (samples,) or (samples, channels) of the dtype the clip is written from."""
        if self._file is None:
            return self._samples[span.first : span.last]
        self._file.seek(span.first)
        return self._file.read(span.last - span.first, dtype=self._dtype, always_2d=False)

    def cut(self, start: float, end: float, padding: float, path: str | os.PathLike) -> ClipSpan:
        """Writes the clip of [start, end] s with `padding` to `path` (WAV) and returns where it lies."""
        import soundfile

        span = clip_span(start, end, padding, self.rate, self.frames)
        try:
            samples = self.read(span)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise AudioError(f"{self.source}: cannot read samples {span.first}-{span.last} ({error})") from None
        with atomic_path(path) as tmp:
            soundfile.write(tmp, samples, self.rate, subtype=self._subtype, format="WAV")
        return span

    def close(self) -> None:
        if self._file is not None:
            self._file.close()

    def __enter__(self) -> ClipCutter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
