"""The thread budget: decoding, features and the model share the machine's cores without oversubscribing them.

Torch's intra-op thread count is per calling thread here (OpenMP), and its default (every core) is a poor
choice for small, frequent work beside a busy model: on a 2-core machine with another process busy, one clip's
features took about 400 ms with the default threads and about 10 ms with one. So the stages that prepare
input (decoding, resampling, fbank) run single-threaded in their own thread, and the model gets the cores:
all of them on machines of up to 2 cores (the input stages are about 0.1% of the work), one less above that.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator

import torch

from ast_audio.errors import ConfigError


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class ThreadBudget:
    """Intra-op threads per stage: `model` for the model's forward pass, `features` for decoding and fbank."""

    model: int
    features: int = 1

    def __post_init__(self) -> None:
        if self.model < 1 or self.features < 1:
            raise ConfigError(f"thread counts must be at least 1, got model={self.model}, features={self.features}")

    @classmethod
    def for_machine(cls, model_threads: int | None = None, cores: int | None = None) -> "ThreadBudget":
        """The default split of this machine's cores (see the module docstring); `model_threads` overrides it."""
        cores = cores or available_cores()
        if model_threads is None:
            model_threads = cores if cores <= 2 else cores - 1
        return cls(model=model_threads)

    @contextlib.contextmanager
    def model_stage(self) -> Iterator[None]:
        """Run the enclosed model calls with `model` threads (restored afterwards)."""
        with _threads(self.model):
            yield

    @contextlib.contextmanager
    def feature_stage(self) -> Iterator[None]:
        """Run the enclosed decoding and feature work with `features` threads (restored afterwards)."""
        with _threads(self.features):
            yield


@contextlib.contextmanager
def _threads(count: int) -> Iterator[None]:
    previous = torch.get_num_threads()
    if previous != count:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
