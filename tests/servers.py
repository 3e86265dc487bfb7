"""Servers the tests start on 127.0.0.1 and stop by the pid they started: `ast-audio serve` in a subprocess (the
session's own is conftest.py's `server` fixture), and where the tests keep what a person should look at."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time

ARTIFACTS = os.environ.get("AST_AUDIO_TEST_ARTIFACTS", os.path.join(os.path.dirname(__file__), "..", "test-artifacts"))


class Server:
    """`ast-audio serve` in a subprocess on a free loopback port."""

    def __init__(self, checkpoint: str, *flags: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ast_audio", "serve", "--model", checkpoint, "--port", str(self.port), *flags],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.process.communicate()[1]}")
            try:
                if self.request("GET", "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("server did not become ready in 90 s")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, dict, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def post(self, path: str, data: bytes, content_type: str = "audio/mpeg", **headers) -> tuple[int, dict]:
        status, _, body = self.request("POST", path, data, {"Content-Type": content_type, **headers})
        return status, json.loads(body)

    def metric(self, name: str, labels: str = "") -> float:
        text = self.request("GET", "/metrics")[2].decode()
        prefix = f"{name}{{{labels}}}" if labels else name
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(prefix + " "))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
