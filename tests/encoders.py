"""Audio files made by real encoders (FFmpeg's libmp3lame, AAC, libopus, FLAC through PyAV), as other programs
write them, for tests of decoding, errors and jobs."""

from __future__ import annotations

import struct

import numpy as np


def reference_signal(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """(samples, channels) float32: a tone per channel and a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    columns = [0.3 * np.sin(2 * np.pi * (330 + 110 * c + 40 * seed) * t) for c in range(channels)]
    return (np.stack(columns, axis=1) + 0.02 * rng.standard_normal((len(t), channels))).astype(np.float32)


def encode(path, seconds: float = 3.0, rate: int = 44100, channels: int = 1, codec: str = "libmp3lame",
           container: str = "mp3", bitrate: int | None = None, codec_options: dict | None = None,
           container_options: dict | None = None, seed: int = 0) -> str:
    """Encode `reference_signal` with a real encoder into `path`; returns the path."""
    import av

    samples = reference_signal(seconds, rate, channels, seed).T  # (channels, samples)
    with av.open(str(path), "w", format=container, options=container_options or {}) as output:
        stream = output.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
        if bitrate:
            stream.bit_rate = bitrate
        if codec_options:
            stream.options = codec_options
        sample_format = stream.codec_context.format.name
        data = _to_format(samples, sample_format)
        size = stream.codec_context.frame_size or 1024
        for start in range(0, data.shape[1], size):
            chunk = np.ascontiguousarray(data[:, start : start + size])
            if not sample_format.endswith("p"):  # packed: one plane of interleaved samples
                chunk = np.ascontiguousarray(chunk.T.reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format=sample_format, layout=stream.layout.name)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    return str(path)


def _to_format(samples: np.ndarray, sample_format: str) -> np.ndarray:
    kind = sample_format.rstrip("p")
    if kind == "s16":
        return (samples * 32767).astype(np.int16)
    if kind == "s32":
        return (samples * (2**31 - 1)).astype(np.int32)
    if kind == "flt":
        return samples.astype(np.float32)
    if kind == "dbl":
        return samples.astype(np.float64)
    raise ValueError(f"sample format {sample_format}")


def prepend_id3_picture(path, picture_bytes: int = 40_000) -> str:
    """Put an ID3v2.3 tag with a title and an embedded cover picture (APIC) before the file's audio, as
    taggers and stores do."""
    def frame(frame_id: bytes, body: bytes) -> bytes:
        return frame_id + struct.pack(">I", len(body)) + b"\x00\x00" + body

    picture = b"\xff\xd8\xff\xe0" + bytes(np.random.default_rng(1).integers(0, 256, picture_bytes, dtype=np.uint8))
    frames = frame(b"TIT2", b"\x00A test title") + frame(b"APIC", b"\x00image/jpeg\x00\x03cover\x00" + picture)
    size = len(frames)
    syncsafe = bytes([(size >> 21) & 0x7F, (size >> 14) & 0x7F, (size >> 7) & 0x7F, size & 0x7F])
    with open(path, "rb") as handle:
        audio = handle.read()
    with open(path, "wb") as handle:
        handle.write(b"ID3\x03\x00\x00" + syncsafe + frames + audio)
    return str(path)


def cut(path, fraction: float, target) -> str:
    """The first `fraction` of a file's bytes (a partial download)."""
    with open(path, "rb") as handle:
        data = handle.read()
    with open(target, "wb") as handle:
        handle.write(data[: int(len(data) * fraction)])
    return str(target)
