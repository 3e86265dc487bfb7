"""Servers the tests start on 127.0.0.1 and stop by the pid they started: `ast-audio serve` in a subprocess (the
session's own is conftest.py's `server` fixture); the headless Chromium that drives the page (conftest.py's
`browser`) and the sound its fake microphone plays; where the tests keep what a person should look at."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np

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


MICROPHONE_RATE = 16000  # Hz


def brown_noise(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Brown (1/f^2 power) noise at `level` RMS, `seconds` long at MICROPHONE_RATE, float32: periodic (shaped in one
    FFT), so a fake microphone that loops it plays it without a click."""
    samples = int(seconds * MICROPHONE_RATE)
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(samples))
    frequencies = np.fft.rfftfreq(samples, 1 / MICROPHONE_RATE)
    noise = np.fft.irfft(spectrum / np.maximum(frequencies, 20.0), samples)
    return (level * noise / noise.std()).astype(np.float32)


def chromium(microphone_wav: str):
    """A headless Chromium (Debian's chromium and chromium-driver, through selenium), or None when they are not
    installed. No network but this machine (a page that needs a CDN stays blank); its microphone is Chromium's fake
    one, playing `microphone_wav` in a loop, allowed without a prompt. The caller quits it."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (binary and driver_path):
        return None
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1400",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--use-fake-ui-for-media-stream",
                     "--use-fake-device-for-media-stream", f"--use-file-for-fake-audio-capture={microphone_wav}",
                     "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))
    browser.set_page_load_timeout(30)
    return browser
