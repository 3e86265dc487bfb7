"""Where and how wide computation runs: the device (`resolve_device`), the cores this process may use
(`available_cores`) and the thread budget (`ThreadBudget`), shared by inference, training and the commands.
Keeping freed memory (glibc's allocator) is `ast_audio.allocator`, the other leaf of the process's runtime.

The thread budget says how many intra-op threads the model stage and the input stage (decoding, fbank) use, with one
owner for thread counts: each stage sets its own thread's count once and leaves it so (the model's stage is the
thread that calls the runner; the input stage is the runner's background thread), and `--threads N` reaches both.
Measured on the 2-core machine (benchmarks/bench_threads.py): a single-threaded input stage computed features 1.9x
faster beside the model on a quiet machine, but with another process busy on one core the whole pipeline ran at
0.8x; every stage on the machine's cores was the fastest overall in both cases, so that is the default. Setting the
count per batch instead (and "restoring" the value torch.get_num_threads() reports, which is the last count any
thread set, while OpenMP keeps one per thread) rebuilt thread pools every batch.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import torch

from ast_audio.errors import UsageError


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA when available, else CPU. `ConfigError` for a name torch does not know, or CUDA
    asked for on a machine without it."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    return resolved


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
    features: int

    def __post_init__(self) -> None:
        if self.model < 1 or self.features < 1:
            raise UsageError(f"thread counts must be at least 1, got model={self.model}, features={self.features}")

    @classmethod
    def for_machine(cls, threads: int | None = None, feature_threads: int | None = None) -> "ThreadBudget":
        """Every core this process may use for each stage (see the module docstring), or `threads` for the model
        and `feature_threads` (default: the model's count) for the input stage."""
        model = threads or available_cores()
        return cls(model=model, features=feature_threads or model)

    def enter_model_stage(self) -> None:
        """Give the calling thread `model` intra-op threads (once per thread: a no-op when it has them)."""
        _set_thread_count(self.model)

    def enter_feature_stage(self) -> None:
        """Give the calling thread `features` intra-op threads (once per thread: a no-op when it has them)."""
        _set_thread_count(self.features)


# What this module last set in each thread (torch.get_num_threads() reports the last count any thread set).
_applied = threading.local()


def _set_thread_count(count: int) -> None:
    if getattr(_applied, "count", None) != count:
        torch.set_num_threads(count)
        _applied.count = count
