"""The live stream endpoint, /v1/stream, against a real `ast-audio serve` on 127.0.0.1: its own for this module (the
session's has no API key and a 10 s idle timeout; this one has a key, a 1 s idle timeout and a small message limit,
and is stopped by SIGTERM in the last test): the windows and events of `classify FILE --window W --hop H` over the
socket, the key, bad input, limits, and the server's stop."""

from __future__ import annotations

import io
import json
import signal
import socket
import threading
import time
from urllib.parse import urlencode

import numpy as np
import pytest
import soundfile as sf

from ast_audio.cli import main
from ast_audio.inference.windows import plan_windows
from helpers import save_small_checkpoint
from servers import Server

pytest.importorskip("fastapi")
pytest.importorskip("websockets")
from websockets.exceptions import ConnectionClosed  # noqa: E402 - after the skip
from websockets.sync.client import connect  # noqa: E402

KEY = "stream-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
END = {"type": "end"}
WINDOW, HOP, RATE = 1.0, 0.5, 22050  # the recording's rate is not the model's (16 kHz): the stream is resampled


@pytest.fixture(scope="module")
def stream_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    model = save_small_checkpoint(folder / "model", labels=6, seed=3)
    (folder / "key.txt").write_text(KEY + "\n")
    running = Server(model, "--api-key-file", str(folder / "key.txt"), "--threads", "1", "--max-wait-ms", "10",
                     "--stream-idle-timeout-s", "1", "--max-stream-message-mb", "0.25", "--max-streams-per-client", "2")
    yield running, model
    running.stop()


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 3.3 s stereo float WAV at 22050 Hz (its samples as the file holds them, to send as f32le)."""
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * RATE)) / RATE
    left = 0.3 * np.sin(2 * np.pi * 440 * t) * (t > 1.2) + 0.1 * rng.standard_normal(len(t))
    right = 0.2 * np.sin(2 * np.pi * 1200 * t) + 0.1 * rng.standard_normal(len(t))
    samples = np.stack([left, right], axis=1).astype(np.float32)
    path = tmp_path_factory.mktemp("recording") / "clip.wav"
    sf.write(path, samples, RATE, subtype="FLOAT")
    return str(path), samples


def url(server: Server, query: str) -> str:
    return f"ws://127.0.0.1:{server.port}/v1/stream?{query}"


def exchange(server: Server, query: str, messages: list, headers: dict | None = None,
             timeout: float = 60) -> tuple[list[dict], int | None]:
    """Connect, send `messages` (bytes, or dicts as JSON text), then read until the server closes: the JSON
    messages received and the close code."""
    with connect(url(server, query), additional_headers=AUTH if headers is None else headers, open_timeout=30) as ws:
        try:
            for message in messages:
                ws.send(json.dumps(message) if isinstance(message, dict) else message)
        except ConnectionClosed:
            pass  # the server ended the stream first: what it sent is still read below
        received = []
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=timeout)))
        except ConnectionClosed as closed:
            return received, closed.rcvd.code if closed.rcvd else None


def exchange_raw(server: Server, query: str, messages: list[bytes], last: dict) -> tuple[list[dict], int | None]:
    """As `exchange`, the binary `messages` framed here (RFC 6455, 5.2: masked with a zero key, each a final frame
    of under 126 bytes) and written to the socket in one call, so that the server reads them many at a time;
    then `last` as JSON text."""
    frames = b"".join(bytes([0x82, 0x80 | len(message)]) + b"\0\0\0\0" + message for message in messages)
    with connect(url(server, query), additional_headers=AUTH, open_timeout=30) as ws:
        ws.socket.sendall(frames)
        ws.send(json.dumps(last))
        received = []
        try:
            while True:
                received.append(json.loads(ws.recv(timeout=60)))
        except ConnectionClosed as closed:
            return received, closed.rcvd.code if closed.rcvd else None


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


def assert_classify_answers(server: Server) -> None:
    """The server still answers an upload (a second of silence as WAV)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(16000, np.float32), 16000, format="WAV")
    status, answer = server.post("/v1/classify", buffer.getvalue(), "audio/wav", **AUTH)
    assert status == 200, answer


