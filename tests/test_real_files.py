"""Tagging that holds up on files real encoders made, on partial downloads, unreadable files and folders, and
on long jobs: kill and resume, two runs on one output, permissions."""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from ast_audio import ASTForAudioClassification, AudioClassifier, AudioError
from ast_audio.audio.decode import AudioFile
from ast_audio.cli import main
from helpers import save_small_checkpoint
from encoders import cut, encode, prepend_id3_picture

pytest.importorskip("av")

ENCODED = {
    "cbr.mp3": dict(bitrate=128000),
    "vbr_stereo_48k.mp3": dict(rate=48000, channels=2, codec_options={"q": "2"}),
    "no_xing_22k.mp3": dict(rate=22050, bitrate=64000, container_options={"write_xing": "0"}),
    "phone_8k.mp3": dict(rate=8000, bitrate=32000),
    "aac.m4a": dict(codec="aac", container="mp4"),
    "voice.opus": dict(codec="libopus", container="ogg", rate=48000),
    "music.flac": dict(codec="flac", container="flac", channels=2),
}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("encoded")
    paths = {name: encode(folder / name, seed=i, **options) for i, (name, options) in enumerate(ENCODED.items())}
    paths["tagged.mp3"] = prepend_id3_picture(encode(folder / "tagged.mp3", bitrate=128000, seed=9))
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_small_checkpoint(tmp_path_factory.mktemp("ckpt"), labels=4)


@pytest.mark.parametrize("name", [*ENCODED, "tagged.mp3"])
def test_encoder_made_files_decode_whole_and_quietly(encoded, name, capfd):
    with AudioFile(encoded[name]) as audio:
        assert audio.warning is None
        assert 2.95 < audio.duration < 3.1, audio.duration  # encoder delay and padding, at most
        samples = audio.read(sampling_rate=16000)
    assert len(samples) == pytest.approx(audio.duration * 16000, abs=2)
    assert 0.1 < np.abs(samples).max() < 1.0
    assert capfd.readouterr().err == ""  # no decoder library chatter


def test_classify_a_folder_of_encoder_made_files(encoded, checkpoint, capfd):
    folder = os.path.dirname(encoded["cbr.mp3"])
    assert main(["classify", folder, "--model", checkpoint, "-f", "jsonl", "-q"]) == 0
    out, err = capfd.readouterr()
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in rows) == sorted(encoded)
    assert all("error" not in r and "warning" not in r for r in rows)
    assert err == ""


@pytest.mark.parametrize("name", ["cbr.mp3", "vbr_stereo_48k.mp3", "music.flac"])
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_partial_downloads_give_what_decodes_and_a_warning(encoded, checkpoint, tmp_path, name, fraction, capfd):
    partial = cut(encoded[name], fraction, tmp_path / f"partial_{name}")
    result = AudioClassifier.from_pretrained(checkpoint).classify(partial)
    assert result.warning.startswith("decoded ") and result.warning.endswith(" s of 3.0 s declared")
    assert fraction * 3.0 - 0.5 < result.duration < fraction * 3.0 + 0.2
    capfd.readouterr()
    assert main(["classify", partial, "--model", checkpoint, "-f", "jsonl", "-q"]) == 0
    out, err = capfd.readouterr()
    assert json.loads(out)["warning"] == result.warning and "warning: decoded" in err and "Note:" not in err
    assert main(["classify", partial, "--model", checkpoint, "-f", "jsonl", "-q", "--strict"]) == 1
    out, err = capfd.readouterr()
    assert json.loads(out)["error"].endswith(f"{result.warning} (--strict)")


def test_undecodable_files_say_what_is_wrong(encoded, tmp_path):
    text = tmp_path / "notes.mp3"
    text.write_text("these are my notes\n" * 20)
    with pytest.raises(AudioError, match=r"notes.mp3: not an audio file \(format not recognised\)$"):
        AudioFile(text)  # PyAV is installed here: no hint to install it
    with pytest.raises(AudioError, match="an MP4/M4A file without its index"):
        AudioFile(cut(encoded["aac.m4a"], 0.5, tmp_path / "half.m4a"))
    with pytest.raises(AudioError, match="missing.flac: no such file$"):
        AudioFile(tmp_path / "missing.flac")


