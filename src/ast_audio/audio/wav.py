"""A small reader of PCM and float WAV files, for the files libsndfile refuses or misreads.

Recorders that crash (or are killed, like `arecord`) never finalise the header: the data chunk's size stays
0, 0x7FFFFFFF or 0xFFFFFFFF, and the RIFF size 0 or 36. FFmpeg reads such files to the end; libsndfile reads
a data size of 0 as no audio at all. Some editors (Adobe Audition) write a PEAK chunk libsndfile rejects.
This reader walks the RIFF chunks itself, takes the sample layout from the fmt chunk, and reads from the data
chunk to where its size ends, or to the end of the file when that size is a placeholder.

Layout: "RIFF" size "WAVE", then chunks (id, size, body padded to even length); the format code is 1 (integer
PCM), 3 (IEEE float) or 0xFFFE (WAVE_FORMAT_EXTENSIBLE, whose subformat GUID starts with the code).
Microsoft, "Multimedia Programming Interface and Data Specifications 1.0" (1991), and the
WAVEFORMATEXTENSIBLE documentation.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import IO

import numpy as np

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# Data sizes that mean "not known": left by a recorder that never finalised its header.
PLACEHOLDER_SIZES = frozenset({0, 0x7FFFFFFF, 0xFFFFFFFF})
_MAX_CHUNKS = 1000  # a file of more chunks before its data is not a WAV file a recorder wrote


@dataclass(frozen=True)
class WavLayout:
    """Where a WAV file's samples are and how they are stored.

    `frames`: the frames present in the file (to the end of the data chunk, or of the file when the header's
    size is a placeholder or runs past it). `declared_frames`: what a finalised, self-consistent header
    promises (None when the sizes are placeholders), so a file cut short can be told from an unfinished one.
    """

    channels: int
    sample_rate: int
    sample_bytes: int
    is_float: bool
    big_endian: bool
    data_offset: int
    frames: int
    declared_frames: int | None

    @property
    def block_align(self) -> int:
        return self.sample_bytes * self.channels


def read_wav_layout(handle: IO[bytes]) -> WavLayout | None:
    """The layout of the WAV file open in `handle` (a seekable binary stream, left at an unspecified
    position), or None when it is not a RIFF/RIFX WAVE file of integer PCM (8 to 32 bits) or float (32 or 64
    bits) samples."""
    try:
        file_size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        head = handle.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
            return None
        endian = "<" if head[:4] == b"RIFF" else ">"
        riff_size = struct.unpack(endian + "I", head[4:8])[0]
        fmt = None
        for _ in range(_MAX_CHUNKS):
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk_id, size = header[:4], struct.unpack(endian + "I", header[4:])[0]
            body = handle.tell()
            if chunk_id == b"data":
                return _layout(fmt, endian, body, size, riff_size, file_size)
            if chunk_id == b"fmt ":
                fmt = _format(handle.read(min(size, 64)), endian)
            handle.seek(body + size + (size & 1))
    except (OSError, ValueError, struct.error):
        return None
    return None


def _format(body: bytes, endian: str) -> tuple[int, int, int, bool] | None:
    """(channels, sample rate, bytes per sample, is float) of a fmt chunk, None when unsupported."""
    if len(body) < 16:
        return None
    code, channels, rate, _, block_align, bits = struct.unpack(endian + "HHIIHH", body[:16])
    if code == EXTENSIBLE and len(body) >= 26:
        code = struct.unpack(endian + "H", body[24:26])[0]
    if channels < 1 or rate < 1 or block_align != channels * ((bits + 7) // 8):
        return None
    if code == PCM and 8 <= bits <= 32:
        return channels, rate, (bits + 7) // 8, False
    if code == IEEE_FLOAT and bits in (32, 64):
        return channels, rate, bits // 8, True
    return None


def _layout(fmt: tuple[int, int, int, bool] | None, endian: str, data_offset: int, size: int, riff_size: int,
            file_size: int) -> WavLayout | None:
    if fmt is None:
        return None
    channels, rate, sample_bytes, is_float = fmt
    block_align = channels * sample_bytes
    available = max(0, file_size - data_offset)
    # A header is finalised when neither size is a placeholder and the RIFF size covers the data chunk.
    finalised = (size not in PLACEHOLDER_SIZES and riff_size not in (0, 0xFFFFFFFF)
                 and riff_size + 8 >= data_offset + size)
    data_bytes = min(size, available) if finalised else available
    return WavLayout(channels, rate, sample_bytes, is_float, endian == ">", data_offset, data_bytes // block_align,
                     size // block_align if finalised else None)


class WavReader:
    """Frames of a WAV file by their index, as float32 (frames, channels) in [-1, 1]."""

    def __init__(self, handle: IO[bytes], layout: WavLayout) -> None:
        self.handle, self.layout = handle, layout

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames [start, stop) (clipped to the file's frames)."""
        layout = self.layout
        stop = min(stop, layout.frames)
        if stop <= start:
            return np.zeros((0, layout.channels), np.float32)
        self.handle.seek(layout.data_offset + start * layout.block_align)
        raw = self.handle.read((stop - start) * layout.block_align)
        raw = raw[: len(raw) - len(raw) % layout.block_align]
        return _to_float(raw, layout).reshape(-1, layout.channels)


def _to_float(raw: bytes, layout: WavLayout) -> np.ndarray:
    order = ">" if layout.big_endian else "<"
    width = layout.sample_bytes
    if layout.is_float:
        return np.frombuffer(raw, f"{order}f{width}").astype(np.float32)
    if width == 1:  # 8-bit WAV is unsigned, centred on 128
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 3:  # widen to 32 bits: the three bytes become the top of an int32
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        if layout.big_endian:
            bytes3 = bytes3[:, ::-1]
        wide = np.zeros((len(bytes3), 4), np.uint8)
        wide[:, 1:] = bytes3
        return wide.view("<i4").reshape(-1).astype(np.float32) / 2.0**31
    return np.frombuffer(raw, f"{order}i{width}").astype(np.float32) / float(2 ** (8 * width - 1))
