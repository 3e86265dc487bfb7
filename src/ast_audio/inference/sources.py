"""Inputs of every kind (paths, bytes, arrays, dicts) as sources readable one window at a time."""

from __future__ import annotations

import io
import logging
import math
import os
from typing import Union

import numpy as np
import torch

from ast_audio.audio.decode import AudioFile, resample
from ast_audio.errors import AudioError
from ast_audio.features.extractor import multichannel_hint
from ast_audio.features.timing import Timing

logger = logging.getLogger(__name__)

AudioInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, torch.Tensor, dict]


def input_name(item: AudioInput, index: int) -> str:
    """How messages and results name an input: its path, else its position."""
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<input {index}>"


class AudioSource:
    """One input, readable a window at a time as mono float32 at the model's sampling rate."""

    def __init__(self, item: AudioInput, index: int, timing: Timing, sampling_rate: int | None = None,
                 name: str | None = None) -> None:
        """`name`: what messages call the input (default: its path, or its position and kind)."""
        self.timing = timing
        self.warning: str | None = None
        self._file: AudioFile | None = None
        self._samples: np.ndarray | None = None
        if isinstance(item, dict):
            item, sampling_rate = _unpack_dict(item, index, sampling_rate)
        if isinstance(item, (str, os.PathLike)):
            self.name = os.fspath(item)
            self._file = AudioFile(item)
        elif isinstance(item, (bytes, bytearray)):
            self.name = name or f"<input {index}: {len(item)} bytes>"
            if len(item) == 0:
                raise AudioError(f"{self.name}: empty audio data")
            buffer = io.BytesIO(bytes(item))
            buffer.name = self.name  # what the decoder's messages call it
            self._file = AudioFile(buffer)
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            self.name = f"<input {index}: array>"
            self._samples = self._array_samples(item, sampling_rate)
        else:
            raise AudioError(
                f"input {index}: expected a path, bytes, a NumPy array or tensor of samples, or a dict with "
                f"'array' and 'sampling_rate'; got {type(item).__name__}"
            )
        if self._file is not None:
            self.duration, self.warning = self._file.duration, self._file.warning
        else:
            self.duration = len(self._samples) / timing.sampling_rate
        shortest = timing.samples_to_seconds(timing.frame_samples)
        if self.duration < shortest:
            raise AudioError(
                f"{self.name}: {self.duration * 1000:.1f} ms of audio is shorter than one {shortest * 1000:g} ms frame"
            )

    def _array_samples(self, item: np.ndarray | torch.Tensor, sampling_rate: int | None) -> np.ndarray:
        samples = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        if samples.ndim != 1:
            hint = multichannel_hint(samples.shape) or f"got shape {samples.shape}"
            raise AudioError(f"{self.name}: expected mono samples (samples,); {hint}")
        if samples.dtype.kind not in "f":
            raise AudioError(f"{self.name}: expected float samples in [-1, 1], got dtype {samples.dtype}")
        if not np.isfinite(samples).all():
            raise AudioError(f"{self.name}: contains NaN or infinite samples")
        rate = self.timing.sampling_rate
        if sampling_rate is None:
            logger.warning("%s: no sampling_rate given; assuming %d Hz", self.name, rate)
            sampling_rate = rate
        if isinstance(sampling_rate, bool) or not (isinstance(sampling_rate, (int, float, np.number))
                                                   and math.isfinite(sampling_rate) and sampling_rate >= 1):
            raise AudioError(f"{self.name}: sampling_rate {sampling_rate!r}: expected the rate of the samples in Hz, "
                             f"a positive number such as {rate}")
        return resample(samples.astype(np.float32, copy=False), int(sampling_rate), rate)

    def read(self, start: float, end: float) -> np.ndarray:
        """Samples from `start` to `end` seconds, at least one frame long (a sliver at the end is zero-padded)."""
        if self._file is not None:
            samples = self._file.read(offset=start, duration=end - start, sampling_rate=self.timing.sampling_rate)
        else:
            samples = self._samples[self.timing.seconds_to_samples(start) : self.timing.seconds_to_samples(end)]
        shortest = self.timing.frame_samples
        return samples if len(samples) >= shortest else np.pad(samples, (0, shortest - len(samples)))

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _unpack_dict(item: dict, index: int, sampling_rate: int | None) -> tuple[AudioInput, int | None]:
    """The samples and their rate from a {"array" (or "raw"), "sampling_rate"} dict (the `datasets` layout;
    "path" is ignored). Without "sampling_rate" in the dict, the call's `sampling_rate` is used; with neither
    it is an error (as in transformers' pipeline): assuming the model's rate would misread other rates."""
    array = item.get("array", item.get("raw"))
    if array is None:
        raise AudioError(f"input {index}: a dict input needs an 'array' (or 'raw') entry and 'sampling_rate'")
    rate = item.get("sampling_rate", sampling_rate)
    if rate is None:
        raise AudioError(
            f"input {index}: a dict input needs 'sampling_rate', the rate of its 'array' in Hz (e.g. "
            "{'array': samples, 'sampling_rate': 16000}), or pass sampling_rate= with the call"
        )
    return array, rate
