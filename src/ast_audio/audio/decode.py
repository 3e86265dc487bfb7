"""Decoding audio files to mono float32 at a target rate, whole or a window at a time.

soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis/Opus, MP3, AIFF and more, with seeking, so a window of
a long file is read without decoding the rest; it goes first where it reads a format. WAV files it refuses
or misreads (an unfinished header, a chunk it rejects) are read by `ast_audio.audio.wav`. Other formats
(M4A/AAC, 3GP/AMR, MOV, MKV, WebM, WMA...) are decoded whole by PyAV, a default dependency. Resampling uses
soxr.
"""

from __future__ import annotations

import io
import os
from typing import IO, Any, Union

import numpy as np

from ast_audio.audio.chatter import quiet_decoder_chatter
from ast_audio.audio.wav import WavLayout, WavReader, read_wav_layout
from ast_audio.errors import AudioError, DamagedAudioError, NotAudioError

AudioSource = Union[str, os.PathLike, bytes, bytearray, IO[bytes]]


def _describe(source: AudioSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes of audio>"
    return getattr(source, "name", None) or "<audio stream>"


def to_mono(samples: np.ndarray) -> np.ndarray:
    """(frames, channels) or (frames,) -> (frames,), averaging the channels."""
    return samples if samples.ndim == 1 else samples.mean(axis=1, dtype=np.float32)


def resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr (high quality); a no-op when the rates agree."""
    if orig_rate == target_rate or samples.shape[0] == 0:
        return samples.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(samples, orig_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _wav_layout(opened: Any) -> WavLayout | None:
    """The sample layout of a PCM or float WAV file (path or seekable stream), None for anything else."""
    if isinstance(opened, str):
        try:
            with open(opened, "rb") as handle:
                return read_wav_layout(handle)
        except OSError:
            return None
    try:
        position = opened.tell()
    except (AttributeError, OSError, ValueError):  # not a seekable stream
        return None
    try:
        return read_wav_layout(opened)
    finally:
        opened.seek(position)


def _for_soundfile(opened: Any) -> Any:
    """A path as the bytes the file system holds (a name that is not valid UTF-8 is not re-encoded); a stream
    as it is."""
    return os.fsencode(opened) if isinstance(opened, str) else opened


# A declared length this much longer than what decodes is reported (MP3 encoder delay and padding are a few
# hundredths of a second; a partial download is far more).
SHORTFALL_SECONDS = 0.1
TAIL_SECONDS = 2.0
BLOCK_FRAMES = 4096


def _openable(source: AudioSource, name: str) -> Any:
    """What soundfile and PyAV open: the path (checked to exist, be a readable file and not be empty), or a stream."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if not os.path.lexists(path):
            raise AudioError(f"{path}: no such file")
        if os.path.isdir(path):
            raise AudioError(f"{path}: is a directory, not an audio file")
        try:
            with open(path, "rb") as handle:
                empty = not handle.read(1)
        except PermissionError:
            raise AudioError(f"{path}: permission denied") from None
        except FileNotFoundError:
            raise AudioError(f"{path}: no such file (a broken link?)") from None
        except OSError as exc:
            raise AudioError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        if empty:
            raise AudioError(f"{path}: empty file (0 bytes)")
        return path
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise AudioError("empty audio data (0 bytes)")
        return io.BytesIO(source)
    return source


def _undecodable(opened: Any, name: str) -> AudioError:
    """Why nothing could decode a file, as the error to raise: `DamagedAudioError` for a recognisable container
    that is incomplete, `NotAudioError` for data that is not audio at all."""
    try:
        if hasattr(opened, "seek"):
            opened.seek(0)
            head = opened.read(12)
        else:
            with open(opened, "rb") as handle:
                head = handle.read(12)
    except OSError:
        head = b""
    if head[4:8] == b"ftyp" and not _pyav_hint():
        return DamagedAudioError(f"{name}: an MP4/M4A file without its index (moov atom), so nothing decodes: cut "
                                 "off before its end?")
    return NotAudioError(f"{name}: not an audio file (format not recognised){_pyav_hint()}")


def _pyav_hint() -> str:
    """Where PyAV is missing, what it would add."""
    try:
        import av  # noqa: F401
    except ImportError:
        return ("; soundfile reads WAV, FLAC, OGG/Opus, MP3 and AIFF: for M4A/AAC and other formats, install "
                "PyAV (pip install av)")
    return ""


class AudioFile:
    """An open audio file (path, bytes or binary stream) that reads mono float32 windows at a target rate.

    Its length is what really decodes, not what the header declares: a file cut short (a partial download)
    opens with what decodes and a `warning` saying how much; only a file from which nothing decodes is an
    error.

    >>> with AudioFile("long.flac") as audio:
    ...     clip = audio.read(offset=60.0, duration=10.0, sampling_rate=16000)
    """

    def __init__(self, source: AudioSource) -> None:
        self.name = _describe(source)
        self.warning: str | None = None
        self._sound_file = None
        self._decoded: np.ndarray | None = None  # whole-file samples when decoded by PyAV
        self._wav: WavReader | None = None  # WAV files libsndfile refuses or misreads
        self._wav_owned = False  # the WAV reader's handle was opened here (from a path)
        opened = self._opened = _openable(source, self.name)
        layout = _wav_layout(opened)
        self._open(opened, layout)
        # A finalised WAV header's data size counts (libsndfile clamps it to what the file holds); a
        # placeholder size left by a recorder that never finished means "to the end of the file".
        declared = max(self.frames, layout.declared_frames or 0) if layout else self.frames
        self.frames = self._decodable_frames()
        if self.frames == 0:
            self.close()
            raise AudioError(f"{self.name}: no audio could be decoded (empty, or cut off before its first samples)")
        if declared - self.frames > SHORTFALL_SECONDS * self.sample_rate:
            self.warning = f"decoded {self.frames / self.sample_rate:.1f} s of {declared / self.sample_rate:.1f} s declared"

    def _open(self, opened: Any, layout: WavLayout | None) -> None:
        """soundfile first; for a WAV file it refuses or reads shorter than its layout says (a data size of 0),
        the WAV reader; else PyAV."""
        import soundfile

        try:
            with quiet_decoder_chatter():
                self._sound_file = soundfile.SoundFile(_for_soundfile(opened))
        except (soundfile.LibsndfileError, RuntimeError, TypeError):
            self._sound_file = None
        if self._sound_file is not None and (layout is None or self._sound_file.frames >= layout.frames):
            self.sample_rate = self._sound_file.samplerate
            self.channels = self._sound_file.channels
            self.frames = self._sound_file.frames
            return
        self.close()
        if hasattr(opened, "seek"):
            opened.seek(0)
        if layout is not None and layout.frames > 0:
            handle = open(opened, "rb") if isinstance(opened, str) else opened
            self._wav = WavReader(handle, layout)
            self._wav_owned = isinstance(opened, str)
            self.sample_rate, self.channels, self.frames = layout.sample_rate, layout.channels, layout.frames
            return
        decoded = _decode_with_av(opened)
        if decoded is None:
            raise _undecodable(opened, self.name) from None
        self._decoded, self.sample_rate, declared = decoded
        self.channels = self._decoded.shape[1]
        self.frames = max(self._decoded.shape[0], declared or 0)  # the declared length, checked below

    def _decodable_frames(self) -> int:
        """The samples that really decode. Compressed formats' headers only estimate the length (MP3 encoder
        delay and padding; a partial download keeps the full length in its header), so the last stretch is
        decoded to check it, and the whole stream is counted when that fails."""
        if self._wav is not None:
            return self.frames  # uncompressed: every frame of the layout is there
        if self._sound_file is None:
            return self._decoded.shape[0]
        tail_start = max(0, self.frames - int(TAIL_SECONDS * self.sample_rate))
        with quiet_decoder_chatter():
            if tail_start > 0:
                got = self._count_from(tail_start)
                if got > 0:
                    return tail_start + got
            return self._count_from(0)

    def _count_from(self, start: int) -> int:
        """Decode from `start` to the end, or to the first error (the file is then reopened: libsndfile refuses
        to seek after one); the samples that decoded."""
        import soundfile

        count = 0
        try:  # small blocks: a read that reaches a cut-off end fails whole, losing at most one block
            self._sound_file.seek(start)
            while block := len(self._sound_file.read(BLOCK_FRAMES, dtype="float32", always_2d=True)):
                count += block
        except (soundfile.LibsndfileError, RuntimeError):
            self._reopen()
        return count

    def _reopen(self) -> None:
        import soundfile

        self._sound_file.close()
        if hasattr(self._opened, "seek"):
            self._opened.seek(0)
        self._sound_file = soundfile.SoundFile(_for_soundfile(self._opened))

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / self.sample_rate

    def read(self, offset: float = 0.0, duration: float | None = None, sampling_rate: int | None = None) -> np.ndarray:
        """Mono float32 samples from `offset` seconds for `duration` seconds (to the end when None), resampled
        to `sampling_rate` (the file's own rate when None). Only the requested window is decoded."""
        if offset < 0 or (duration is not None and duration < 0):
            raise AudioError(f"{self.name}: offset and duration must be non-negative, got {offset}, {duration}")
        start = min(int(round(offset * self.sample_rate)), self.frames)
        stop = self.frames if duration is None else min(self.frames, start + int(round(duration * self.sample_rate)))
        samples = self._read_frames(start, stop)
        if not np.isfinite(samples).all():
            bad = int(np.argmax(~np.isfinite(samples).all(axis=-1) if samples.ndim > 1 else ~np.isfinite(samples)))
            raise AudioError(
                f"{self.name}: contains NaN or infinite samples (first at {(start + bad) / self.sample_rate:.3f} s)"
            )
        mono = to_mono(samples)
        return resample(mono, self.sample_rate, sampling_rate or self.sample_rate)

    def _read_frames(self, start: int, stop: int) -> np.ndarray:
        if self._decoded is not None:
            return self._decoded[start:stop]
        if self._wav is not None:
            return self._wav.read(start, stop)
        import soundfile

        with quiet_decoder_chatter():
            try:
                self._sound_file.seek(start)
                return self._sound_file.read(stop - start, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError):
                self._reopen()
            # One read across damage fails whole: take what decodes, a block at a time.
            blocks: list[np.ndarray] = []
            try:
                self._sound_file.seek(start)
                while (wanted := stop - start - sum(map(len, blocks))) > 0:
                    block = self._sound_file.read(min(wanted, BLOCK_FRAMES), dtype="float32", always_2d=True)
                    if not len(block):
                        break
                    blocks.append(block)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                self._reopen()
                if not blocks:
                    raise AudioError(f"{self.name}: corrupt audio at {start / self.sample_rate:.2f} s ({exc})") from None
        return np.concatenate(blocks) if blocks else np.zeros((0, self.channels), np.float32)

    def close(self) -> None:
        if self._sound_file is not None:
            self._sound_file.close()
            self._sound_file = None
        if self._wav is not None and self._wav_owned:
            self._wav.handle.close()
        self._wav = None

    def __enter__(self) -> "AudioFile":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"AudioFile({self.name!r}, {self.sample_rate} Hz, {self.channels} ch, {self.duration:.2f} s)"


def _decode_with_av(opened: Any) -> tuple[np.ndarray, int, int | None] | None:
    """Decode a whole file with PyAV to (frames, channels) float32, its rate, and the frames its container
    declares (None when it does not say); None when PyAV is missing or nothing of the file decodes."""
    try:
        import av
    except ImportError:
        return None
    if isinstance(opened, str) and opened != os.fsencode(opened).decode("utf-8", "replace"):
        with open(opened, "rb") as handle:  # PyAV encodes a path as UTF-8: a name that is not is read as a stream
            return _decode_with_av(handle)
    chunks: list[np.ndarray] = []
    try:
        with av.open(opened) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                return None
            rate = stream.codec_context.sample_rate
            declared = None
            if stream.duration is not None and stream.time_base is not None:
                declared = int(round(float(stream.duration * stream.time_base) * rate))
            try:
                for frame in container.decode(stream):
                    array = frame.to_ndarray()
                    if frame.format.is_planar:
                        array = array.T  # (channels, samples) -> (samples, channels)
                    else:
                        array = array.reshape(-1, len(frame.layout.channels))
                    chunks.append(_pcm_to_float(array))
            except (av.error.FFmpegError, ValueError, OSError):
                if not chunks:  # a stream cut off: keep what decoded
                    return None
    except (av.error.FFmpegError, ValueError, OSError, StopIteration):
        return None
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate, declared
    return np.concatenate(chunks), rate, declared


def _pcm_to_float(array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind == "i":
        return (array / float(np.iinfo(array.dtype).max + 1)).astype(np.float32)
    if array.dtype.kind == "u":  # unsigned 8-bit PCM is centred on 128
        middle = (np.iinfo(array.dtype).max + 1) / 2
        return ((array - middle) / middle).astype(np.float32)
    raise AudioError(f"unsupported sample format {array.dtype}")


def load_audio(
    source: AudioSource, sampling_rate: int | None = 16000, *, offset: float = 0.0, duration: float | None = None
) -> np.ndarray:
    """Decode `source` (a path, bytes, or a binary stream) to mono float32 samples at `sampling_rate`.

    Any channel count is averaged to mono; integer and float sample formats come out in [-1, 1]. `offset`
    and `duration` (seconds) read a window without decoding the rest of the file. `sampling_rate=None`
    keeps the file's own rate. Raises `AudioError` naming the file for anything that cannot be decoded.
    """
    with AudioFile(source) as audio:
        return audio.read(offset=offset, duration=duration, sampling_rate=sampling_rate)


def audio_info(source: AudioSource) -> dict[str, Any]:
    """Sample rate, channels, frames and duration of an audio file, without decoding it."""
    with AudioFile(source) as audio:
        return {
            "sample_rate": audio.sample_rate, "channels": audio.channels, "frames": audio.frames,
            "duration": audio.duration,
        }
