"""Scratch tensors kept from call to call, per thread, for the feature pipeline."""

from __future__ import annotations

import math
import threading

import torch


class Workspace(threading.local):
    """Scratch tensors reused from call to call (per thread): fresh multi-megabyte buffers cost page faults
    that take as long as the arithmetic done in them. A request is served from the front of the buffer kept
    for its key when that is large enough, so blocks of different sizes (a batch's last, smaller block)
    share one buffer instead of replacing it in turn. Buffers above `limit` bytes are not kept."""

    limit = 64 * 2**20

    def __init__(self) -> None:
        self.buffers: dict[tuple, torch.Tensor] = {}

    def get(
        self, key: tuple, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, zeroed: bool = False
    ) -> torch.Tensor:
        """A contiguous tensor of `shape` from the buffer kept for (`key`, dtype, device).

        `zeroed`: the buffer is filled with zeros when made, and kept per last dimension too: views of it with
        the same last dimension put each column at the same places, so columns that its users never write stay
        zero; `key` must tell apart users that write different columns. Other buffers are shared by every
        shape, so inputs of ever new lengths do not pile up buffers.
        """
        full_key = (key, dtype, device, shape[-1] if zeroed else None)
        numel = math.prod(shape)
        buffer = self.buffers.get(full_key)
        if buffer is None or buffer.numel() < numel:
            buffer = (torch.zeros if zeroed else torch.empty)(numel, dtype=dtype, device=device)
            if buffer.numel() * buffer.element_size() <= self.limit:
                self.buffers[full_key] = buffer
            else:
                self.buffers.pop(full_key, None)
        return buffer[:numel].view(shape)


workspace = Workspace()