def assert_same_windows(streamed: list[dict], expected: list[dict]) -> None:
    assert [v for w in streamed for v in (w["start"], w["end"])] == pytest.approx(
        [v for w in expected for v in (w["start"], w["end"])])
    for got, want in zip(streamed, expected):
        assert [x["label"] for x in got["labels"]] == [x["label"] for x in want["labels"]]
        np.testing.assert_allclose([x["score"] for x in got["labels"]], [x["score"] for x in want["labels"]],
                                   atol=1e-4)
        assert got["wall_time"].endswith("Z") and got["wall_time"][10] == "T"


def test_a_stream_gives_the_windows_and_events_of_classify(stream_server, recording, capsys):
    """f32le stereo at 22050 Hz in messages that split frames, and the WAV's bytes as a container: the windows
    of `classify FILE --window 1 --hop 0.5` (within 1e-4, window for window) and, with events on, its events
    (a threshold between one class's window scores, so that events start and end inside the stream)."""
    server, model = stream_server
    path, samples = recording
    main(["classify", path, "--model", model, "--window", str(WINDOW), "--hop", str(HOP), "-k", "6", "-f", "json",
          "-q"])
    plain = json.loads(capsys.readouterr().out)[0]
    label = plain["windows"][0]["labels"][1]["label"]
    track = [next(x["score"] for x in w["labels"] if x["label"] == label) for w in plain["windows"]]
    threshold = float(np.median(track))
    main(["classify", path, "--model", model, "--window", str(WINDOW), "--hop", str(HOP), "-k", "6", "-f", "json",
          "-q", "--events", "--threshold", repr(threshold), "--threshold-off", repr(threshold)])
    expected = json.loads(capsys.readouterr().out)[0]
    assert len(expected["windows"]) == 6 and expected["events"]

    query = urlencode({"format": "f32le", "rate": RATE, "channels": 2, "window": WINDOW, "hop": HOP, "top_k": 6,
                       "events": "true", "threshold": repr(threshold), "threshold_off": repr(threshold),
                       "realtime": "false"})
    received, code = exchange(server, query, [*pieces(samples.astype("<f4").tobytes(), 7001), END])
    assert code == 1000, received
    assert received[-1] == {"summary": {"windows": 6, "dropped": 0, "seconds": pytest.approx(3.3)}}
    assert_same_windows([r for r in received if "labels" in r], expected["windows"])
    events = sorted((r["event"] for r in received if "event" in r), key=lambda e: (e["start"], e["label"]))
    wanted = sorted(expected["events"], key=lambda e: (e["start"], e["label"]))
    assert [e["label"] for e in events] == [e["label"] for e in wanted]
    for key in ("start", "end", "score", "mean"):
        np.testing.assert_allclose([e[key] for e in events], [e[key] for e in wanted], atol=1e-4, err_msg=key)

    with open(path, "rb") as handle:
        wav = handle.read()
    query = urlencode({"format": "container", "window": WINDOW, "hop": HOP, "top_k": 6, "realtime": "false"})
    received, code = exchange(server, query, [*pieces(wav, 40000), END])
    assert code == 1000, received
    assert_same_windows(received[:-1], plain["windows"])
    assert received[-1]["summary"]["windows"] == 6


