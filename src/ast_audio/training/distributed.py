"""The process group under torchrun: who this process is, DDP wrapping, gradient sync and gathering."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class Distributed:
    """This process's rank in the group (one process without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        """A process group exists (under torchrun, or one the caller initialised)."""
        return dist.is_available() and dist.is_initialized()

    @classmethod
    def setup(cls, device: torch.device) -> "Distributed":
        """Join the group torchrun describes (nccl on CUDA, gloo on CPU), or use one already initialised."""
        if not (dist.is_available() and dist.is_initialized()):
            if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
                return cls()
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """`model` in DistributedDataParallel when there is a group, else itself."""
        if not self.active:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    @staticmethod
    @contextlib.contextmanager
    def sync_gradients(wrapped: torch.nn.Module, sync: bool) -> Iterator[None]:
        """Backward passes inside all-reduce their gradients only when `sync` (the last micro-batch of an
        accumulation step); the others accumulate locally (DDP's no_sync)."""
        if sync or not isinstance(wrapped, torch.nn.parallel.DistributedDataParallel):
            yield
        else:
            with wrapped.no_sync():
                yield

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sums of every process's `values` (lists of equal length)."""
        totals = torch.tensor(values, dtype=torch.float64)
        if self.active:
            dist.all_reduce(totals)
        return totals.tolist()

    def gather_rows(self, indices: list[int], *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Every process's rows of `arrays` (rows for `indices`), gathered and put back in index order."""
        if not self.active or self.world_size == 1:
            return arrays
        gathered: list = [None] * self.world_size
        dist.all_gather_object(gathered, (indices, arrays))
        order = np.argsort(np.concatenate([np.asarray(g[0], dtype=int) for g in gathered]))
        return tuple(np.concatenate([g[1][k] for g in gathered])[order] for k in range(len(arrays)))

    def any(self, flag: bool) -> bool:
        """Whether any process has `flag` set."""
        if not self.active or self.world_size == 1:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value)
        return bool(value.item() > 0)

    def barrier(self) -> None:
        if self.active:
            dist.barrier()
