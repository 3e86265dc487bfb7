"""Live tagging at real-time pace, in one run: latency, concurrent streams, memory over a long stream.

For each model (--models: small, a 2-layer 64-wide encoder; base, the AudioSet geometry; seeded random weights,
which time as trained ones do), window the model's input and hop half of it (or --hop):
1. The model's time for one window (features + model, batch 1, median of 10) in this process, then the latency
   from the end of a window's audio to its result, p50/p95 (the first window, which pays the start-up, apart):
   `ast-audio listen - --raw-format f32le` fed by a writer that paces --chunk-ms chunks of noise at wall-clock
   speed for --seconds of stream (latency: a window's line read from its stdout minus the time the chunk
   holding the window's last sample was written), and a WebSocket client of `ast-audio serve`'s /v1/stream
   sending the same paced PCM (latency: the window's record received minus the time its last chunk was sent).
   Target printed beside: p95 within one hop plus the one-window time.
2. Concurrent streams through the service: N clients at real-time pace each (N = 1, 2, 4, ... up to
   --max-streams, their starts spread over one hop, as streams that began at different times), until windows
   drop or p95 exceeds the target; per N: windows, dropped, p50/p95 latency, mean model batch (from /metrics,
   whose batcher the streams share with uploads) and the server's resident memory.
3. Resident memory over a long stream of --long-minutes, fed as fast as it is read (the reader waits for the
   model: nothing dropped), in 1 s pieces: through `listen -` (its process's memory) and through /v1/stream with
   realtime=false (the server's, after the streams above and a 5-minute stream to warm it up), each read 20
   times along the stream: the first reading against the last, and the median of the first half of the
   readings against the second (as bench_serve does). Target: no growth.
Servers and listen processes run on 127.0.0.1, with bounded time, and are stopped by the pid started here.

    python benchmarks/bench_live.py [--small] [--models small,base] [--seconds 60] [--chunk-ms 50] [--hop S]
                                    [--max-streams 64] [--long-minutes 20] [--json out.json]

--small is the quick check (about three minutes): the small model only, 20 s streams, N up to 4 (the long
stream stays 20 min: a shorter one is mostly the climb to the plateau while the model's buffers fill). The
full run (both models) takes about 20-25 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from bench_serve import metric, resident_mb, start_server  # noqa: E402
from checkpoints import random_checkpoint  # noqa: E402
from table import cpu_name, print_table  # noqa: E402

RATE = 16000  # the models' sampling rate: the PCM sent is already at it (no resampling in the measurement)
# The server's resident memory climbs to its plateau over the first ~70 windows of a stream read as fast as the model
# keeps up (buffers of whole batches in flight): a stream this long goes first, unmeasured.
WARMUP_MINUTES = 5.0
NOISE = (0.1 * np.random.default_rng(0).standard_normal(30 * RATE)).astype(np.float32)


def noise(first: int, count: int) -> bytes:
    """Samples [first, first + count) of a stream of noise (a 30 s loop), as f32le bytes."""
    indices = (np.arange(first, first + count) % len(NOISE))
    return NOISE[indices].tobytes()


@dataclass
class SendLog:
    """When each piece of a stream left this process: (samples sent so far, perf_counter s) after each write."""

    totals: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)

    def add(self, total: int) -> None:
        self.totals.append(total)
        self.times.append(time.perf_counter())

    def sent_at(self, sample: int) -> float:
        """The time the piece holding sample `sample` (exclusive end of a window) was sent."""
        return self.times[min(bisect.bisect_left(self.totals, sample), len(self.times) - 1)]


def window_latency(record: dict, arrived: float, log: SendLog) -> float:
    """Seconds from sending a window's last sample to receiving its record (its samples as the planner cuts
    them: round(start * rate) + round(length * rate))."""
    stop = round(record["start"] * RATE) + round((record["end"] - record["start"]) * RATE)
    return arrived - log.sent_at(stop)


def paced_send(send, seconds: float, chunk_ms: float, log: SendLog, realtime: bool = True) -> None:
    """`send(bytes)` a stream of `seconds` of noise in chunks of `chunk_ms`, each at its wall-clock time (or as
    fast as `send` returns), logging each."""
    chunk, total, started = int(RATE * chunk_ms / 1000), round(seconds * RATE), time.perf_counter()
    for first in range(0, total, chunk):
        count = min(chunk, total - first)
        if realtime:
            delay = started + (first + count) / RATE - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        send(noise(first, count))
        log.add(first + count)


def one_window_seconds(checkpoint: str, hop: float | None) -> tuple[float, float, float]:
    """(window s, hop s, median seconds of features + model for one window at batch 1) in this process."""
    from ast_audio import AudioClassifier

    classifier = AudioClassifier.from_pretrained(checkpoint, hop=hop)
    runner = classifier.runner
    length, times = round(classifier.window * RATE), []
    for call in range(13):  # the first calls are slower (allocations, kernels chosen): 3 to warm up
        samples = np.frombuffer(noise(call * RATE, length), np.float32)
        started = time.perf_counter()
        runner.infer(runner.features([samples]))
        times.append(time.perf_counter() - started)
    times = times[3:]
    return classifier.window, classifier.hop, float(np.median(times))


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_s": float("nan"), "p95_s": float("nan"), "max_s": float("nan")}
    return {"p50_s": float(np.percentile(latencies, 50)), "p95_s": float(np.percentile(latencies, 95)),
            "max_s": float(max(latencies))}


def listen_command(checkpoint: str, hop: float) -> list[str]:
    return [sys.executable, "-m", "ast_audio", "listen", "-", "--model", checkpoint, "--raw-format", "f32le",
            "--rate", str(RATE), "--hop", repr(hop), "--top-k", "1"]


def fed_listen(checkpoint: str, hop: float, feed: Callable, wait_s: float) -> tuple[list, int | None, str]:
    """`ast-audio listen -` given its standard input by `feed(process, send)` (send(bytes) writes and flushes);
    its lines with their arrival times, its exit status and its stderr."""
    arrivals: list = []
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(listen_command(checkpoint, hop), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=errors)
        try:
            reader = threading.Thread(target=read_lines, args=(process.stdout, arrivals), daemon=True)
            reader.start()

            def send(data: bytes) -> None:
                process.stdin.write(data)
                process.stdin.flush()

            feed(process, send)
            process.stdin.close()
            reader.join(timeout=wait_s)
            process.wait(timeout=60)
        finally:
            stop(process)
        errors.seek(0)
        stderr = errors.read().decode(errors="replace").strip()
    return arrivals, process.returncode, stderr


def listen_latency(checkpoint: str, hop: float, seconds: float, chunk_ms: float) -> dict:
    """`ast-audio listen -` fed at real-time pace: per-window latencies (the first window apart)."""
    log = SendLog()
    arrivals, status, stderr = fed_listen(checkpoint, hop, lambda _, send: paced_send(send, seconds, chunk_ms, log),
                                          seconds + 120)
    windows = sorted((record["end"], window_latency(record, arrived, log)) for record, arrived in arrivals
                     if "start" in record)
    if status != 0 or not windows:
        raise RuntimeError(f"listen failed (exit {status}): {stderr[-500:]}")
    latencies = [latency for _, latency in windows]
    return {"path": "listen -", "windows": len(windows), "first_s": latencies[0], **percentiles(latencies[1:]),
            "dropped": 0}


def read_lines(handle, arrivals: list) -> None:
    """JSON lines of `handle` with their arrival times, until it ends."""
    for line in handle:
        arrivals.append((json.loads(line), time.perf_counter()))


def stop(process: subprocess.Popen) -> None:
    """End a process started here, by its pid: SIGTERM, then SIGKILL after 30 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def stream_url(port: int, hop: float) -> str:
    return f"ws://127.0.0.1:{port}/v1/stream?format=f32le&rate={RATE}&hop={hop!r}&top_k=1"


