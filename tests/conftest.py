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