def test_the_api_key_in_the_header_or_the_first_message(stream_server):
    """No key, a wrong one, audio before the key, nothing within the idle timeout: the error and 1008. The
    header and a first message {"api_key": KEY} (what a browser can send) both open the stream."""
    server, _ = stream_server
    second = np.zeros(16000, "<f4").tobytes()  # 1 s: one window
    for headers, messages in [({}, [second, END]), ({"Authorization": "Bearer wrong"}, [second, END]),
                              ({}, [{"api_key": "wrong"}, second, END]), ({}, [])]:
        received, code = exchange(server, "rate=16000&window=1", messages, headers=headers)
        assert code == 1008 and len(received) == 1, (headers, received)
        assert received[0]["error"].startswith("missing or wrong API key"), received
        assert received[0]["status"] == 401, received  # how a client tells the key from other 1008 closes
    as_s16le = np.zeros(16000, "<i2").tobytes()
    for headers, query, messages in [(AUTH, "format=s16le&rate=16000&window=1", [as_s16le, END]),
                                     ({}, "rate=16000&window=1", [{"api_key": KEY}, second, END])]:
        received, code = exchange(server, query, messages, headers=headers)
        assert code == 1000 and received[-1]["summary"] == {"windows": 1, "dropped": 0, "seconds": 1.0}, received


@pytest.mark.parametrize("query,message", [  # each answered 422, as /v1/classify answers the same query
    ("format=f32le", "query parameter rate: format=f32le needs the sampling rate in Hz"),
    ("format=mp3", "query parameter format='mp3': expected one of s16le, f32le, container"),
    ("rate=-5", "query parameter rate -5 is out of range: raw PCM must be 1000 to 768000 Hz"),
    ("rate=500", "query parameter rate 500 is out of range"),  # listen --rate's floor (check_pcm_rate)
    ("rate=800000", "query parameter rate 800000 is out of range"),
    ("rate=16000&window=50", "window 50 s is outside"),
    ("rate=16000&rate_hz=3", "unknown query parameter 'rate_hz' (known: format, rate, channels, window, hop, top_k"),
    ("rate=16000&include=sound%209", "sound 9"),
    ("rate=16000&events=true&refine=1", "command-line option (classify --refine"),
])
def test_a_bad_query_is_an_error_and_1008(stream_server, query, message):
    server, _ = stream_server
    received, code = exchange(server, query, [])
    assert code == 1008 and len(received) == 1 and message in received[0]["error"], received
    assert received[0]["status"] == 422, received


def test_bad_input_ends_the_stream_alone(stream_server):
    """Junk as a container, NaN samples, an unknown text message: the error and 1003; a message over the
    limit: 1009; the server goes on serving uploads and streams."""
    server, _ = stream_server
    for query, messages, code_wanted, status, message in [
        ("format=container", [b"plain words, no audio " * 1000, END], 1003, 415, "the stream: cannot be opened as audio"),
        ("rate=16000", [np.full(1000, np.nan, "<f4").tobytes(), END], 1003, 422, "NaN or infinite samples"),
        ("rate=16000", ["hello"], 1003, 400, "unknown message 'hello'"),
        ("rate=16000", [b"\0" * (2**18 + 8)], 1009, 413, "larger than this server's limit of 262144 bytes"),
    ]:
        received, code = exchange(server, query, messages)
        assert code == code_wanted and len(received) == 1 and message in received[0]["error"], (query, received)
        assert received[0]["status"] == status, (query, received)
    assert_classify_answers(server)
    assert server.metric("ast_audio_streams_total", 'end="1003"') >= 3


