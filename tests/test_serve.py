"""The HTTP service against real servers on 127.0.0.1 (started once per test run, stopped by pid), and its page
in a real headless Chromium."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import threading
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import AudioClassifier
from ast_audio.cli import main
from encoders import encode
from servers import ARTIFACTS, Server

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

@pytest.fixture(scope="session")
def keyed_server(served_checkpoint, tmp_path_factory):
    key_file = tmp_path_factory.mktemp("key") / "key.txt"
    key_file.write_text("s3cret-key\n")
    running = Server(served_checkpoint, "--api-key-file", str(key_file), "--threads", "1", "--max-queue", "100000",
                     "--shutdown-timeout-s", "90")  # a busy machine still finishes the started request
    yield running
    running.stop()


@pytest.fixture(scope="session")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(0)
    paths = {"song.mp3": encode(folder / "song.mp3", seconds=4.0, bitrate=128000)}
    sf.write(folder / "long.wav", (0.1 * rng.standard_normal(16000 * 9)).astype(np.float32), 16000)
    sf.write(folder / "short.wav", (0.1 * rng.standard_normal(16000)).astype(np.float32), 16000)
    sf.write(folder / "thirty.flac", (0.1 * rng.standard_normal(16000 * 30)).astype(np.float32), 16000)
    whole = read(encode(folder / "whole.m4a", seconds=3.0, codec="aac", container="mp4"))
    (folder / "cut.m4a").write_bytes(whole[: len(whole) // 2])  # a partial download: no moov atom at the end
    paths.update(long_wav=str(folder / "long.wav"), short_wav=str(folder / "short.wav"),
                 thirty_flac=str(folder / "thirty.flac"), cut_m4a=str(folder / "cut.m4a"))
    return paths


def read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def multipart(field: str, filename: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def assert_same_result(served: dict, local: dict) -> None:
    assert served["duration"] == local["duration"] and served["pooling"] == local["pooling"]
    for a, b in [(served["labels"], local["labels"])] + list(zip(
            [w["labels"] for w in served["windows"]], [w["labels"] for w in local["windows"]])):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-5)
    assert [(w["start"], w["end"]) for w in served["windows"]] == [(w["start"], w["end"]) for w in local["windows"]]


def assert_same_events(served: list[dict], local: list[dict]) -> None:
    """The same events: labels exactly, times and scores within 1e-5 (the service batches windows with other
    requests', so its float sums may differ in the last bits, more so on some CPUs' kernels)."""
    assert [event["label"] for event in served] == [event["label"] for event in local]
    for key in ("start", "end", "score", "mean"):
        np.testing.assert_allclose([e[key] for e in served], [e[key] for e in local], atol=1e-5, err_msg=key)


def test_classify_equals_the_command_line(server, served_checkpoint, clips, capsys):
    for name in ("song.mp3", "long_wav"):
        main(["classify", clips[name], "--model", served_checkpoint, "-f", "json", "-q"])
        local = json.loads(capsys.readouterr().out)[0]
        status, served = server.post(f"/v1/classify?filename={os.path.basename(clips[name])}", read(clips[name]))
        assert status == 200, served
        assert served["path"] == os.path.basename(clips[name])
        assert_same_result(served, local)
    body, content_type = multipart("file", "long.wav", read(clips["long_wav"]))
    status, served = server.post("/v1/classify?top_k=2&hop=0.5&pooling=max", body, content_type)
    main(["classify", clips["long_wav"], "--model", served_checkpoint, "-f", "json", "-q", "-k", "2", "--hop", "0.5",
          "--pooling", "max"])
    assert status == 200 and served["path"] == "long.wav"
    assert_same_result(served, json.loads(capsys.readouterr().out)[0])


def test_classify_takes_the_answers_options_of_the_command_line(server, served_checkpoint, clips, capsys):
    """Events, thresholds, include and a group on /v1/classify: the record classify --format json writes with
    the same options, events included (the threshold between long.wav's window scores, so there are some)."""
    from urllib.parse import urlencode

    plain = server.post("/v1/classify?top_k=6", read(clips["long_wav"]), "audio/wav")[1]
    track = [next(x["score"] for x in w["labels"] if x["label"] == "sound 3") for w in plain["windows"]]
    threshold = float(np.median(track))
    query = [("events", "true"), ("threshold", repr(threshold)), ("min_gap", "0.5"), ("include", "sound 3"),
             ("include", "sound 5"), ("group", "pair=sound 1,sound 2")]
    status, served = server.post(f"/v1/classify?{urlencode(query)}", read(clips["long_wav"]), "audio/wav")
    assert status == 200, served
    main(["classify", clips["long_wav"], "--model", served_checkpoint, "-f", "json", "-q", "--events", "--threshold",
          repr(threshold), "--min-gap", "0.5", "--include", "sound 3", "--include", "sound 5", "--group",
          "pair=sound 1,sound 2"])
    local = json.loads(capsys.readouterr().out)[0]
    assert_same_result(served, local)
    assert {item["label"] for item in served["labels"]} <= {"sound 3", "sound 5", "pair"}
    assert served["events"] and any(event["label"] == "sound 3" for event in served["events"])
    assert_same_events(served["events"], local["events"])
    for bad, message in [("include=sound%209", "sound 9"),
                         ("include=%40/etc/passwd", "query parameter include='@/etc/passwd': label files (@FILE)"),
                         ("group=pair=%40/etc/passwd", "query parameter group='pair=@/etc/passwd': label files"),
                         ("group=pair", "query parameter group='pair': expected NAME=LABEL,LABEL"),
                         ("group=a=sound%201&group=a=sound%202", "query parameter group: the group 'a' is given twice"),
                         ("events=true&threshold=0.2&threshold_off=0.4", "threshold_off 0.4 is above")]:
        status, answer = server.post(f"/v1/classify?{bad}", read(clips["short_wav"]), "audio/wav")
        assert status == 422 and message in answer["error"], answer


def test_classify_decide_gives_the_decisions_of_the_command_line(server, served_checkpoint, clips, capsys):
    """decide=true with a global threshold (the served checkpoint has no thresholds.json): the labels at or
    above it, per clip and per window, as classify --decide --threshold writes them (no events)."""
    plain = server.post("/v1/classify?top_k=6", read(clips["long_wav"]), "audio/wav")[1]
    scores = np.unique([x["score"] for w in plain["windows"] for x in w["labels"]])
    middle = scores[len(scores) // 4: 3 * len(scores) // 4 + 1]
    gap = int(np.argmax(np.diff(middle)))  # a threshold far from every score: no decision rests on a rounding
    threshold = float((middle[gap] + middle[gap + 1]) / 2)
    status, served = server.post(f"/v1/classify?top_k=6&decide=true&threshold={threshold!r}",
                                 read(clips["long_wav"]), "audio/wav")
    assert status == 200, served
    main(["classify", clips["long_wav"], "--model", served_checkpoint, "-f", "json", "-q", "-k", "6", "--decide",
          "--threshold", repr(threshold)])
    local = json.loads(capsys.readouterr().out)[0]
    assert "events" not in served and "events" not in local
    expected = [[x["label"] for x in w["labels"] if x["score"] >= threshold] for w in plain["windows"]]
    assert [[d["label"] for d in w["decisions"]] for w in served["windows"]] == expected
    assert 0 < sum(map(len, expected)) < 6 * len(expected)
    for ours, theirs in [(served["decisions"], local["decisions"])] + list(zip(
            [w["decisions"] for w in served["windows"]], [w["decisions"] for w in local["windows"]])):
        assert [(d["label"], d["threshold"]) for d in ours] == [(d["label"], d["threshold"]) for d in theirs]
        np.testing.assert_allclose([d["score"] for d in ours], [d["score"] for d in theirs], atol=1e-5)
    assert [d["label"] for d in served["decisions"]] == [x["label"] for x in plain["labels"] if x["score"] >= threshold]


def test_classify_refine_gives_the_finer_events_of_the_command_line(server, served_checkpoint, clips, capsys):
    """refine=2 (events on long.wav, on and off at the median of its window scores): the events classify --events
    --refine 2 writes, not the first pass's; the extra windows went through the server's batcher (its scored
    windows grew by more than the first pass's) and count against --max-windows-per-request (30 s at window 0.2 s,
    hop 0.03 s: 995 first-pass windows leave 5 under this server's 1000: 422 naming the limit); refine's range is
    AnswerOptions'; events=false with refine is 422 naming both (with decide, threshold is the decisions': 200)."""
    data = read(clips["long_wav"])
    plain = server.post("/v1/classify?top_k=6", data, "audio/wav")[1]
    threshold = float(np.median([next(x["score"] for x in w["labels"] if x["label"] == "sound 3")
                                 for w in plain["windows"]]))
    query = f"/v1/classify?threshold={threshold!r}&threshold_off={threshold!r}&include=sound%203"
    first = server.post(query, data, "audio/wav")[1]
    scored = server.metric("ast_audio_batch_size_sum")
    status, served = server.post(f"{query}&refine=2", data, "audio/wav")
    assert status == 200, served
    extra = server.metric("ast_audio_batch_size_sum") - scored - len(served["windows"])
    main(["classify", clips["long_wav"], "--model", served_checkpoint, "-f", "json", "-q", "--threshold",
          repr(threshold), "--threshold-off", repr(threshold), "--include", "sound 3", "--refine", "2"])
    local = json.loads(capsys.readouterr().out)[0]
    assert_same_result(served, local)
    assert len(served["events"]) >= 2 and served["events"] != first["events"], (first["events"], served["events"])
    assert_same_events(served["events"], local["events"])
    assert 0 < extra <= 2 * 2 * len(first["events"]), extra
    short = server.post("/v1/classify?top_k=6&window=0.2&hop=0.1", data, "audio/wav")[1]  # 0.2 s windows' scores
    threshold = float(np.median([next(x["score"] for x in w["labels"] if x["label"] == "sound 3")
                                 for w in short["windows"]]))
    status, answer = server.post(f"/v1/classify?window=0.2&hop=0.03&threshold={threshold!r}&threshold_off="
                                 f"{threshold!r}&include=sound%203&refine=1", read(clips["thirty_flac"]), "audio/flac")
    assert status == 422 and answer["error"].startswith(
        "upload: the finer pass (refine) needs more than 5 windows beside the first pass's 995, over this "
        "server's limit of 1000 per request (--max-windows-per-request)"), answer
    status, answer = server.post(f"{query}&refine=4", data, "audio/wav")
    assert status == 422 and "refine must be a number of rounds from 0 to 3" in answer["error"], answer
    status, answer = server.post("/v1/classify?events=false&refine=1", data, "audio/wav")  # refine turns events on
    assert status == 422 and answer["error"] == ("query parameter events=false contradicts refine=1, which turn(s) "
                                                 "events on: drop one of them"), answer
    status, answer = server.post("/v1/classify?events=false&decide=true&threshold=0.4", data, "audio/wav")
    assert status == 200 and "events" not in answer and answer["decisions"] is not None, answer


def test_embed_and_model_endpoints(server, served_checkpoint, clips):
    status, served = server.post("/v1/embed?per_window=true", read(clips["long_wav"]))
    assert status == 200, served
    local = AudioClassifier.from_pretrained(served_checkpoint).classify(clips["long_wav"])
    np.testing.assert_allclose(served["embedding"], local.embedding, atol=1e-5)
    np.testing.assert_allclose(served["window_embeddings"], local.window_embeddings, atol=1e-5)
    status, _, body = server.request("GET", "/v1/model")
    model = json.loads(body)
    assert status == 200 and model["labels"] == [f"sound {i}" for i in range(6)]
    assert model["input_frames"] == 128 and model["sampling_rate"] == 16000 and model["backend"] == "torch"
    assert server.request("GET", "/docs")[0] == 200 and server.request("GET", "/healthz")[0] == 200


@pytest.mark.parametrize("body,content_type,query,status,message", [
    (b"plain words, no audio", "audio/mpeg", "", 415, "not an audio file"),
    (b"{}", "application/json", "", 415, "is not audio"),
    (b"", "audio/wav", "", 400, "empty upload"),
    (None, "audio/wav", "?pooling=median", 422, "pooling"),
    (None, "audio/wav", "?top_k=many", 422, "top_k"),
    (None, "audio/wav", "?window=50", 422, "window 50 s is outside"),
    (None, "audio/wav", "?window=0.2&hop=1e-9", 422, "below one frame shift"),
    ("cut_m4a", "audio/mp4", "", 422, "without its index (moov atom)"),
    (b"garbage", "multipart/form-data; boundary=xx", "", 400, "malformed request body: Invalid multipart data"),
])
def test_bad_input_gets_4xx_and_the_server_stays_up(server, clips, body, content_type, query, status, message):
    data = read(clips["short_wav"]) if body is None else read(clips[body]) if isinstance(body, str) else body
    got, answer = server.post(f"/v1/classify{query}", data, content_type)
    assert got == status and message in answer["error"], answer
    assert server.request("GET", "/healthz")[0] == 200


def test_unknown_query_parameters_are_refused_on_every_v1_route(server, clips):
    """A parameter a route does not declare is 422 naming it and the route's own (read from the route's
    definition), before any work; the page's query is known."""
    data = read(clips["short_wav"])
    status, answer = server.post("/v1/classify?top_k=3&bogus=1", data, "audio/wav")
    assert status == 422, answer
    known = answer["error"].partition("(known: ")[2].rstrip(")").split(", ")
    assert answer["error"].startswith("unknown query parameter 'bogus' (known: ")
    assert {"top_k", "window", "hop", "pooling", "timeline", "spectrogram", "events", "threshold",
            "threshold_off", "min_duration", "min_gap", "include", "exclude", "group", "rollup", "decide",
            "refine", "filename"} == set(known)
    status, answer = server.post("/v1/embed?per_window=true&top_k=3", data, "audio/wav")
    assert status == 422 and answer["error"] == ("unknown query parameter 'top_k' (known: window, hop, per_window, "
                                                 "filename)"), answer
    status, _, body = server.request("GET", "/v1/model?verbose=1")
    assert status == 422 and json.loads(body) == {"error": "unknown query parameter 'verbose' (known: none)"}
    status, answer = server.post("/v1/classify?top_k=5&timeline=true&spectrogram=true&filename=a.wav&threshold=0.5",
                                 data, "audio/wav")
    assert status == 200 and answer["path"] == "a.wav" and answer["spectrogram"]["bins"], answer


@pytest.mark.parametrize("method,path,status,message", [
    ("GET", "/v1/nothing", 404, "no route /v1/nothing (see /docs)"),
    ("GET", "/v1/classify", 405, "GET is not allowed on /v1/classify (allowed: POST)"),
])
def test_every_error_is_json_with_an_error_field(server, method, path, status, message):
    got, _, body = server.request(method, path)
    assert got == status and json.loads(body) == {"error": message}


def test_windows_per_request_are_capped_before_any_work(server, clips):
    """30 s at window 0.2 s, hop 0.01 s is 2981 windows, over this server's 1000: 422 naming the limit, and
    nothing reached the model."""
    batches = server.metric("ast_audio_batch_size_count")
    status, answer = server.post("/v1/classify?window=0.2&hop=0.01", read(clips["thirty_flac"]), "audio/flac")
    assert status == 422, answer
    assert "2981 windows, more than this server's limit of 1000 per request (--max-windows-per-request)" \
        in answer["error"] and "a hop of 0.03 s or more fits" in answer["error"]
    assert server.metric("ast_audio_batch_size_count") == batches


def test_a_client_that_leaves_has_its_windows_dropped(server, clips):
    """881 windows (9 s at window 0.2 s, hop 0.01 s); the client hangs up once the model has started on them:
    the rest are dropped unscored and counted, the queue empties, and the next client is served."""
    dropped, batches = server.metric("ast_audio_dropped_windows_total"), server.metric("ast_audio_batch_size_count")
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    connection.request("POST", "/v1/classify?window=0.2&hop=0.01", body=read(clips["long_wav"]),
                       headers={"Content-Type": "audio/wav"})
    deadline = time.monotonic() + 60
    while server.metric("ast_audio_batch_size_count") == batches and time.monotonic() < deadline:
        time.sleep(0.02)
    connection.close()
    while server.metric("ast_audio_queue_windows") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.metric("ast_audio_queue_windows") == 0
    assert 0 < server.metric("ast_audio_dropped_windows_total") - dropped < 881
    assert server.post("/v1/classify", read(clips["short_wav"]), "audio/wav")[0] == 200


def test_limits_on_size_and_duration(server, tmp_path):
    too_long = tmp_path / "long.flac"
    sf.write(too_long, np.zeros(16000 * 45, np.float32) + 0.01, 16000)  # 45 s > 40 s, small as FLAC
    status, answer = server.post("/v1/classify", read(str(too_long)), "audio/flac")
    assert status == 422 and "longer than this server's limit of 40 s" in answer["error"]
    # Content-Length says it: refused before the body is read.
    assert _send_until_refused(server, {"Content-Length": str(3 * 2**20)}, [b"\0" * 65536]) == 413
    # No length: counted while it streams in, refused once past 2 MB (of the 4 MB the client would send).
    chunks = [f"{65536:x}\r\n".encode() + b"\1" * 65536 + b"\r\n"] * 64 + [b"0\r\n\r\n"]
    assert _send_until_refused(server, {"Transfer-Encoding": "chunked"}, chunks) == 413
    assert server.request("GET", "/healthz")[0] == 200


def _send_until_refused(server: Server, headers: dict[str, str], pieces: list[bytes]) -> int:
    """POST an audio body piece by piece, stopping when the server closes the connection; its status."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.putrequest("POST", "/v1/classify")
        connection.putheader("Content-Type", "audio/wav")
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders()
        try:
            for piece in pieces:
                connection.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before the client finished sending
        return connection.getresponse().status
    finally:
        connection.close()


def test_metrics_count_requests(server, clips):
    before = server.metric("ast_audio_requests_total", 'route="/v1/classify",status="200"')
    assert server.post("/v1/classify", read(clips["short_wav"]), "audio/wav")[0] == 200
    assert server.metric("ast_audio_requests_total", 'route="/v1/classify",status="200"') == before + 1
    text = server.request("GET", "/metrics")[2].decode()
    assert "ast_audio_request_seconds_bucket" in text and "ast_audio_queue_windows" in text


def test_concurrent_requests_share_model_calls(server, clips):
    """Single-window clips from 8 clients at once: the model sees batches of several requests' windows, and
    each answer equals that clip's answer alone."""
    data = read(clips["short_wav"])
    alone = server.post("/v1/classify", data, "audio/wav")[1]
    batches_before = server.metric("ast_audio_batch_size_count")
    singles_before = server.metric("ast_audio_batch_size_bucket", 'le="1.0"')
    answers: list = [None] * 8
    barrier = threading.Barrier(8)

    def client(index: int) -> None:
        barrier.wait()
        answers[index] = server.post("/v1/classify", data, "audio/wav")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(status == 200 for status, _ in answers)
    for _, answer in answers:
        assert_same_result(answer, alone)
    batches = server.metric("ast_audio_batch_size_count") - batches_before
    singles = server.metric("ast_audio_batch_size_bucket", 'le="1.0"') - singles_before
    assert batches < 8 and singles < batches, (batches, singles)


def test_batcher_drops_the_windows_of_a_client_that_left():
    from ast_audio.service.batcher import DynamicBatcher

    seen: list[int] = []

    def infer(features: torch.Tensor):
        seen.append(len(features))
        time.sleep(0.05)
        return np.zeros((len(features), 3), np.float32), np.zeros((len(features), 4), np.float32)

    stopped: list[bool] = []

    def produce(batcher: DynamicBatcher, ticket, windows: int) -> None:  # as the decoding pool does, window by window
        for _ in range(windows):
            if not batcher.feed(ticket, torch.zeros(1, 4, 4)):
                stopped.append(True)
                return

    async def scenario() -> None:
        batcher = DynamicBatcher(infer, max_batch=2, max_wait_ms=0)
        batcher.start()
        try:
            leaving = batcher.ticket()
            assert batcher.submit(leaving, 10)
            producer = threading.Thread(target=produce, args=(batcher, leaving, 10))
            producer.start()
            await asyncio.sleep(0.07)  # one or two batches of its windows run
            batcher.cancel(leaving)
            producer.join(5)
            assert stopped == [True] and not producer.is_alive()  # its producer was told to stop
            staying = batcher.ticket()
            assert batcher.submit(staying, 3)
            batcher.feed(staying, torch.zeros(3, 4, 4))
            result = await asyncio.wait_for(staying.future, 5)
            assert len(result.scores) == 3 and not leaving.future.done()
        finally:
            batcher.stop()

    asyncio.run(scenario())
    assert sum(seen) < 10 + 3  # the leaving request's later windows were never scored


def test_batcher_stop_turns_away_requests_not_started_then_the_rest():
    """close: a queued request none of whose windows reached the model fails with ShuttingDownError (its windows
    counted as dropped), a started one finishes, new ones are refused; abort: a started one fails too."""
    from ast_audio.service.batcher import DynamicBatcher, ShuttingDownError

    release = threading.Event()

    def infer(features: torch.Tensor):
        release.wait(10)  # the model is busy with the first batch until the test says
        return np.zeros((len(features), 3), np.float32), np.zeros((len(features), 4), np.float32)

    dropped: list[int] = []

    async def started_and_waiting(batcher: DynamicBatcher):
        started, waiting = batcher.ticket(), batcher.ticket()
        assert batcher.submit(started, 4) and batcher.submit(waiting, 2)
        batcher.feed(started, torch.zeros(2, 4, 4))
        while started.claimed == 0:
            await asyncio.sleep(0.005)
        batcher.feed(waiting, torch.zeros(2, 4, 4))
        return started, waiting

    async def scenario() -> None:
        closing = DynamicBatcher(infer, max_batch=2, max_wait_ms=0, on_drop=dropped.append)
        closing.start()
        try:
            started, waiting = await started_and_waiting(closing)
            assert closing.close(ShuttingDownError("stopping")) == 2 and dropped == [2] and closing.closed
            with pytest.raises(ShuttingDownError):
                await asyncio.wait_for(waiting.future, 5)
            with pytest.raises(ShuttingDownError):
                closing.submit(closing.ticket(), 1)
            release.set()
            closing.feed(started, torch.zeros(2, 4, 4))
            assert len((await asyncio.wait_for(started.future, 5)).scores) == 4
        finally:
            closing.stop()
        release.clear()
        aborting = DynamicBatcher(infer, max_batch=2, max_wait_ms=0, on_drop=dropped.append)
        aborting.start()
        try:
            started, waiting = await started_and_waiting(aborting)
            assert aborting.abort(ShuttingDownError("stopped")) == 2 + 2 and dropped == [2, 4]
            for ticket in (started, waiting):
                with pytest.raises(ShuttingDownError):
                    await asyncio.wait_for(ticket.future, 5)
        finally:
            release.set()
            aborting.stop()

    asyncio.run(scenario())


def test_batcher_holds_a_long_request_a_batch_at_a_time():
    """A 100-window request fed in chunks of max_batch: the windows featurised and waiting for the model stay
    under two batches, and the scores come back in window order."""
    from ast_audio.service.batcher import DynamicBatcher

    waiting: list[int] = []
    batcher: DynamicBatcher

    def infer(features: torch.Tensor):
        waiting.append(batcher.ready + len(features))  # featurised windows held while this batch runs
        time.sleep(0.002)
        return features.reshape(len(features), 1).numpy(), features.reshape(len(features), 1).numpy()

    def produce(ticket) -> None:
        for first in range(0, 100, 4):
            batcher.feed(ticket, torch.arange(first, first + 4, dtype=torch.float32).reshape(4, 1, 1))

    async def scenario() -> np.ndarray:
        ticket = batcher.ticket()
        assert batcher.submit(ticket, 100)
        producer = threading.Thread(target=produce, args=(ticket,))
        producer.start()
        result = await asyncio.wait_for(ticket.future, 30)
        producer.join(5)
        return np.stack(result.scores).ravel()

    batcher = DynamicBatcher(infer, max_batch=4, max_wait_ms=0)
    batcher.start()
    try:
        scores = asyncio.run(scenario())
    finally:
        batcher.stop()
    np.testing.assert_array_equal(scores, np.arange(100))
    assert len(waiting) >= 25 and max(waiting) <= 2 * 4, waiting


def test_api_key_guards_every_v1_route(keyed_server, clips):
    data = read(clips["short_wav"])
    status, answer = keyed_server.post("/v1/classify", data, "audio/wav")
    assert status == 401 and "API key" in answer["error"]
    assert keyed_server.post("/v1/classify", data, "audio/wav", Authorization="Bearer wrong")[0] == 401
    assert keyed_server.request("GET", "/v1/model")[0] == 401
    assert keyed_server.post("/v1/classify", data, "audio/wav", Authorization="Bearer s3cret-key")[0] == 200
    assert keyed_server.request("GET", "/healthz")[0] == 200


def test_a_taken_port_is_one_line_before_any_banner(server, served_checkpoint, capsys):
    assert main(["serve", "--model", served_checkpoint, "--port", str(server.port)]) == 1
    err = capsys.readouterr().err
    assert err == (f"ast-audio serve: error: cannot listen on 127.0.0.1:{server.port}: another program is listening "
                   "there (stop it, or pass another --port)\n")
    assert server.request("GET", "/healthz")[0] == 200


def test_errors_map_to_statuses_by_type():
    from ast_audio.errors import AudioError, CheckpointError, ConfigError, DamagedAudioError, NotAudioError
    from ast_audio.service.errors import QueueFullError, RequestLimitError, ShuttingDownError, rejection

    errors = (NotAudioError("a"), AudioError("b"), ConfigError("c"), QueueFullError("d"), CheckpointError("e"),
              DamagedAudioError("f"), RequestLimitError("g"), ShuttingDownError("h"), MemoryError(), KeyError("i"))
    assert [rejection(error).status for error in errors] == [415, 422, 422, 503, 500, 422, 422, 503, 500, 500]
    busy = rejection(QueueFullError("9 windows are queued (limit 8)"))
    assert busy.headers == {"Retry-After": "1"}
    assert busy.message == "server busy: 9 windows are queued (limit 8); retry shortly"
    assert rejection(ShuttingDownError("stopping")).headers == {"Retry-After": "1"}
    assert "ran out of memory" in rejection(MemoryError()).message
    assert rejection(KeyError("i")).message == "internal error (KeyError): see the server's log"


def test_service_modules_import_no_private_names():
    import ast
    import pathlib

    import ast_audio.service

    for path in pathlib.Path(ast_audio.service.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ast_audio"):
                private = [alias.name for alias in node.names
                           if alias.name.startswith("_") and not alias.name.endswith("__")]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_page_in_a_real_browser(server, clips, tmp_path, browser):
    """The page in the session's headless Chromium (conftest.py's `browser`: no network but this machine, so a page
    that needs a CDN stays blank): an upload's labels, timeline, spectrogram and events, a bad upload's error alone,
    /docs offline, and classify's WebVTT as Chromium parses it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"http://127.0.0.1:{server.port}/")
    assert browser.title == "ast-audio"
    browser.find_element(By.ID, "file").send_keys(os.path.abspath(clips["long_wav"]))
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, "#labels .label"))
    shown = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#labels .label")]
    expected = server.post("/v1/classify", read(clips["long_wav"]), "audio/wav")[1]["labels"]
    assert shown == [item["label"] for item in expected]
    assert browser.find_element(By.ID, "timeline-card").is_displayed()
    assert browser.find_element(By.ID, "spectrogram-card").is_displayed()
    ticks = {axis: [tick.text for tick in browser.find_elements(By.CSS_SELECTOR, f"#{axis} .tick")]
             for axis in ("timeline-x", "timeline-y", "spectrogram-x", "spectrogram-y")}
    assert ticks["timeline-y"] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    assert ticks["timeline-x"][0] == ticks["spectrogram-x"][0] == "0" and len(ticks["timeline-x"]) >= 3
    assert float(ticks["timeline-x"][-1]) <= 9.0 and float(ticks["spectrogram-x"][-1]) <= 9.0  # a 9 s clip
    assert ticks["spectrogram-y"][-4:] == ["500", "1k", "2k", "4k"]  # Hz on the mel scale
    os.makedirs(ARTIFACTS, exist_ok=True)
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page.png"))
    _events_follow_the_threshold(browser, server, clips)

    # A bad upload next: its error alone, none of the previous file's result.
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"plain words, no audio")
    browser.find_element(By.ID, "file").send_keys(str(bad))
    WebDriverWait(browser, 60).until(lambda b: "error" in b.find_element(By.ID, "status").get_attribute("class"))
    assert browser.find_element(By.ID, "status").text.startswith("415: notes.wav: not an audio file")
    for card in ("results", "timeline-card", "events-card", "spectrogram-card"):
        assert not browser.find_element(By.ID, card).is_displayed(), card
    assert not browser.find_elements(By.CSS_SELECTOR, "#labels .label, .axis .tick")
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page-after-a-bad-upload.png"))

    # /docs from the package's own files: the operations are listed with no network.
    browser.get(f"http://127.0.0.1:{server.port}/docs")
    WebDriverWait(browser, 60).until(lambda b: b.find_elements(By.CSS_SELECTOR, ".opblock-summary-path"))
    paths = {element.text.strip() for element in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/v1/classify", "/v1/embed", "/v1/model"} <= paths, paths
    assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-docs.png"))
    _webvtt_parsed_by_the_browser(browser)



def _webvtt_parsed_by_the_browser(browser) -> None:
    """`classify --format vtt`'s subtitles as Chromium's own WebVTT parser reads them (a <track> of a <video>):
    every cue, with its times and its text (the escapes undone by the parser), past an hour too."""
    from ast_audio.answers.events import Event
    from ast_audio.answers.formats import to_webvtt

    events = [Event("Dog & <cat>", 0.0, 1.25, 0.91, 0.8), Event("Speech", 0.5, 3.0, 0.7, 0.6),
              Event("Siren", 3599.5, 3723.125, 0.55, 0.5)]
    cues = browser.execute_async_script("""
        const [text, done] = arguments;
        const video = document.createElement('video');
        const track = document.createElement('track');
        track.kind = 'subtitles';
        track.default = true;
        track.src = URL.createObjectURL(new Blob([text], {type: 'text/vtt'}));
        track.addEventListener('load', () => done(Array.from(track.track.cues, c => [c.startTime, c.endTime, c.getCueAsHTML().textContent])));
        track.addEventListener('error', () => done('error'));
        video.appendChild(track);
        document.body.appendChild(video);
        track.track.mode = 'hidden';
    """, to_webvtt(events))
    assert cues != "error", "Chromium refused the WebVTT file"
    assert [(start, end, text.split("\n")[0].rsplit(" ", 1)[0]) for start, end, text in cues] == [
        (e.start, e.end, e.label) for e in events], cues


def _events_follow_the_threshold(browser, server: Server, clips) -> None:
    """The page's events at two thresholds (the slider moved, the server asked again) are the API's at each:
    one below the top label's lowest window score (an event over the whole file), one above every score (none)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    result = server.post("/v1/classify?top_k=6", read(clips["long_wav"]), "audio/wav")[1]  # every label, each window
    top = result["labels"][0]["label"]
    track = [next(x["score"] for x in w["labels"] if x["label"] == top) for w in result["windows"]]
    shown = {}
    highest = max(x["score"] for w in result["windows"] for x in w["labels"])
    for threshold in (max(0.05, np.floor(min(track) * 100) / 100), np.ceil(highest * 100) / 100 + 0.01):
        browser.execute_script("const t = document.getElementById('threshold'); t.value = arguments[0]; "
                               "t.dispatchEvent(new Event('input')); t.dispatchEvent(new Event('change'));",
                               f"{threshold:.2f}")
        WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "events").get_attribute("data-threshold")
                                         and float(b.find_element(By.ID, "events").get_attribute("data-threshold"))
                                         == pytest.approx(threshold))
        rows = [tuple(cell.text for cell in row.find_elements(By.CSS_SELECTOR, ".c0, .c1, .c2"))
                for row in browser.find_elements(By.CSS_SELECTOR, "#events .event")]
        status, answer = server.post(f"/v1/classify?events=true&threshold={threshold:.2f}", read(clips["long_wav"]),
                                     "audio/wav")
        assert status == 200 and rows == [(e["label"], f"{e['start']:.2f}", f"{e['end']:.2f}")
                                          for e in answer["events"]], (threshold, rows)
        shown[threshold] = rows
        if len(shown) == 1:
            assert browser.save_screenshot(os.path.join(ARTIFACTS, "serve-page-events.png"))
    low, high = shown.values()
    assert (top, "0.00", f"{result['duration']:.2f}") in low and high == [], shown
    assert browser.find_element(By.CSS_SELECTOR, "#events .none").text == f"No score reaches {threshold:.2f}."


def test_sigterm_finishes_the_request_in_flight(keyed_server, clips, tmp_path):
    """Last test of this module: it stops the keyed server. A request the model has started on finishes; the
    ones queued behind it finish too or get 503 at once (had they not started); the server exits 0, quietly."""
    path = tmp_path / "long.flac"
    sf.write(path, (0.1 * np.random.default_rng(1).standard_normal(16000 * 400)).astype(np.float32), 16000)
    auth = {"Authorization": "Bearer s3cret-key"}
    answers: dict[str, tuple] = {}

    def send(name: str, data: bytes, content_type: str) -> threading.Thread:
        thread = threading.Thread(target=lambda: answers.__setitem__(name, keyed_server.post(
            "/v1/classify?timeline=false", data, content_type, **auth)))
        thread.start()
        return thread

    batches = keyed_server.metric("ast_audio_batch_size_count")
    workers = [send("long", read(str(path)), "audio/flac")]
    deadline = time.monotonic() + 60
    while keyed_server.metric("ast_audio_batch_size_count") == batches and time.monotonic() < deadline:
        time.sleep(0.02)  # until the model has started on it
    workers += [send(f"queued {i}", read(clips["long_wav"]), "audio/wav") for i in range(3)]
    time.sleep(0.3)
    keyed_server.process.send_signal(signal.SIGTERM)
    for worker in workers:
        worker.join(timeout=120)
    assert keyed_server.process.wait(timeout=60) == 0
    status, result = answers["long"]
    assert status == 200 and result["duration"] == pytest.approx(400.0)
    for name in ("queued 0", "queued 1", "queued 2"):
        status, result = answers[name]
        assert status == 200 or (status == 503 and "server shutting down" in result["error"]), (name, result)
    assert "Traceback" not in keyed_server.process.stderr.read()
