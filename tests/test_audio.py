"""Decoding: formats, channel counts, sample formats, resampling, windows, and bad files."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from ast_audio import AudioError, AudioFile, audio_info, find_audio_files, load_audio, read_manifest

RATE = 16000


def tone(freq: float, seconds: float, rate: int, channels: int = 1, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = amplitude * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return mono.astype(np.float32)
    # Channels in phase, with a different gain each, so the mono mix has a known amplitude.
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1).astype(np.float32)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


FORMATS = [
    ("wav", "WAV", "PCM_16", 1e-4),
    ("wav", "WAV", "PCM_24", 1e-6),
    ("wav", "WAV", "PCM_32", 1e-8),
    ("wav", "WAV", "FLOAT", 1e-7),
    ("wav", "WAV", "PCM_U8", 1e-2),
    ("flac", "FLAC", "PCM_16", 1e-4),
    ("flac", "FLAC", "PCM_24", 1e-6),
    ("ogg", "OGG", "VORBIS", 0.05),
    ("mp3", "MP3", "MPEG_LAYER_III", 0.1),
]


@pytest.mark.parametrize(
    "ext,fmt,subtype,tolerance,channels",
    [(*f, channels) for f in FORMATS for channels in (1, 2, 6) if not (f[1] == "MP3" and channels > 2)],  # MP3: <= 2
)
def test_formats_and_channels_decode_to_same_samples(tmp_path, ext, fmt, subtype, tolerance, channels):
    samples = tone(440, 1.0, RATE, channels)
    path = tmp_path / f"clip.{ext}"
    sf.write(path, samples, RATE, format=fmt, subtype=subtype)
    decoded = load_audio(path, RATE)
    expected = samples if channels == 1 else samples.mean(axis=1)
    assert decoded.dtype == np.float32
    if fmt in ("OGG", "MP3"):
        # Lossy codecs add delay and shape the noise: compare level and frequency, not samples.
        assert abs(len(decoded) - len(expected)) <= 2000
        assert abs(dominant_frequency(decoded, RATE) - 440) < 5
        assert abs(np.sqrt(np.mean(decoded**2)) - np.sqrt(np.mean(expected**2))) < tolerance
    else:
        assert decoded.shape == expected.shape
        assert np.abs(decoded - expected).max() <= tolerance


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_keeps_tone_frequency(tmp_path, rate):
    path = tmp_path / "tone.flac"
    sf.write(path, tone(1000, 2.0, rate), rate)
    decoded = load_audio(path, RATE)
    assert abs(len(decoded) - 2 * RATE) <= 1
    assert abs(dominant_frequency(decoded, RATE) - 1000) < 2
    assert abs(np.abs(decoded[1000:-1000]).max() - 0.5) < 0.01  # level preserved away from the edges
    native = load_audio(path, sampling_rate=None)
    assert len(native) == 2 * rate


def test_bytes_and_stream_input(tmp_path):
    samples = tone(300, 0.5, RATE)
    buffer = io.BytesIO()
    sf.write(buffer, samples, RATE, format="FLAC")
    data = buffer.getvalue()
    np.testing.assert_allclose(load_audio(data), samples, atol=1e-4)
    np.testing.assert_allclose(load_audio(io.BytesIO(data)), samples, atol=1e-4)


def test_window_read_without_whole_file(tmp_path):
    rate = 8000
    seconds = np.arange(60 * rate) / rate  # each sample holds its own time in seconds / 100
    path = tmp_path / "long.wav"
    sf.write(path, (seconds / 100).astype(np.float32), rate, subtype="FLOAT")
    with AudioFile(path) as audio:
        assert audio.duration == pytest.approx(60.0) and audio.channels == 1
        window = audio.read(offset=42.0, duration=1.5)
    assert len(window) == int(1.5 * rate)
    assert window[0] == pytest.approx(0.42, abs=1e-6) and window[-1] == pytest.approx((42 + 1.5 - 1 / rate) / 100, abs=1e-6)
    resampled = load_audio(path, RATE, offset=10.0, duration=2.0)
    assert len(resampled) == 2 * RATE
    info = audio_info(path)
    assert info["sample_rate"] == rate and info["frames"] == 60 * rate


def test_m4a_through_pyav_fallback(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.m4a"
    samples = tone(440, 1.0, 44100, channels=2)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100, layout="stereo")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp", layout="stereo")
        frame.rate = 44100
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    decoded = load_audio(path, RATE)
    assert abs(len(decoded) - RATE) < 0.1 * RATE
    assert abs(dominant_frequency(decoded, RATE) - 440) < 5


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(AudioError, match="missing.wav: no such file"):
        load_audio(tmp_path / "missing.wav")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match=r"empty.wav: empty file \(0 bytes\)"):
        load_audio(tmp_path / "empty.wav")
    (tmp_path / "notes.wav").write_text("these are my notes, not audio")
    with pytest.raises(AudioError, match=r"notes.wav: not an audio file \(format not recognised\)$"):
        load_audio(tmp_path / "notes.wav")
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)
    sf.write(tmp_path / "zero.wav", np.zeros((0, 1), np.float32), RATE)
    with pytest.raises(AudioError, match="zero.wav: no audio could be decoded"):
        load_audio(tmp_path / "zero.wav")
    nan = tone(440, 0.5, RATE)
    nan[4000] = np.nan
    sf.write(tmp_path / "nan.wav", nan, RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan.wav: contains NaN or infinite samples \(first at 0.250 s\)"):
        load_audio(tmp_path / "nan.wav")
    with pytest.raises(AudioError, match="empty audio data"):
        load_audio(b"")


@pytest.mark.parametrize("ext,fmt", [("wav", "WAV"), ("flac", "FLAC"), ("mp3", "MP3")])
def test_cut_off_files_give_what_decodes_with_a_warning(tmp_path, ext, fmt):
    """A file cut short (a partial download) opens with the samples that decode and a warning saying how much;
    only a file from which nothing decodes is an error."""
    path = tmp_path / f"cut.{ext}"
    samples = np.random.default_rng(0).standard_normal(4 * RATE).astype(np.float32) * 0.1
    sf.write(path, samples, RATE, format=fmt)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with AudioFile(path) as audio:
        assert audio.warning is not None and audio.warning.endswith("s of 4.0 s declared"), audio.warning
        assert 1.5 < audio.duration < 2.5
        decoded = audio.read()
    assert len(decoded) == audio.frames
    if fmt != "MP3":  # lossless: the samples that decode are the original ones
        np.testing.assert_allclose(decoded, samples[: len(decoded)], atol=1e-4)
    path.write_bytes(data[:40])  # headers only
    with pytest.raises(AudioError, match=rf"cut.{ext}: (no audio could be decoded|not an audio file)"):
        load_audio(path)


def test_find_audio_files_and_manifests(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.wav", "a/b/y.flac", "a/b/readme.txt", "z.mp3"):
        (tmp_path / name).write_bytes(b"x")
    found = find_audio_files([str(tmp_path / "a"), str(tmp_path / "z.mp3")])
    assert [p.replace(str(tmp_path), "") for p in found] == ["/a/x.wav", "/a/b/y.flac", "/z.mp3"]
    assert find_audio_files(str(tmp_path / "**" / "*.flac")) == [str(tmp_path / "a" / "b" / "y.flac")]
    with pytest.raises(AudioError, match="nowhere: no such file or directory"):
        find_audio_files(["nowhere"])

    (tmp_path / "train.json").write_text('{"data": [{"wav": "a/x.wav", "labels": "/m/1,/m/2"}]}')
    entries = read_manifest(str(tmp_path / "train.json"))
    assert entries[0].path == str(tmp_path / "a" / "x.wav") and entries[0].labels == ["/m/1", "/m/2"]
    (tmp_path / "list.csv").write_text("path,label\nz.mp3,dog\na/x.wav,cat,rain\n")
    assert [(e.path.replace(str(tmp_path), ""), e.labels) for e in read_manifest(str(tmp_path / "list.csv"))] == [
        ("/z.mp3", ["dog"]), ("/a/x.wav", ["cat", "rain"])]
    (tmp_path / "bad.json").write_text('{"items": []}')
    with pytest.raises(AudioError, match="bad.json: expected the release's JSON manifest"):
        read_manifest(str(tmp_path / "bad.json"))
