"""Shared test fixtures and the test environment (offline Hub, seeded torch); helpers the tests import are in
helpers.py."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield


# The service's session server, shared by test_serve.py and the page's tests (test_page_live.py): one per run.
@pytest.fixture(scope="session")
def served_checkpoint(tmp_path_factory):
    from helpers import save_small_checkpoint

    return save_small_checkpoint(tmp_path_factory.mktemp("served"), labels=6, seed=3)


@pytest.fixture(scope="session")
def server(served_checkpoint):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    from servers import Server

    running = Server(served_checkpoint, "--max-upload-mb", "2", "--max-duration-s", "40", "--max-wait-ms", "100",
                     "--max-batch", "16", "--threads", "1", "--max-windows-per-request", "1000")
    yield running
    running.stop()


@pytest.fixture(scope="session")
def microphone_wav(tmp_path_factory) -> str:
    """The WAV the session browser's fake microphone plays in a loop: 4 s of brown noise at 0.1 RMS, 16-bit at
    16 kHz, as a recorder writes it (why this sound: test_page_live.py)."""
    import soundfile as sf
    from servers import MICROPHONE_RATE, brown_noise

    path = tmp_path_factory.mktemp("microphone") / "brown-noise.wav"
    sf.write(path, brown_noise(4.0, level=0.1), MICROPHONE_RATE, subtype="PCM_16")
    return str(path)


@pytest.fixture(scope="session")
def browser(microphone_wav):
    """One headless Chromium per run (servers.chromium), shared by the page's tests; skipped without Debian's
    chromium and chromium-driver."""
    from servers import chromium

    running = chromium(microphone_wav)
    if running is None:
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    yield running
    running.quit()