def _without_file_override_capabilities() -> None:
    """In the child: drop CAP_DAC_OVERRIDE (1) and CAP_DAC_READ_SEARCH (2), so root obeys file permissions."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_cli(arguments: list[str], *, preexec=None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ast_audio", *arguments], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=preexec)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux capabilities")
def test_unreadable_files_and_folders_are_failed_items(tmp_path, checkpoint):
    root = tmp_path / "library"
    (root / "open").mkdir(parents=True)
    (root / "locked").mkdir()
    sf.write(root / "open" / "a.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    sf.write(root / "secret.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    sf.write(root / "locked" / "b.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    os.chmod(root / "secret.wav", 0)
    os.chmod(root / "locked", 0)
    try:
        done = run_cli(["classify", str(root), "--model", checkpoint, "-f", "jsonl", "-q"],
                       preexec=_without_file_override_capabilities)
    finally:
        os.chmod(root / "locked", 0o755)
    assert done.returncode == 3, done.stderr
    rows = {os.path.relpath(r["path"], root): r for r in map(json.loads, done.stdout.splitlines())}
    assert set(rows) == {"locked", "open/a.wav", "secret.wav"}
    assert rows["secret.wav"]["error"].endswith("secret.wav: permission denied")
    assert rows["locked"]["error"].endswith("folder cannot be read (permission denied)")
    assert "labels" in rows["open/a.wav"] and "Traceback" not in done.stderr
    assert "2 of 3 files failed" in done.stderr


def test_symlinked_folders_are_followed_once(tmp_path):
    from ast_audio.audio.files import scan_inputs

    (tmp_path / "real" / "deep").mkdir(parents=True)
    (tmp_path / "real" / "deep" / "x.wav").write_bytes(b"x")
    (tmp_path / "top").mkdir()
    (tmp_path / "top" / "y.flac").write_bytes(b"y")
    os.symlink(tmp_path / "real", tmp_path / "top" / "linked")
    os.symlink(tmp_path / "top", tmp_path / "real" / "deep" / "loop")  # a cycle back up
    listing = scan_inputs([str(tmp_path / "top")])
    found = sorted(os.path.relpath(p, tmp_path) for p in listing.files)
    assert found == ["top/linked/deep/x.wav", "top/y.flac"] and listing.problems == []


# ------------------------------------------------------------------------------------------------- long jobs
@pytest.fixture(scope="module")
def many_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(60):
        sf.write(folder / f"clip{i:03d}.flac", (0.1 * rng.standard_normal(40000)).astype(np.float32), 16000)
    return folder


def _kill_when_recorded(process: subprocess.Popen, state: str, entries: int, timeout: float = 120) -> int:
    """SIGKILL `process` once the output's state file records `entries` finished inputs; returns how many."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if os.path.exists(state):
            with open(state, encoding="utf-8") as handle:
                recorded = sum(1 for line in handle) - 1
            if recorded >= entries:
                process.send_signal(signal.SIGKILL)
                process.wait()
                return recorded
        time.sleep(0.005)
    process.kill()
    raise AssertionError(f"the run ended (code {process.poll()}) before {entries} inputs were recorded")


