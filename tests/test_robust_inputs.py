"""Inputs as archives hold them: one input failing in any way while the rest go on, file names that are not
UTF-8, WAV files from crashed recorders and editors libsndfile refuses, phone and camera containers in a
folder, and named inputs that do not exist."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from ast_audio.audio.decode import AudioFile
from ast_audio.audio.files import read_manifest
from ast_audio.cli import main
from helpers import save_small_checkpoint
from encoders import encode

RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt"), labels=4)


def tone(seconds: float, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def jsonl_rows(text: str) -> dict[str, dict]:
    return {os.path.basename(row["path"]): row for row in map(json.loads, text.strip().split("\n"))}


# --- one input failing in a way nobody planned for ---------------------------------------------------------

def _fail_decoding(monkeypatch, marker: str, error: Exception) -> None:
    """The decoder raises `error` (a type no decoder documents) when it reads a file whose name holds `marker`."""
    read = AudioFile.read

    def faulty(self, *args, **kwargs):
        if marker in self.name:
            raise error
        return read(self, *args, **kwargs)

    monkeypatch.setattr(AudioFile, "read", faulty)


def _fail_featurising(monkeypatch, error: Exception) -> None:
    """The feature extractor raises `error` on any batch holding a quiet clip (peak under 0.2)."""
    from ast_audio.features.extractor import ASTFeatureExtractor

    call = ASTFeatureExtractor.__call__

    def faulty(self, clips, *args, **kwargs):
        if any(np.abs(clip).max() < 0.2 for clip in clips):
            raise error
        return call(self, clips, *args, **kwargs)

    monkeypatch.setattr(ASTFeatureExtractor, "__call__", faulty)


@pytest.mark.parametrize("stage", ["decoding", "features"])
def test_an_unexpected_exception_in_one_input_is_that_inputs_error_row(stage, checkpoint, tmp_path, monkeypatch,
                                                                       capsys, caplog):
    for name, gain in (("a.wav", 1.0), ("bad.wav", 0.3), ("c.wav", 1.0)):
        sf.write(tmp_path / name, gain * tone(2.0), RATE)
    if stage == "decoding":
        _fail_decoding(monkeypatch, "bad", RuntimeError("injected decoder fault"))
        expected = "bad.wav: RuntimeError: injected decoder fault"
    else:  # the three files share one batch: only the one at fault may fail
        _fail_featurising(monkeypatch, UnicodeEncodeError("utf-8", "x", 0, 1, "injected"))
        expected = "bad.wav: UnicodeEncodeError:"
    caplog.set_level(logging.INFO, logger="ast_audio")
    assert main(["classify", str(tmp_path), "--model", checkpoint, "-f", "jsonl", "-q"]) == 3
    out, err = capsys.readouterr()
    rows = jsonl_rows(out)
    assert sorted(rows) == ["a.wav", "bad.wav", "c.wav"]
    assert rows["bad.wav"]["error"].startswith(str(tmp_path / expected)), rows["bad.wav"]
    assert "labels" in rows["a.wav"] and "labels" in rows["c.wav"]
    assert "1 of 3 files failed" in err and "Traceback" not in err
    # the traceback is logged (shown with -v)
    assert any(record.exc_info and "bad.wav" in record.getMessage() for record in caplog.records)
    if stage == "decoding":
        assert main(["stats", str(tmp_path), "-q"]) == 3
        statistics = json.loads(capsys.readouterr().out)
        assert statistics["files"] == 2
        assert [f["error"] for f in statistics["failed"]] == [str(tmp_path / expected)]


# --- file names as the bytes they are ---------------------------------------------------------------------

@pytest.fixture
def oddly_named(tmp_path):
    """A folder of one clip under three names: plain, one holding the byte 0x85 (a legacy code page's
    ellipsis, not valid UTF-8), and one holding U+0085 (valid UTF-8, a line separator to str.splitlines)."""
    folder = tmp_path / "names"
    folder.mkdir()
    sf.write(folder / "plain.wav", tone(1.0), RATE)
    data = (folder / "plain.wav").read_bytes()
    legacy = os.path.join(os.fsencode(folder), b"caf\x85.wav")
    with open(legacy, "wb") as handle:
        handle.write(data)
    (folder / "next\u0085line.wav").write_bytes(data)
    return folder, os.fsdecode(legacy)


def test_file_names_that_are_not_utf8_are_read_and_written_losslessly(oddly_named, checkpoint, tmp_path, capsys):
    folder, legacy = oddly_named
    names = {"plain.wav", os.path.basename(legacy), "next\u0085line.wav"}
    out = tmp_path / "out.jsonl"
    arguments = ["classify", str(folder), "--model", checkpoint, "-f", "jsonl", "-o", str(out), "-q"]
    assert main(arguments) == 0
    rows = jsonl_rows(out.read_text(encoding="utf-8"))  # valid UTF-8, one row per line
    assert set(rows) == names and all("labels" in row for row in rows.values())
    assert os.path.exists(os.path.join(folder, rows[os.path.basename(legacy)]["path"]))  # lossless: \udc85
    assert main([*arguments, "--resume"]) == 0  # U+0085 in a name does not split the state file's lines
    assert "resuming: 3 of 3 files already done, 0 to do" in capsys.readouterr().err
    plot = str(tmp_path / "p.png")
    assert main(["classify", str(folder), "--model", checkpoint, "-f", "csv", "-q", "--plot", plot]) == 0
    assert "caf\ufffd.wav,clip," in capsys.readouterr().out  # readable: the replacement character
    assert {"p-1.png", "p-2.png", "p-3.png"} <= set(os.listdir(tmp_path))  # plot titles show U+FFFD
    assert main(["embed", str(folder), "--model", checkpoint, "-o", str(tmp_path / "emb"), "-q"]) == 0
    index = jsonl_rows((tmp_path / "emb" / "index.jsonl").read_text(encoding="utf-8"))
    assert set(index) == names and all((tmp_path / "emb" / row["embedding"]).exists() for row in index.values())
    assert main(["stats", str(folder), "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["files"] == 3


def test_a_name_that_is_not_utf8_reaches_a_strict_utf8_stdout(oddly_named, checkpoint):
    """The table on a real stdout whose encoding is strict UTF-8 (where a raw surrogate cannot be written)."""
    folder, legacy = oddly_named
    done = subprocess.run([sys.executable, "-m", "ast_audio", "classify", legacy, "--model", checkpoint, "-q"],
                          capture_output=True, timeout=120, env={**os.environ, "LC_ALL": "C.UTF-8",
                                                                 "PYTHONIOENCODING": "utf-8:strict"})
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert "caf\ufffd.wav  (1.00 s, 1 window" in done.stdout.decode("utf-8")


def test_manifests_split_lines_on_newlines_only(tmp_path):
    names = ["next\u0085line.wav", "para\u2028graph.wav", "plain.wav"]
    (tmp_path / "list.txt").write_text("".join(f"{name}\r\n" for name in names), encoding="utf-8")
    assert [os.path.basename(e.path) for e in read_manifest(str(tmp_path / "list.txt"))] == names
    (tmp_path / "old_mac.txt").write_text("\r".join(names), encoding="utf-8", newline="")
    assert [os.path.basename(e.path) for e in read_manifest(str(tmp_path / "old_mac.txt"))] == names
    (tmp_path / "list.csv").write_text("path,label\n" + "".join(f"{name},dog\n" for name in names), encoding="utf-8")
    assert [(os.path.basename(e.path), e.labels) for e in read_manifest(str(tmp_path / "list.csv"))] == [
        (name, ["dog"]) for name in names]


# --- WAV from crashed recorders and from editors libsndfile refuses ---------------------------------------

def _wav(samples: np.ndarray, subtype: str = "PCM_16", channels: int = 1) -> bytearray:
    buffer = io.BytesIO()
    sf.write(buffer, np.repeat(samples[:, None], channels, axis=1), RATE, format="WAV", subtype=subtype)
    return bytearray(buffer.getvalue())


def _set_sizes(data: bytearray, riff: int | None, size: int) -> bytes:
    """Overwrite the RIFF size (None: keep) and the data chunk's size, as an unfinished header has them."""
    if riff is not None:
        data[4:8] = struct.pack("<I", riff)
    at = data.index(b"data") + 4
    data[at : at + 4] = struct.pack("<I", size)
    return bytes(data)