def test_many_tiny_messages_are_read_quickly(stream_server):
    """3 s of f32le in 96000 messages of 2 bytes (each frame split), written to the socket at once, realtime=false:
    the windows of the same audio in large messages, within seconds (each message handed to the decoder alone
    took 2.5 ms: 240 s, and uvicorn's keepalive closed the unread socket with 1011); /healthz answers meanwhile,
    all but its slowest answer within 0.1 s (uvicorn's own protocol parses a whole read of such frames in one
    callback: the slowest two took 0.16-0.27 s; with service.websocket_protocol's slices at most 0.035 s; AMD
    EPYC, shared); uploads answered after."""
    server, _ = stream_server
    audio = (0.1 * np.random.default_rng(5).standard_normal(48000)).astype("<f4").tobytes()
    query = "rate=16000&window=1&hop=0.5&realtime=false"
    whole, code = exchange(server, query, [*pieces(audio, 2**17), END])
    assert code == 1000 and whole[-1]["summary"]["windows"] == 5, whole
    waits, statuses, flooding = [], set(), threading.Event()

    def probe() -> None:
        while flooding.is_set():
            started = time.monotonic()
            statuses.add(server.request("GET", "/healthz")[0])
            waits.append(time.monotonic() - started)
            time.sleep(0.02)

    flooding.set()
    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    try:
        tiny, code = exchange_raw(server, query, pieces(audio, 2), END)
    finally:
        flooding.clear()
        prober.join()
    elapsed = time.monotonic() - started
    assert code == 1000 and tiny[-1] == whole[-1], tiny[-3:]
    assert_same_windows(tiny[:-1], whole[:-1])
    assert elapsed < 15, elapsed
    assert statuses == {200} and len(waits) >= 5 and sorted(waits)[-2] < 0.1, (statuses, sorted(waits)[-5:])
    assert_classify_answers(server)


def test_waiting_for_the_model_is_not_the_clients_idleness(stream_server):
    """realtime=false and a recording sent at once, the model far behind (56 s at a 0.01 s hop: 5501 windows, in
    messages of 8 s, each a second or more of the model's work, more than the four the server holds):
    the server stops reading the socket for longer than the 1 s idle timeout while its own decoder waits, and
    that wait is not counted as the client sending nothing (bench_live's base-model stream ended with the idle
    error): every window comes, then the summary."""
    server, _ = stream_server
    audio = (3000 * np.random.default_rng(8).standard_normal(56 * 16000)).astype("<i2").tobytes()
    received, code = exchange(server, "format=s16le&rate=16000&window=1&hop=0.01&top_k=1&realtime=false",
                              [*pieces(audio, 8 * 32000), END], timeout=240)
    assert code == 1000, received[-2:]
    assert received[-1]["summary"] == {"windows": 5501, "dropped": 0, "seconds": 56.0}, received[-1]


def test_a_client_that_leaves_mid_window_frees_its_stream(stream_server):
    """The client drops the connection (no close handshake) while a window is half read: the stream is let go
    (the active-streams gauge back to 0) and the server answers the next upload and stream."""
    server, _ = stream_server
    gone = server.metric("ast_audio_streams_total", 'end="disconnected"')
    with connect(url(server, "rate=16000&window=1&hop=0.5"), additional_headers=AUTH, open_timeout=30) as ws:
        ws.send(np.zeros(int(1.7 * 16000), "<f4").tobytes())  # two windows and part of a third
        assert json.loads(ws.recv(timeout=30))["start"] == 0.0  # the stream is running
        ws.socket.shutdown(socket.SHUT_RDWR)
    deadline = time.monotonic() + 30
    while server.metric("ast_audio_streams_active") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("ast_audio_streams_active") == 0
    assert server.metric("ast_audio_streams_total", 'end="disconnected"') == gone + 1
    assert_classify_answers(server)
    received, code = exchange(server, "rate=16000&window=1", [np.zeros(16000, "<f4").tobytes(), END])
    assert code == 1000 and received[-1]["summary"]["windows"] == 1


def test_streams_per_client_and_the_idle_timeout(stream_server):
    """A third stream from one address gets the error naming --max-streams-per-client; the two open ones, sending
    nothing, end after the 1 s idle timeout, each with its error and 1008."""
    server, _ = stream_server
    with connect(url(server, "rate=16000"), additional_headers=AUTH) as first, \
            connect(url(server, "rate=16000"), additional_headers=AUTH) as second:
        received, code = exchange(server, "rate=16000", [])
        assert code == 1008 and received == [{"error": "too many streams from 127.0.0.1: this server takes 2 per "
                                                        "client (--max-streams-per-client)", "status": 429}]
        for ws in (first, second):
            assert json.loads(ws.recv(timeout=30)) == {
                "error": "no audio for 1 s: this server ends a stream idle that long (--stream-idle-timeout-s)",
                "status": 408}
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=30)
            assert closed.value.rcvd.code == 1008


