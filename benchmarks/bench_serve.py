"""Load on `ast-audio serve` next to offline `classify` on the same clips, in one run.

Starts the server on 127.0.0.1 (stopped by its pid at the end), sends 10 s WAV clips from 1, 4 and 16
concurrent clients, and reports throughput (clips/s), p50/p99 latency, mean model batch size (from /metrics)
and errors, next to `AudioClassifier` on the same clips in this process. Then it sends --memory-requests
requests from 4 clients, reading the server's resident memory after the first 10 and then 20 times along the
way, and reports after 10 against after all of them, and the median of the first half of the readings against
the second (one reading moves by tens of MB with the requests in flight; growth shows in the medians).

    python benchmarks/bench_serve.py [--small] [--requests 32] [--memory-requests 1000] [--json out.json]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from checkpoints import random_checkpoint  # noqa: E402
from table import print_table  # noqa: E402


def start_server(checkpoint: str, max_batch: int, options: tuple[str, ...] = ()) -> tuple[subprocess.Popen, int]:
    """`ast-audio serve` on 127.0.0.1 at a free port, ready (its /readyz 200); `options`: more serve options.
    Callers: this script, bench_live."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "ast_audio", "serve", "--model", checkpoint, "--port", str(port),
                                "--max-batch", str(max_batch), "--max-queue", "4096", *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return process, port
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("server did not start")


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "audio/wav"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def metric(port: int, name: str) -> float:
    text = request(port, "GET", "/metrics")[1].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + " "))


def load(port: int, clips: list[bytes], clients: int, total: int) -> dict:
    """`total` requests from `clients` threads; throughput, latency percentiles, errors, mean batch size."""
    latencies: list[float] = []
    errors = [0]
    counter = iter(range(total))
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            started = time.perf_counter()
            status, _ = request(port, "POST", "/v1/classify?timeline=false", clips[index % len(clips)])
            with lock:
                latencies.append(time.perf_counter() - started)
                errors[0] += status != 200

    batches, windows = metric(port, "ast_audio_batch_size_count"), metric(port, "ast_audio_batch_size_sum")
    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    batches = metric(port, "ast_audio_batch_size_count") - batches
    windows = metric(port, "ast_audio_batch_size_sum") - windows
    return {"clients": clients, "requests": total, "clips_per_s": total / elapsed,
            "p50_s": float(np.percentile(latencies, 50)), "p99_s": float(np.percentile(latencies, 99)),
            "mean_batch": windows / max(batches, 1), "errors": errors[0]}


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 2-layer, 64-wide model instead of the base size")
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    parser.add_argument("--memory-requests", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import soundfile as sf

    from ast_audio import AudioClassifier

    tmp = random_checkpoint(args.small)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(8):
        paths.append(os.path.join(tmp, f"clip{i}.wav"))
        sf.write(paths[-1], (0.1 * rng.standard_normal(160000)).astype(np.float32), 16000)
    clips = [open(p, "rb").read() for p in paths]

    classifier = AudioClassifier.from_pretrained(tmp, batch_size=args.max_batch)
    list(classifier.iter_classify(paths[:2]))  # warm-up
    started = time.perf_counter()
    offline_count = max(args.requests, 16)
    list(classifier.iter_classify([paths[i % len(paths)] for i in range(offline_count)]))
    offline = offline_count / (time.perf_counter() - started)
    del classifier

    process, port = start_server(tmp, args.max_batch)
    try:
        load(port, clips, 2, 4)  # warm-up
        rows = [load(port, clips, clients, args.requests) for clients in (1, 4, 16)]
        before = resident_mb(process.pid)
        load(port, clips, 4, 10)
        after_10 = resident_mb(process.pid)
        readings = []
        step = max(1, args.memory_requests // 20)
        for done in range(0, args.memory_requests, step):
            load(port, clips, 4, min(step, args.memory_requests - done))
            readings.append(resident_mb(process.pid))
        after_all = readings[-1]
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    print(f"{'small' if args.small else 'base'} model, 10 s clips, max batch {args.max_batch}; "
          f"offline classify: {offline:.2f} clips/s")
    print_table(
        [("clients", 8, "d"), ("clips/s", 8, ".2f"), ("vs offline", 11, ".0%"), ("p50 s", 7, ".2f"), ("p99 s", 7, ".2f"),
         ("mean batch", 11, ".1f"), ("errors", 7, "d")],
        [[r["clients"], r["clips_per_s"], r["clips_per_s"] / offline, r["p50_s"], r["p99_s"], r["mean_batch"],
          r["errors"]] for r in rows],
    )
    half = len(readings) // 2
    first, second = float(np.median(readings[:half] or readings)), float(np.median(readings[half:]))
    print(f"server memory: {before:.0f} MB before, {after_10:.0f} MB after 10 requests, {after_all:.0f} MB after "
          f"{args.memory_requests} more ({after_all - after_10:+.0f} MB); readings every {step} requests: "
          f"{min(readings):.0f}-{max(readings):.0f} MB, median {first:.0f} MB in the first half, {second:.0f} MB in "
          f"the second ({second - first:+.0f} MB)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"offline_clips_per_s": offline, "load": rows, "memory_mb": [before, after_10, after_all],
                       "memory_readings_mb": readings},
                      handle, indent=2)


if __name__ == "__main__":
    main()
