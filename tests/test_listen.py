"""`ast-audio listen`: a stream gives the file's windows and scores (stdin WAV, raw PCM, loopback HTTP), bad
input is one line, --duration and SIGTERM stop it cleanly, and the stream's memory stays bounded."""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from ast_audio.errors import AudioError
from ast_audio.inference.stream import StreamWindows, reconnecting
from ast_audio.inference.windows import plan_windows
from helpers import save_small_checkpoint

WINDOW, HOP, RATE = 1.0, 0.5, 16000
LISTEN = [sys.executable, "-m", "ast_audio", "listen"]


@pytest.fixture(scope="module")
def stream_case(tmp_path_factory):
    """A tiny checkpoint, a 3.3 s stereo 16-bit WAV and classify's JSON record of it."""
    folder = tmp_path_factory.mktemp("listen")
    model = save_small_checkpoint(folder / "model", labels=6)
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * RATE)) / RATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1200 * t) + 0.1 * rng.standard_normal(len(t))
    wav = folder / "clip.wav"
    sf.write(wav, np.stack([left, right], axis=1).astype(np.float32), RATE, subtype="PCM_16")
    done = subprocess.run([sys.executable, "-m", "ast_audio", "classify", str(wav), "-m", model, "--window",
                           str(WINDOW), "--hop", str(HOP), "--format", "json", "-q"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    record = record[0] if isinstance(record, list) else record
    return model, wav, record["windows"]


def listen(model: str, *arguments: str, stdin=None, data: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*LISTEN, *arguments, "-m", model, "--window", str(WINDOW), "--hop", str(HOP)],
                          input=data, stdin=stdin, capture_output=True, timeout=120)


def window_lines(stdout: bytes) -> list[dict]:
    return [json.loads(line) for line in stdout.decode().splitlines()]


def spans(windows) -> list[float]:
    """Starts and ends, flat: [start 0, end 0, start 1, ...] (records or (start, end) pairs)."""
    pairs = [(w["start"], w["end"]) if isinstance(w, dict) else (w.start, w.end) if hasattr(w, "start") else w
             for w in windows]
    return [value for pair in pairs for value in pair]


def assert_same_windows(streamed: list[dict], expected: list[dict], wall_time: bool = True) -> None:
    assert spans(streamed) == pytest.approx(spans(expected))
    for got, want in zip(streamed, expected):
        assert [item["label"] for item in got["labels"]] == [item["label"] for item in want["labels"]]
        assert [item["score"] for item in got["labels"]] == pytest.approx(
            [item["score"] for item in want["labels"]], abs=1e-4)
        if wall_time:  # the command's lines carry it
            assert got["wall_time"].endswith("Z") and got["wall_time"][10] == "T"


def test_wav_on_stdin_gives_classify_windows(stream_case):
    model, wav, expected = stream_case
    with open(wav, "rb") as handle:
        done = listen(model, "-", stdin=handle)
    assert done.returncode == 0, done.stderr
    assert len(expected) == 6  # the last window, [2.5, 3.3], is cut at the end as in the file
    assert_same_windows(window_lines(done.stdout), expected)
    assert b"6 window(s) over 3.30 s" in done.stderr


def test_ffmpeg_at_real_time_on_stdin_gives_classify_windows(stream_case):
    """The issue's own pipeline: `ffmpeg -re -i FILE -f wav - | ast-audio listen -` (a WAV stream of unknown
    length, written at the file's pace) gives classify's windows within 1e-4."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("needs the ffmpeg program (.ci/run installs it)")
    model, wav, expected = stream_case
    source = subprocess.Popen([ffmpeg, "-v", "error", "-re", "-i", str(wav), "-f", "wav", "-"], stdout=subprocess.PIPE)
    try:
        done = listen(model, "-", stdin=source.stdout)
    finally:
        source.stdout.close()
        assert source.wait(timeout=30) == 0
    assert done.returncode == 0, done.stderr
    assert_same_windows(window_lines(done.stdout), expected)


def test_raw_pcm_with_duration(stream_case):
    model, wav, expected = stream_case
    samples, _ = sf.read(wav, dtype="int16")
    done = listen(model, "-", "--raw-format", "s16le", "--rate", str(RATE), "--channels", "2", "--duration", "2.2",
                  data=samples.astype("<i2").tobytes())
    assert done.returncode == 0, done.stderr
    lines = window_lines(done.stdout)
    assert spans(lines) == pytest.approx(spans(plan_windows(2.2, WINDOW, HOP)))
    assert_same_windows(lines[:3], expected[:3])  # the windows before the cut are the file's
    assert b"--duration 2.2 s reached" in done.stderr


class _ChunkedWav(http.server.BaseHTTPRequestHandler):
    """Serves the test's WAV in small pieces, as a stream without a length (HTTP/1.0, ends when it closes)."""

    payload = b""

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.end_headers()
        for start in range(0, len(self.payload), 8192):
            self.wfile.write(self.payload[start : start + 8192])
            self.wfile.flush()
            time.sleep(0.005)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serving(wav, kind: type = _ChunkedWav):
    """The URL of `wav` served by a loopback HTTP server (`kind`: in chunks by default), stopped on leaving."""
    handler = type("Handler", (kind,), {"payload": wav.read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.wav"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_http_stream_gives_classify_windows(stream_case):
    model, wav, expected = stream_case
    with serving(wav) as url:
        done = listen(model, url, "--no-realtime")
    assert done.returncode == 0, done.stderr
    assert_same_windows(window_lines(done.stdout), expected)


def test_garbage_on_stdin_is_one_line(stream_case):
    model, _, _ = stream_case
    done = listen(model, "-", data=os.urandom(3000))
    assert done.returncode == 1
    assert done.stdout == b""
    message = done.stderr.decode().strip()
    assert message.startswith("ast-audio listen: error: standard input") and "\n" not in message


@pytest.mark.parametrize("arguments, message", [
    (["-", "--raw-format", "s16le", "--rate", "1"], "--rate 1 is out of range: raw PCM must be 1000 to 768000 Hz"),
    (["-", "--raw-format", "s16le", "--rate", "0"], "--rate 0 is out of range"),
    (["-", "--rate", "16000"], "--rate and --channels describe raw PCM (with --raw-format)"),
    ([], "give a SOURCE (- for standard input, a URL or a path) or --capture FORMAT:NAME\n"),
    (["-", "--capture", "alsa:default"], "give a SOURCE or --capture, not both")])
def test_stream_options_out_of_range_are_usage_errors(arguments, message, capsys):
    """Before any model loads: each a one-line usage error, exit 2."""
    from ast_audio.cli import main

    assert main(["listen", *arguments, "-m", "no-such-model"]) == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.count("\n") == 1, stderr


def test_empty_stdin_says_it_is_empty(stream_case):
    model, _, _ = stream_case
    done = listen(model, "-", data=b"")
    assert done.returncode == 1
    assert done.stderr.decode().strip() == ("ast-audio listen: error: standard input: empty: the stream ended "
                                            "before any data")


def test_sigterm_stops_cleanly(stream_case):
    model, _, _ = stream_case
    process = subprocess.Popen([*LISTEN, "-", "--raw-format", "f32le", "--rate", str(RATE), "-m", model,
                                "--window", str(WINDOW), "--hop", str(HOP)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        process.stdin.write(np.zeros(int(1.6 * RATE), "<f4").tobytes())
        process.stdin.flush()  # the pipe stays open: the stream goes on until stopped
        first = json.loads(process.stdout.readline())
        assert (first["start"], first["end"]) == (0.0, 1.0)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert b"stopped by SIGTERM" in stderr


def stopped_listen(model: str, arguments: list[str], data: bytes, lines: int, number: int) -> tuple[list[dict], str]:
    """listen on a pipe that gets `data`, then stays open and silent: once `lines` lines are out, signal
    `number`; (the lines, stderr) after it exits 0."""
    process = subprocess.Popen([*LISTEN, "-", *arguments, "-m", model, "--window", str(WINDOW), "--hop", str(HOP)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    watchdog = threading.Timer(60, process.kill)  # a line that never comes fails the test instead of hanging it
    watchdog.start()
    try:
        process.stdin.write(data)
        process.stdin.flush()
        out = [json.loads(process.stdout.readline()) for _ in range(lines)]
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert b"Fatal" not in stderr
    return out + window_lines(stdout), stderr.decode()


def test_ctrl_c_on_a_silent_pipe_exits_cleanly(stream_case):
    """SIGINT while the reader waits on a pipe that stays open and silent (after 1.2 s of audio, whose first
    window says listen is up): exit 0 (no fatal error on stdin's lock at shutdown), the closing line naming the
    signal."""
    model, _, _ = stream_case
    data = np.zeros(int(1.2 * RATE), "<i2").tobytes()
    lines, stderr = stopped_listen(model, ["--raw-format", "s16le", "--rate", str(RATE)], data, 1, signal.SIGINT)
    assert spans(lines) == pytest.approx(spans(plan_windows(1.2, WINDOW, HOP)))
    assert "ast-audio listen: stopped by SIGINT: 2 window(s) over 1.20 s" in stderr


def pipe_wav(samples: np.ndarray) -> bytes:
    """16 kHz mono 16-bit WAV as ffmpeg writes one to a pipe: its lengths unknown (0xFFFFFFFF)."""
    unknown = (0xFFFFFFFF).to_bytes(4, "little")
    header = (b"RIFF" + unknown + b"WAVEfmt " + (16).to_bytes(4, "little") + (1).to_bytes(2, "little")
              + (1).to_bytes(2, "little") + RATE.to_bytes(4, "little") + (2 * RATE).to_bytes(4, "little")
              + (2).to_bytes(2, "little") + (16).to_bytes(2, "little") + b"data" + unknown)
    return header + (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def test_a_wav_pipe_gives_windows_as_its_audio_arrives(stream_case):
    """1.2 s of a WAV on a pipe held open (38 KB, less than the 64 KiB FFmpeg's WAV demuxer holds back): its
    first window comes out without waiting for more."""
    model, _, _ = stream_case
    samples = (0.1 * np.random.default_rng(4).standard_normal(int(1.2 * RATE))).astype(np.float32)
    lines, stderr = stopped_listen(model, [], pipe_wav(samples), 1, signal.SIGTERM)
    assert spans(lines) == pytest.approx(spans(plan_windows(1.2, WINDOW, HOP)))
    assert "stopped by SIGTERM: 2 window(s) over 1.20 s" in stderr


@pytest.mark.parametrize("number, container", [(signal.SIGINT, False), (signal.SIGTERM, True)])
def test_a_signal_ends_the_stream_as_its_end_would(stream_case, number, container):
    """5.3 s of audio, then silence, then a signal: every window of the audio that arrived is scored, the last
    moved back to end there (as --duration ends a stream), and the event still open is closed at 5.3 s."""
    model, _, _ = stream_case
    samples = (0.1 * np.random.default_rng(2).standard_normal(int(5.3 * RATE))).astype(np.float32)
    if container:
        arguments, data = [], pipe_wav(samples)
    else:
        arguments, data = ["--raw-format", "f32le", "--rate", str(RATE)], samples.astype("<f4").tobytes()
    lines, stderr = stopped_listen(model, [*arguments, "--events", "--threshold", "0", "--threshold-off", "0"],
                                   data, 9, number)
    windows = [line for line in lines if "event" not in line]
    assert spans(windows) == pytest.approx(spans(plan_windows(5.3, WINDOW, HOP)))
    events = [line["event"] for line in lines if "event" in line]
    assert events and all((e["start"], e["end"]) == pytest.approx((0.0, 5.3)) for e in events)
    name = signal.Signals(number).name
    assert f"ast-audio listen: stopped by {name}: {len(windows)} window(s) over 5.30 s" in stderr


@pytest.mark.parametrize("hop", [0.5, 0.25, 1.0, 1.7])
def test_stream_windows_are_the_files_and_memory_is_bounded(hop):
    """Random chunk sizes in; the windows' samples are those a file read gives (`plan_windows`, the last cut
    at the end and padded to a frame), and the ring never holds more than window + hop + one chunk."""
    rng = np.random.default_rng(1)
    samples = rng.standard_normal(int(4.37 * RATE)).astype(np.float32)
    chunk = 1000
    planner = StreamWindows(RATE, WINDOW, hop, frame_samples=400, chunk_samples=chunk)
    windows, position = [], 0
    while position < len(samples):
        size = int(rng.integers(1, 5000))  # pushes longer than a chunk are split
        windows += planner.push(samples[position : position + size])
        position += size
    windows += planner.finish()
    expected = plan_windows(len(samples) / RATE, WINDOW, hop)
    assert spans(windows) == pytest.approx(spans(expected))
    for window, (start, end) in zip(windows, expected):
        begin = int(round(start * RATE))
        want = samples[begin : begin + int(round((end - start) * RATE))]
        np.testing.assert_array_equal(window.samples[: len(want)], want)
    assert planner.ring.peak <= int(round(WINDOW * RATE)) + int(round(hop * RATE)) + chunk
    assert planner.ring.capacity <= int(round(WINDOW * RATE)) + int(round(hop * RATE)) + chunk + 2


def test_stream_window_times_are_plan_windows_exactly():
    """A tiny checkpoint's default window and hop (1.295 s, 0.6475 s): the stream's window times are the very
    floats `plan_windows` gives the file (window 15 starts at 9.7125, not 15 * 0.6475 = 9.712499999999999)."""
    planner = StreamWindows(RATE, 1.295, 0.6475, frame_samples=400)
    windows = planner.push(np.zeros(int(16.0 * RATE), np.float32)) + planner.finish()
    assert [(w.start, w.end) for w in windows] == plan_windows(16.0, 1.295, 0.6475)


def test_a_gap_moves_stream_time_and_skips_windows_over_it():
    planner = StreamWindows(RATE, WINDOW, HOP, frame_samples=400)
    first = planner.push(np.ones(int(1.2 * RATE), np.float32))
    gap = planner.skip(0.9)  # 1.2 s -> 2.1 s lost
    after = planner.push(np.ones(int(1.5 * RATE), np.float32)) + planner.finish()
    assert [(w.start, w.end) for w in first] == [(0.0, 1.0)]
    assert (gap.start, gap.end) == pytest.approx((1.2, 2.1))
    assert spans(after) == pytest.approx([2.5, 3.5, 2.6, 3.6])  # the last moved back to end at the end


def test_reconnecting_reports_lost_time_then_gives_up():
    opened = []

    def source():
        opened.append(len(opened))
        if len(opened) in (2, 3) or len(opened) >= 5:
            raise AudioError("http://x: cannot be opened")
        yield np.zeros((10, 1), np.float32), RATE
        raise AudioError("http://x: the stream broke off")

    items = []
    with pytest.raises(AudioError, match="cannot be opened; gave up after 3 reconnect attempt"):
        for item in reconnecting(source, 3, backoff=0.01):
            items.append(item)
    assert len(opened) == 7  # a break, 2 failed reopens, a third that breaks again, 3 failed reopens
    assert isinstance(items[0], tuple) and isinstance(items[1], float) and items[1] > 0.0
    assert isinstance(items[2], tuple) and len(items) == 3


def test_a_model_slower_than_a_live_stream_drops_whole_windows(stream_case):
    """realtime: windows that find the queue full are dropped and counted, never queued without bound; the
    windows scored are the stream's own (their scores are the file's)."""
    from ast_audio.inference.options import InferenceOptions
    from ast_audio.inference.stream import LiveTagger

    model, wav, expected = stream_case
    classifier = InferenceOptions(model=model, window=WINDOW, hop=HOP, device="cpu", threads=1).load()
    samples, _ = sf.read(wav, dtype="float32")
    all_read = threading.Event()

    class HeldRunner:  # the real runner, whose first batch waits until the whole stream has been read
        def __init__(self, runner):
            self.runner, self.timing, self.labels = runner, runner.timing, runner.labels

        def features(self, clips):
            return self.runner.features(clips)

        def infer(self, features):
            assert all_read.wait(timeout=60)
            return self.runner.infer(features)

    def chunks():
        for start in range(0, len(samples), 1600):
            yield samples[start : start + 1600], RATE
        all_read.set()

    tagger = LiveTagger(HeldRunner(classifier.runner), None, window=WINDOW, hop=HOP, realtime=True,
                        queue_windows=1, batch_size=1)
    records = list(tagger.run(chunks()))
    assert tagger.dropped > 0 and len(records) + tagger.dropped == len(expected)
    by_start = {window["start"]: window for window in expected}
    for record in records:
        assert_same_windows([record], [by_start[record["start"]]], wall_time=False)


def test_a_live_url_that_ends_is_reopened_and_the_gap_reported(stream_case):
    model, wav, expected = stream_case
    with serving(wav) as url:
        done = listen(model, url, "--realtime", "--duration", "7")
    assert done.returncode == 0, done.stderr
    lines = window_lines(done.stdout)
    gaps = [line["gap"] for line in lines if "gap" in line]
    assert len(gaps) == 1 and gaps[0]["start"] == pytest.approx(3.3) and gaps[0]["end"] > 3.3 + 0.5  # 1 s backoff
    windows = [line for line in lines if "gap" not in line]
    before = [w for w in windows if w["end"] <= 3.3]
    after = [w for w in windows if w["start"] >= gaps[0]["end"]]
    assert len(before) + len(after) == len(windows) and after and after[-1]["end"] <= 7.0
    assert_same_windows(before, [w for w in expected if w["end"] <= 3.0])  # all but the one the break cut off
    assert b"reconnecting (1/5)" in done.stderr


class _WholeWav(_ChunkedWav):
    """Serves the test's WAV as a static file: its Content-Length, then all of it."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)


class _SilentWav(_ChunkedWav):
    """Sends the WAV's first 8 KiB, then nothing, the connection held open a while."""

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        self.send_response(200)
        self.send_header("Content-Type", "audio/wav")
        self.end_headers()
        self.wfile.write(self.payload[:8192])
        self.wfile.flush()
        time.sleep(2)


def test_a_stalled_url_says_so_in_our_words(stream_case, monkeypatch):
    """A URL that stops sending: "no data for N s", not FFmpeg's "Immediate exit requested"."""
    from ast_audio.inference import stream

    _, wav, _ = stream_case
    monkeypatch.setattr(stream, "STALL_SECONDS", 0.5)
    with serving(wav, _SilentWav) as url:
        with pytest.raises(AudioError) as caught:
            list(stream.container_chunks(url, url))
    assert str(caught.value) == f"{url}: the stream broke off (no data for 0.5 s)"


def test_a_live_url_of_a_whole_file_is_read_once(stream_case):
    """A static file over HTTP (its length announced, all of it delivered) ends cleanly: that is the stream's
    end, not a drop, so it is not replayed, even as a live source."""
    model, wav, expected = stream_case
    with serving(wav, _WholeWav) as url:
        done = listen(model, url, "--realtime", "--duration", "7")
    assert done.returncode == 0, done.stderr
    assert_same_windows(window_lines(done.stdout), expected)
    assert b"reconnecting" not in done.stderr and b"the stream ended: 6 window(s) over 3.30 s" in done.stderr


def test_no_gap_before_the_first_audio():
    opened = []

    def source():
        opened.append(1)
        if len(opened) == 1:
            raise AudioError("http://x: cannot be opened")
        yield np.zeros((10, 1), np.float32), RATE

    items = list(reconnecting(source, 2, backoff=0.01, reopen_at_end=False))
    assert len(opened) == 2 and len(items) == 1 and isinstance(items[0], tuple)


def fed_live_events(window: float, hop: float, batches: int | None, min_gap: float = 0.0, min_duration: float = 0.0,
                     seconds: float = 60.3, seed: int = 7, unrounded: bool = False):
    """`LiveEvents` fed a random walk's windows of a `seconds` stream, `batches` windows at a time (None: 1 to 3
    at random): (events given as it went with the windows fed by then, events at the end, windows kept after
    each add, what `Answers.detect` finds over the whole stream, the windows). unrounded: the windows start at
    k * hop as floats compute it (9.712499999999999 for 15 * 0.6475), not rounded as `plan_windows` rounds."""
    from ast_audio.answers.events import EventOptions
    from ast_audio.answers.options import AnswerOptions
    from ast_audio.inference.stream import LiveEvents

    rng = np.random.default_rng(seed)
    answers = AnswerOptions(events=EventOptions(threshold=0.6, threshold_off=0.4, min_gap=min_gap,
                                                min_duration=min_duration)).build(["a", "b", "c"])
    spans = plan_windows(seconds, window, hop)
    if unrounded:
        spans = [(index * hop, index * hop + window) for index in range(len(spans) - 1)] + spans[-1:]
    walk = np.clip(0.5 + np.cumsum(rng.normal(0, 0.12, (len(spans), 3)), axis=0) % 1.2 - 0.3, 0, 1)
    live, given, kept = LiveEvents(answers, hop), [], []
    position = 0
    while position < len(spans):
        count = batches or int(rng.integers(1, 4))
        given += [(event, position + count) for event in live.add(spans[position : position + count],
                                                                  walk[position : position + count])]
        position += count
        kept.append(live.kept)
    return given, live.close(), kept, answers.detect(spans, walk), spans


def assert_same_events(found, expected) -> None:
    found = sorted(found, key=lambda e: (e.start, e.end, e.label))
    assert [(e.label, e.start, e.end) for e in found] == [(e.label, e.start, e.end) for e in expected]
    assert [e.score for e in found] == pytest.approx([e.score for e in expected])
    assert [e.mean for e in found] == pytest.approx([e.mean for e in expected])


@pytest.mark.parametrize("min_gap, min_duration, window, hop, batches", [
    (0.0, 0.0, WINDOW, 0.5, None), (1.2, 0.0, WINDOW, 0.5, None), (0.6, 1.1, WINDOW, 0.25, None),
    (0.0, 0.0, WINDOW, 1.5, None), (0.0, 0.0, 1.295, 0.6475, 1), (0.6, 0.0, 1.295, 0.6475, None)])
@pytest.mark.parametrize("unrounded", [False, True])
def test_live_events_are_the_files_each_given_once_when_final(min_gap, min_duration, window, hop, batches,
                                                              unrounded):
    """Windows fed a few at a time: every event comes out once, and all of them are the events the answers
    find over the whole stream's windows; an event comes out before the end unless it could still change.
    (1.295, 0.6475) is a tiny checkpoint's default window and hop, fed one window at a time as a paced stream
    scores them; unrounded: starts as k * hop computes them, a hair off the rounded ends of earlier windows."""
    given, at_end, kept, expected, spans = fed_live_events(window, hop, batches, min_gap, min_duration,
                                                           unrounded=unrounded)
    assert len(expected) > 5
    assert_same_events([event for event, _ in given] + at_end, expected)
    assert len(at_end) < len(expected)  # most came out as the stream went on
    assert max(kept) < len(spans) / 2  # windows are let go once no event can need them


@pytest.mark.parametrize("batches", [1, 2, 3, None])
def test_live_events_hold_for_any_window_and_hop(batches):
    """Over many window/hop pairs whose edges meet only up to float rounding (window a multiple of hop, hops
    that are not binary fractions), fed 1, 2, 3 or 1-3 windows at a time: the live events are always
    `Answers.detect`'s over the whole stream (letting windows go never leaves an empty clipped one)."""
    rng = np.random.default_rng(3)
    pairs = [(1.295, 0.6475), (0.975, 0.4875), (0.975, 0.325), (1.1, 0.55), (0.7, 0.35), (0.3, 0.1),
             (0.9, 0.3), (1.3, 0.65), (2.1, 0.7), (0.6, 0.2)]
    pairs += [(round(w, 4), round(w / k, 4)) for w, k in zip(rng.uniform(0.2, 2.0, 6), rng.integers(2, 5, 6))]
    for index, (window, hop) in enumerate(pairs):
        for unrounded in (False, True):
            given, at_end, _, expected, _ = fed_live_events(window, hop, batches, seconds=25.0, seed=index,
                                                            unrounded=unrounded)
            assert_same_events([event for event, _ in given] + at_end, expected)


def test_events_over_stdin_are_classifys(stream_case):
    """listen --events gives the events the answers find in classify's windows of the file (one class, the
    thresholds between its window scores so that events start and end inside the stream)."""
    from ast_audio.answers.events import EventOptions, events_from_windows

    model, wav, windows = stream_case
    spans = [(w["start"], w["end"]) for w in windows]
    choices = []  # (label, threshold, events) for each class and threshold between its window scores
    for label in [item["label"] for item in windows[0]["labels"]]:
        track = np.array([[next(item["score"] for item in w["labels"] if item["label"] == label)] for w in windows])
        for threshold in sorted(map(float, track[:, 0]), key=lambda value: abs(value - np.median(track))):
            choices.append((label, threshold, events_from_windows(spans, track, [label], EventOptions(
                threshold=threshold, threshold_off=threshold))))
    # the first whose events are not one event over the whole stream
    label, threshold, expected = next(choice for choice in choices
                                      if choice[2] and choice[2][0].end < 3.3 or len(choice[2]) > 1)
    with open(wav, "rb") as handle:
        done = listen(model, "-", "--include", label, "--events", "--threshold", repr(threshold),
                      "--threshold-off", repr(threshold), stdin=handle)
    assert done.returncode == 0, done.stderr
    lines = window_lines(done.stdout)
    events = [line["event"] for line in lines if "event" in line]
    assert [(e["label"], e["start"], e["end"]) for e in events] == [(e.label, e.start, e.end) for e in expected]
    assert [e["score"] for e in events] == pytest.approx([e.score for e in expected], abs=1e-4)
    assert len([line for line in lines if "event" not in line]) == len(windows)


def test_window_decisions_are_the_engines(stream_case):
    """With decisions on (--decide), each window carries the labels at or above their thresholds, as the
    engine's windows of the file do."""
    from ast_audio.answers.options import AnswerOptions
    from ast_audio.inference.options import InferenceOptions
    from ast_audio.inference.stream import LiveTagger

    model, wav, _ = stream_case
    answers = AnswerOptions(decide=0.15)
    classifier = InferenceOptions(model=model, window=WINDOW, hop=HOP, device="cpu", threads=1,
                                  answers=answers).load()
    (result,) = classifier.runner.run([str(wav)], window=WINDOW, hop=HOP, answers=answers)
    samples, _ = sf.read(wav, dtype="float32")
    tagger = LiveTagger(classifier.runner, answers.build(classifier.labels), window=WINDOW, hop=HOP)
    records = list(tagger.run((samples[start : start + 4000], RATE) for start in range(0, len(samples), 4000)))
    expected = result.timeline(5)
    assert any(window["decisions"] for window in expected)
    assert len(records) == len(expected)
    for got, want in zip(records, expected):
        assert [(d["label"], d["threshold"]) for d in got["decisions"]] == [
            (d["label"], d["threshold"]) for d in want["decisions"]]
        assert [d["score"] for d in got["decisions"]] == pytest.approx([d["score"] for d in want["decisions"]],
                                                                       abs=1e-4)