def test_a_stream_faster_than_the_model_drops_whole_windows(stream_server):
    """30 s at a 0.01 s hop (2901 windows) sent at once to a live stream: whole windows are dropped and counted
    (warnings, the summary, the metric), the rest scored; memory bounded, the stream ends normally."""
    server, _ = stream_server
    dropped_before = server.metric("ast_audio_dropped_windows_total")
    audio = (0.1 * np.random.default_rng(2).standard_normal(30 * 16000)).astype("<f4").tobytes()
    received, code = exchange(server, "rate=16000&window=1&hop=0.01", [*pieces(audio, 2**18), END])
    assert code == 1000, received[-3:]
    summary = received[-1]["summary"]
    windows = [r for r in received if "labels" in r]
    warnings = [r for r in received if "warning" in r]
    assert summary["dropped"] > 0 and summary["windows"] == len(windows)
    assert summary["windows"] + summary["dropped"] == len(plan_windows(30.0, 1.0, 0.01)) == 2901
    assert warnings and warnings[0]["dropped"] > 0 and "falls behind" in warnings[0]["warning"]
    assert server.metric("ast_audio_dropped_windows_total") - dropped_before >= summary["dropped"]


def test_the_page_shows_the_key_field_at_load_and_live_ends_with_no_event(stream_server, browser):
    """The page of a server with a key shows the key field before anything is pressed (/v1/model answers 401);
    with the key typed and the slider at its top (0.95, which no score of this model reaches), Live and Stop: the
    summary, and the events line says there was none, not that none has ended yet."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = stream_server
    browser.get(f"http://127.0.0.1:{server.port}/")
    WebDriverWait(browser, 30).until(lambda b: b.find_element(By.ID, "keyrow").is_displayed())
    assert browser.find_element(By.ID, "status").text == ""
    browser.find_element(By.ID, "key").send_keys(KEY)
    browser.find_element(By.ID, "threshold").send_keys(Keys.END)
    browser.find_element(By.ID, "live").click()
    status = lambda b: (b.find_element(By.ID, "status").text, b.find_element(By.ID, "status").get_attribute("class"))
    shown = lambda b: int(b.find_element(By.ID, "live-card").get_attribute("data-windows") or 0)
    WebDriverWait(browser, 60).until(lambda b: shown(b) >= 2 or status(b)[1] == "error")
    assert status(browser)[1] != "error", status(browser)
    browser.find_element(By.ID, "live").click()
    WebDriverWait(browser, 60).until(lambda b: status(b)[0].startswith("Stopped:") or status(b)[1] == "error")
    assert status(browser)[0].startswith("Stopped:"), status(browser)
    assert not browser.find_elements(By.CSS_SELECTOR, "#live-events .event")
    assert browser.find_element(By.ID, "live-events").text == "None at threshold 0.95."


def test_sigterm_ends_open_streams_with_1013(stream_server):
    """Last test of this module: it stops the server. An open stream gets the error and 1013 (try again later);
    the server exits 0 without a traceback."""
    server, _ = stream_server
    with connect(url(server, "rate=16000"), additional_headers=AUTH) as ws:
        ws.send(np.zeros(4000, "<f4").tobytes())
        server.process.send_signal(signal.SIGTERM)
        message = json.loads(ws.recv(timeout=30))
        assert message["error"].startswith("server shutting down"), message
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd.code == 1013
    assert server.process.wait(timeout=60) == 0
    stderr = server.process.stderr.read()
    assert "Traceback" not in stderr and "never retrieved" not in stderr, stderr