@pytest.mark.parametrize("command", ["classify", "embed"])
def test_killed_run_resumes_without_redoing_finished_files(many_files, checkpoint, tmp_path, command):
    output = tmp_path / ("out.jsonl" if command == "classify" else "embeddings")
    target = ["-o", str(output)] + (["-f", "jsonl"] if command == "classify" else [])
    arguments = [command, str(many_files), "--model", checkpoint, "--batch-size", "1", "--threads", "1", *target]
    index = output if command == "classify" else output / "index.jsonl"
    state = index.parent / f".{index.name}.state.jsonl"
    process = subprocess.Popen([sys.executable, "-m", "ast_audio", *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _kill_when_recorded(process, str(state), 10)
    assert not index.exists() and os.path.exists(f"{index}.partial")
    recorded = sum(1 for _ in open(state)) - 1
    again = run_cli([*arguments, "--resume"])
    assert again.returncode == 0, again.stderr
    done_before = int(again.stderr.split("resuming: ")[1].split(" of ")[0])
    assert done_before >= recorded - 1 and f"{60 - done_before} to do" in again.stderr
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    assert sorted(r["path"] for r in rows) == sorted(str(p) for p in many_files.iterdir())  # each exactly once
    if command == "embed":
        assert len(list(output.glob("*.npy"))) == 60
    # Options that change the numbers refuse to resume and say which differ.
    refused = run_cli([*arguments, "--resume", "--hop", "0.3"])
    assert refused.returncode == 2 and "cannot resume" in refused.stderr and "hop was default, now 0.3" in refused.stderr


def test_resume_redoes_changed_files_and_keeps_every_input_once(tmp_path, checkpoint):
    folder = tmp_path / "audio"
    folder.mkdir()
    for i in range(4):
        sf.write(folder / f"{i}.wav", (0.1 * np.random.default_rng(i).standard_normal(20000)).astype(np.float32), 16000)
    output = tmp_path / "out.json"
    arguments = ["classify", str(folder), "--model", checkpoint, "-f", "json", "-o", str(output), "-q"]
    assert main(arguments) == 0
    first = {r["path"]: r for r in json.loads(output.read_text())}
    sf.write(folder / "2.wav", (0.1 * np.random.default_rng(7).standard_normal(30000)).astype(np.float32), 16000)
    assert main([*arguments, "--resume"]) == 0
    second = json.loads(output.read_text())
    assert len(second) == 4 and len({r["path"] for r in second}) == 4
    changed = next(r for r in second if r["path"].endswith("2.wav"))
    assert changed["duration"] == pytest.approx(30000 / 16000) != first[changed["path"]]["duration"]
    assert all(r == first[r["path"]] for r in second if not r["path"].endswith("2.wav"))


def test_two_runs_on_one_output_one_proceeds(many_files, checkpoint, tmp_path, capsys):
    output = tmp_path / "shared.jsonl"
    arguments = ["classify", str(many_files), "--model", checkpoint, "-f", "jsonl", "-o", str(output),
                 "--batch-size", "1", "--threads", "1"]
    first = subprocess.Popen([sys.executable, "-m", "ast_audio", *arguments], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    lock = tmp_path / ".shared.jsonl.lock"
    deadline = time.monotonic() + 60
    while not (lock.exists() and lock.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.002)
    second = main(arguments)  # in this process: it asks for the lock within milliseconds of the first taking it
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    assert second == 1
    assert f"another ast-audio run (process {first.pid}) is writing this output" in capsys.readouterr().err
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(rows) == 60 and len({r["path"] for r in rows}) == 60


def test_written_files_honour_the_umask(tmp_path, checkpoint, many_files):
    previous = os.umask(0o022)
    try:
        clip = str(next(many_files.iterdir()))
        assert main(["classify", clip, "--model", checkpoint, "-f", "json", "-o", str(tmp_path / "c" / "out.json"),
                     "--plot", str(tmp_path / "c" / "plot.png"), "-q"]) == 0
        assert main(["embed", clip, "--model", checkpoint, "-o", str(tmp_path / "e"), "--per-window", "-q"]) == 0
        assert main(["stats", clip, "--output", str(tmp_path / "s" / "stats.json")]) == 0
        assert main(["export", checkpoint, "--onnx", str(tmp_path / "x" / "model.onnx"), "--no-verify"]) == 0
        model = ASTForAudioClassification.from_pretrained(checkpoint)
        model.save_pretrained(tmp_path / "m")
    finally:
        os.umask(previous)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert len(written) >= 10
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written}
    assert set(modes.values()) == {"0o644"}, modes


@pytest.mark.parametrize("flags,message", [
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--batch-size", "0"], "batch_size must be at least 1"),
    (["--resume"], "--resume needs --output FILE"),
    (["--threads", "-1"], "thread counts must be at least 1"),
    (["--window", "20"], "window 20 s is outside 0.175-1.295 s"),
])
def test_bad_arguments_get_one_line(checkpoint, many_files, flags, message, capsys):
    code = main(["classify", str(next(many_files.iterdir())), "--model", checkpoint, *flags])
    err = capsys.readouterr().err
    assert code in (1, 2) and message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_progress_follows_audio_within_a_long_file(checkpoint, tmp_path, capsys):
    path = tmp_path / "long.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(16000 * 30)).astype(np.float32), 16000)
    classifier = AudioClassifier.from_pretrained(checkpoint, batch_size=4)
    seen: list[float] = []
    results = classifier.iter_classify([str(path)], progress=seen.append)
    result = next(results)
    assert len(seen) >= 10 and sum(seen) == pytest.approx(30.0)  # many updates before the one result
    assert main(["classify", str(path), "--model", checkpoint, "-f", "jsonl"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ast-audio classify: 1 of 1 files, 0.008 h of audio in ") and "x real time" in err[-1]
    assert result.duration == pytest.approx(30.0)


def test_plot_has_distinct_colours_and_a_frequency_axis(checkpoint, tmp_path):
    pytest.importorskip("matplotlib")
    from ast_audio.jobs.plot import draw_result

    path = tmp_path / "short.wav"
    sf.write(path, (0.1 * np.random.default_rng(0).standard_normal(12000)).astype(np.float32), 16000)
    result = AudioClassifier.from_pretrained(checkpoint).classify(str(path))
    assert len(result.windows) == 1
    figure = draw_result(result, top=4)
    upper, lower = figure.axes[:2]
    colours = [tuple(collection.get_colors()[0]) for collection in lower.collections]
    assert len(colours) == 4 and len(set(colours)) == 4
    assert [text.get_text() for text in lower.get_legend().get_texts()] == [i["label"] for i in result.top(4)]
    assert upper.get_ylabel() == "frequency (Hz)"
    assert [t.get_text() for t in upper.get_yticklabels()][:3] == ["50", "100", "250"]