@pytest.mark.parametrize("riff,size", [(0, 0), (36, 0), (None, 0x7FFFFFFF), (0x7FFFFFFF + 36, 0x7FFFFFFF),
                                       (None, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF)])
def test_wav_from_a_crashed_recorder_reads_to_the_end(riff, size, tmp_path):
    samples = tone(3.0)
    path = tmp_path / "recording.wav"
    path.write_bytes(_set_sizes(_wav(samples), riff, size))
    with AudioFile(path) as audio:
        assert audio.warning is None
        assert audio.duration == 3.0
        np.testing.assert_allclose(audio.read(), samples, atol=1 / 32768)


def test_crashed_recorder_wavs_pass_strict(checkpoint, tmp_path, capsys):
    for riff, size in [(0, 0), (36, 0), (None, 0x7FFFFFFF), (None, 0xFFFFFFFF)]:
        (tmp_path / f"rec-{riff}-{size:x}.wav").write_bytes(_set_sizes(_wav(tone(3.0)), riff, size))
    assert main(["classify", str(tmp_path), "--model", checkpoint, "-f", "jsonl", "-q", "--strict"]) == 0
    rows = jsonl_rows(capsys.readouterr().out)
    assert len(rows) == 4 and all(row["duration"] == 3.0 and "warning" not in row for row in rows.values())


def test_a_finalised_wav_cut_short_keeps_its_warning(tmp_path):
    data = bytes(_wav(tone(3.0)))
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: 44 + 2 * RATE * 2])  # the header says 3 s, 2 s are there
    with AudioFile(path) as audio:
        assert audio.warning == "decoded 2.0 s of 3.0 s declared" and audio.duration == 2.0