def websocket_stream(port: int, hop: float, seconds: float, chunk_ms: float, delay: float) -> dict:
    """One client of /v1/stream: after `delay` s, `seconds` of paced PCM, then {"type": "end"}; its windows'
    (end, latency) in order, the windows the server reported dropped, its error (None when it ended cleanly)."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    time.sleep(delay)
    log, arrivals, state = SendLog(), [], {"dropped": 0, "summary": None, "error": None, "close": None}
    connection = connect(stream_url(port, hop), open_timeout=seconds + 120, max_size=None)
    receiver = threading.Thread(target=receive, args=(connection, arrivals, state), daemon=True)
    receiver.start()
    try:
        paced_send(connection.send, seconds, chunk_ms, log)
        connection.send(json.dumps({"type": "end"}))
    except (OSError, WebSocketException) as exc:
        state["error"] = state["error"] or f"send: {exc}"
    receiver.join(timeout=seconds + 120)
    connection.close()
    if state["error"] is None and (state["summary"] is None or state["close"] != 1000):
        state["error"] = f"no summary, or closed with {state['close']}"
    windows = sorted((record["end"], window_latency(record, arrived, log)) for record, arrived in arrivals)
    dropped = max(state["dropped"], (state["summary"] or {}).get("dropped", 0))
    return {"windows": windows, "dropped": dropped, "error": state["error"]}


def receive(connection, arrivals: list, state: dict) -> None:
    """The server's messages, until it closes: window records with their arrival times into `arrivals`, the
    rest into `state` (dropped, summary, error, close code)."""
    from websockets.exceptions import ConnectionClosed, WebSocketException

    try:
        while True:
            try:
                data = connection.recv()
            except ConnectionClosed as closed:
                state["close"] = closed.rcvd.code if closed.rcvd is not None else None
                if state["close"] is None:
                    state["error"] = state["error"] or f"receive: {closed}"
                return
            arrived = time.perf_counter()
            if not isinstance(data, str):
                continue
            message = json.loads(data)
            if "start" in message:
                arrivals.append((message, arrived))
            elif "dropped" in message:
                state["dropped"] = max(state["dropped"], message["dropped"])
            elif "summary" in message:
                state["summary"] = message["summary"]
            elif "error" in message:
                state["error"] = message["error"]
    except (OSError, WebSocketException) as exc:
        if state["close"] is None:
            state["error"] = state["error"] or f"receive: {exc}"


def stream_level(port: int, pid: int, clients: int, window: float, hop: float, seconds: float,
                 chunk_ms: float) -> dict:
    """`clients` concurrent paced streams, their starts spread over one hop; latencies of every window, windows
    dropped (reported, or missing against the file's plan), errors, mean model batch, the server's memory."""
    from ast_audio.inference.windows import plan_windows

    batches, windows = metric(port, "ast_audio_batch_size_count"), metric(port, "ast_audio_batch_size_sum")
    streams: list[dict] = [{}] * clients

    def client(index: int) -> None:
        try:
            streams[index] = websocket_stream(port, hop, seconds, chunk_ms, index * hop / clients)
        except Exception as exc:  # noqa: BLE001 - a refused connection is a row's error, not the run's end
            streams[index] = {"windows": [], "dropped": 0, "error": f"{type(exc).__name__}: {exc}"}

    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batches = metric(port, "ast_audio_batch_size_count") - batches
    windows = metric(port, "ast_audio_batch_size_sum") - windows
    planned = len(plan_windows(seconds, window, hop))
    latencies = [latency for stream in streams for _, latency in stream["windows"]]
    errors = [stream["error"] for stream in streams if stream["error"]]
    return {"streams": clients, "windows": len(latencies),
            "dropped": sum(max(stream["dropped"], planned - len(stream["windows"])) for stream in streams),
            **percentiles(latencies), "mean_batch": windows / batches if batches else float("nan"),
            "errors": len(errors), "first_error": errors[0] if errors else None,
            "server_mb": resident_mb(pid), "first_stream": streams[0]["windows"]}


def service_rows(checkpoint: str, window: float, hop: float, target: float, args: argparse.Namespace) -> dict:
    """One server for: the rows of N = 1, 2, 4, ... streams (until drops, errors or p95 over `target`), the
    latency row of its first stream, and its memory over a long stream; or the reason there are none."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    room = str(args.max_streams + 1)
    process, port = start_server(checkpoint, 8, ("--max-streams", room, "--max-streams-per-client", room))
    try:
        try:
            connect(stream_url(port, hop), open_timeout=30).close()
        except (OSError, WebSocketException) as exc:
            return {"streams": [], "single": None, "memory": None, "missing": f"no /v1/stream ({exc})"}
        rows, clients = [], 1
        while clients <= args.max_streams:
            rows.append(stream_level(port, process.pid, clients, window, hop, args.seconds, args.chunk_ms))
            print(f"  {clients} stream(s): p95 {rows[-1]['p95_s']:.3f} s, dropped {rows[-1]['dropped']}, "
                  f"errors {rows[-1]['errors']}", file=sys.stderr, flush=True)
            if rows[-1]["dropped"] or rows[-1]["errors"] or not rows[-1]["p95_s"] <= target:
                break
            clients *= 2
        websocket_memory(port, process.pid, hop, WARMUP_MINUTES)
        memory = websocket_memory(port, process.pid, hop, args.long_minutes)
    finally:
        stop(process)
    first = rows[0]["first_stream"]
    latencies = [latency for _, latency in first]
    single = {"path": "/v1/stream", "windows": len(first), "first_s": latencies[0] if latencies else float("nan"),
              **percentiles(latencies[1:]), "dropped": rows[0]["dropped"]}
    return {"streams": rows, "single": single, "memory": memory, "missing": None}


def memory_row(path: str, minutes: float, windows: int, wall: float, readings: list[float],
               error: str | None = None) -> dict:
    """A long stream's memory figures: readings (MB) along it, medians of their first and second halves."""
    half = len(readings) // 2
    return {"path": path, "minutes": minutes, "windows": windows, "wall_s": wall, "speed": minutes * 60 / wall,
            "readings_mb": readings, "first_half_mb": float(np.median(readings[:half] or readings)),
            "second_half_mb": float(np.median(readings[half:])), "error": error}


class MemoryProbe:
    """Resident memory of process `pid` read each time another 1/`count` of a stream of `total` samples has been
    sent (`sent(samples)` after each piece)."""

    def __init__(self, pid: int, total: int, count: int = 20) -> None:
        self.pid, self.step, self.count, self.total = pid, total / count, count, 0
        self.readings: list[float] = []

    def sent(self, samples: int) -> None:
        self.total += samples
        if len(self.readings) < min(self.count, int(self.total / self.step + 1e-9)):
            self.readings.append(resident_mb(self.pid))


def listen_memory(checkpoint: str, hop: float, minutes: float) -> dict:
    """`ast-audio listen -` over `minutes` of stream written as fast as it reads (1 s pieces); its resident
    memory read 20 times, evenly along the stream."""
    probes: list = []

    def feed(process: subprocess.Popen, send: Callable) -> None:
        probe = MemoryProbe(process.pid, round(minutes * 60 * RATE))
        probes.append(probe)

        def counted_send(data: bytes) -> None:
            send(data)
            probe.sent(len(data) // 4)

        paced_send(counted_send, minutes * 60, 1000, SendLog(), realtime=False)

    started = time.perf_counter()
    arrivals, status, stderr = fed_listen(checkpoint, hop, feed, 3600)
    if status != 0:
        raise RuntimeError(f"listen failed (exit {status}): {stderr[-500:]}")
    return memory_row("listen -", minutes, sum("start" in record for record, _ in arrivals),
                      time.perf_counter() - started, probes[0].readings)


AHEAD_S = 30.0  # seconds of stream a client sends ahead of the windows it has back (websocket_memory)


def websocket_memory(port: int, pid: int, hop: float, minutes: float) -> dict:
    """One /v1/stream stream of `minutes` with realtime=false (the server reads it as fast as the model keeps
    up, nothing dropped), sent in 1 s pieces at most `AHEAD_S` of stream time ahead of the last window received
    (a client's flow control: audio sent far ahead waits in the socket's buffers, and the WebSocket keepalive's
    ping and pong wait behind it, so a slow model's stream was closed with 1011 after 20 s); the server's
    resident memory read 20 times along it."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    arrivals: list = []
    state = {"dropped": 0, "summary": None, "error": None, "close": None}
    probe, started = MemoryProbe(pid, round(minutes * 60 * RATE)), time.perf_counter()
    connection = connect(stream_url(port, hop) + "&realtime=false", open_timeout=600, max_size=None)
    receiver = threading.Thread(target=receive, args=(connection, arrivals, state), daemon=True)
    receiver.start()

    sent = [0.0]

    def send(data: bytes) -> None:
        while sent[0] - (arrivals[-1][0]["end"] if arrivals else 0.0) > AHEAD_S and receiver.is_alive():
            time.sleep(0.02)
        connection.send(data)
        sent[0] += len(data) / 4 / RATE
        probe.sent(len(data) // 4)

    try:
        paced_send(send, minutes * 60, 1000, SendLog(), realtime=False)
        connection.send(json.dumps({"type": "end"}))
    except (OSError, WebSocketException) as exc:
        state["error"] = state["error"] or f"send: {exc}"
    receiver.join(timeout=3600)
    connection.close()
    return memory_row("/v1/stream", minutes, len(arrivals), time.perf_counter() - started,
                      probe.readings or [float("nan")], state["error"])


def measure_model(name: str, args: argparse.Namespace) -> dict:
    """Every measurement for one model, each printed to stderr as it ends."""
    checkpoint = random_checkpoint(name == "small")
    window, hop, model_s = one_window_seconds(checkpoint, args.hop)
    target = hop + model_s
    print(f"{name}: window {window:g} s, hop {hop:g} s, one window {model_s * 1000:.0f} ms, target p95 "
          f"{target:.2f} s", file=sys.stderr, flush=True)
    latency = [listen_latency(checkpoint, hop, args.seconds, args.chunk_ms)]
    print(f"  listen: p95 {latency[0]['p95_s']:.3f} s", file=sys.stderr, flush=True)
    service = service_rows(checkpoint, window, hop, target, args)
    memory = [listen_memory(checkpoint, hop, args.long_minutes)] + ([service["memory"]] if service["memory"] else [])
    for row in memory:
        print(f"  memory, {row['path']}: {row['first_half_mb']:.0f} -> {row['second_half_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    return {"model": name, "window_s": window, "hop_s": hop, "one_window_s": model_s, "target_s": target,
            "latency": latency + ([service["single"]] if service["single"] else []), "streams": service["streams"],
            "service_missing": service["missing"], "memory": memory}


def print_report(results: list[dict], args: argparse.Namespace) -> None:
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); paced chunks of {args.chunk_ms:g} ms, {args.seconds:g} s "
          "streams of noise, f32le at 16 kHz")
    for result in results:
        print(f"{result['model']} model: window {result['window_s']:g} s, hop {result['hop_s']:g} s, one window "
              f"(features + model, batch 1) {result['one_window_s'] * 1000:.1f} ms, target p95 <= hop + one window "
              f"= {result['target_s']:.2f} s" + (f"; service: {result['service_missing']}"
                                                  if result["service_missing"] else ""))
    print("\nLatency from the end of a window's audio to its result, at real-time pace (first window apart: it "
          "pays the start-up)")
    print_table(
        [("model", 6, "s"), ("path", 11, "s"), ("windows", 8, "d"), ("first s", 8, ".3f"), ("p50 s", 7, ".3f"),
         ("p95 s", 7, ".3f"), ("max s", 7, ".3f"), ("target s", 9, ".2f"), ("p95/target", 11, ".0%")],
        [[r["model"], row["path"], row["windows"], row["first_s"], row["p50_s"], row["p95_s"], row["max_s"],
          r["target_s"], row["p95_s"] / r["target_s"]] for r in results for row in r["latency"]])
    if any(r["streams"] for r in results):
        print("\nConcurrent streams through /v1/stream, each at real-time pace (starts spread over one hop), "
              "until windows drop or p95 exceeds the target")
        print_table(
            [("model", 6, "s"), ("streams", 8, "d"), ("windows", 8, "d"), ("dropped", 8, "d"), ("p50 s", 7, ".3f"),
             ("p95 s", 7, ".3f"), ("target s", 9, ".2f"), ("mean batch", 11, ".2f"), ("server MB", 10, ".0f"),
             ("errors", 7, "d")],
            [[r["model"], row["streams"], row["windows"], row["dropped"], row["p50_s"], row["p95_s"], r["target_s"],
              row["mean_batch"], row["server_mb"], row["errors"]] for r in results for row in r["streams"]])
        for r in results:
            for row in r["streams"]:
                if row["first_error"]:
                    print(f"{r['model']}, {row['streams']} streams: first error: {row['first_error']}")
    print(f"\nResident memory over a long stream of {args.long_minutes:g} min (listen's process, the server's), read "
          "20 times along it, fed as fast as the model reads (nothing dropped); target: no growth")
    print_table(
        [("model", 6, "s"), ("path", 11, "s"), ("windows", 8, "d"), ("x real time", 12, ".1f"), ("first MB", 9, ".0f"),
         ("last MB", 8, ".0f"), ("range MB", 10, "s"), ("1st half", 9, ".0f"), ("2nd half", 9, ".0f"),
         ("growth", 7, "+.0f")],
        [[r["model"], m["path"], m["windows"], m["speed"], m["readings_mb"][0], m["readings_mb"][-1],
          f"{min(m['readings_mb']):.0f}-{max(m['readings_mb']):.0f}", m["first_half_mb"], m["second_half_mb"],
          m["second_half_mb"] - m["first_half_mb"]] for r in results for m in r["memory"]])
    for r in results:
        for m in r["memory"]:
            if m["error"]:
                print(f"{r['model']}, {m['path']}: error: {m['error']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--small", action="store_true",
                        help="quick check: the small model, 20 s streams, up to 4 streams")
    parser.add_argument("--models", help="comma-separated, from small and base (default: small,base)")
    parser.add_argument("--seconds", type=float, help="stream time of each paced stream (default 60; --small 20)")
    parser.add_argument("--chunk-ms", type=float, default=50.0, help="paced chunk length in ms (default 50)")
    parser.add_argument("--hop", type=float, help="seconds between windows (default: the model's, half a window)")
    parser.add_argument("--max-streams", type=int, help="most concurrent streams tried (default 64; --small 4)")
    parser.add_argument("--long-minutes", type=float, help="minutes of the long stream (default 20)")
    parser.add_argument("--json", help="write every figure to this file")
    args = parser.parse_args()
    args.models = args.models or ("small" if args.small else "small,base")
    args.seconds = args.seconds or (20.0 if args.small else 60.0)
    args.max_streams = args.max_streams or (4 if args.small else 64)
    args.long_minutes = args.long_minutes or 20.0
    models = [name.strip() for name in args.models.split(",")]
    if not set(models) <= {"small", "base"}:
        parser.error(f"--models {args.models}: expected names from small, base")
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    results = [measure_model(name, args) for name in models]
    print_report(results, args)
    print(f"\n(whole run {time.perf_counter() - started:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"cpu": cpu_name(), "args": vars(args), "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