@pytest.mark.parametrize("subtype,channels", [("PCM_U8", 1), ("PCM_24", 2), ("PCM_32", 1), ("FLOAT", 2),
                                              ("DOUBLE", 1)])
def test_the_wav_reader_reads_every_layout_as_libsndfile_does(subtype, channels, tmp_path):
    """Data size 0 sends the file to the WAV reader; its samples are libsndfile's of the finished file."""
    finished = _wav(tone(1.0), subtype, channels)
    expected, _ = sf.read(io.BytesIO(bytes(finished)), dtype="float32")
    with AudioFile(_set_sizes(bytearray(finished), 0, 0)) as audio:
        assert audio.channels == channels and audio.warning is None
        np.testing.assert_allclose(audio.read(offset=0.25, duration=0.5), expected[4000:12000].mean(axis=1)
                                   if channels > 1 else expected[4000:12000], atol=1e-6)


def _audition_float_wav(samples: np.ndarray) -> bytes:
    """A 32-bit float WAV as Adobe Audition writes it, with a PEAK chunk libsndfile rejects (its peak list
    does not match the channel count)."""
    def chunk(name: bytes, body: bytes) -> bytes:
        return name + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)

    peak = struct.pack("<II", 1, 0) + struct.pack("<fI", 0.3, 10) * 2
    body = (chunk(b"fmt ", struct.pack("<HHIIHH", 3, 1, RATE, RATE * 4, 4, 32))
            + chunk(b"fact", struct.pack("<I", len(samples))) + chunk(b"PEAK", peak)
            + chunk(b"data", samples.astype("<f4").tobytes()))
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def test_a_wav_libsndfile_refuses_decodes_without_pyav(tmp_path, monkeypatch):
    samples = tone(2.0)
    path = tmp_path / "audition.wav"
    path.write_bytes(_audition_float_wav(samples))
    with pytest.raises(sf.LibsndfileError):
        sf.read(path)
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` fails: as without PyAV
    with AudioFile(path) as audio:
        assert audio.warning is None and audio.duration == 2.0
        np.testing.assert_array_equal(audio.read(), samples)


# --- phone and camera containers, and what a folder scan leaves out ---------------------------------------

CONTAINERS = {
    "phone.m4a": dict(codec="aac", container="mp4"),
    "camera.mp4": dict(codec="aac", container="mp4"),
    "phone.3gp": dict(codec="libopencore_amrnb", container="3gp", rate=8000, bitrate=12200),
    "iphone.mov": dict(codec="aac", container="mov"),
    "screen.mkv": dict(codec="libopus", container="matroska", rate=48000),
    "browser.webm": dict(codec="libopus", container="webm", rate=48000),
    "dictation.wma": dict(codec="wmav2", container="asf", bitrate=64000),
    "book.m4b": dict(codec="aac", container="ipod"),
}


def test_a_folder_of_phone_and_camera_recordings_is_tagged_whole(checkpoint, tmp_path, capsys, caplog):
    pytest.importorskip("av")
    for name, options in CONTAINERS.items():
        encode(tmp_path / name, seconds=1.0, **options)
    (tmp_path / "notes.txt").write_text("not audio")
    caplog.set_level(logging.INFO, logger="ast_audio")
    assert main(["classify", str(tmp_path), "--model", checkpoint, "-f", "jsonl"]) == 0
    out, err = capsys.readouterr()
    rows = jsonl_rows(out)
    assert sorted(rows) == sorted(CONTAINERS)
    assert all("labels" in row and 0.9 < row["duration"] < 1.2 for row in rows.values()), rows
    assert "skipped 1 file not audio by extension" in err
    assert f"ast-audio classify: skipped (not audio by its extension): {tmp_path / 'notes.txt'}" in err  # under -v


# --- named inputs that do not exist -----------------------------------------------------------------------

def test_a_missing_input_is_a_failed_item(checkpoint, tmp_path, capsys):
    good, missing = str(tmp_path / "good.wav"), str(tmp_path / "missing.wav")
    sf.write(good, tone(1.0), RATE)
    assert main(["classify", good, missing, "--model", checkpoint, "-f", "jsonl", "-q"]) == 3
    rows = jsonl_rows(capsys.readouterr().out)
    assert rows["missing.wav"]["error"] == f"{missing}: no such file or directory" and "labels" in rows["good.wav"]
    assert main(["embed", good, missing, "--model", checkpoint, "-o", str(tmp_path / "emb"), "-q"]) == 3
    assert main(["stats", good, missing, "-q"]) == 3
    assert json.loads(capsys.readouterr().out)["failed"][0]["error"] == f"{missing}: no such file or directory"
    assert main(["classify", missing, "--model", checkpoint, "-q"]) == 1  # nothing exists: as before
    assert capsys.readouterr().err.strip().endswith(f"{missing}: no such file or directory")
