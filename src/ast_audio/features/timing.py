"""The one owner of time: seconds <-> samples <-> frames <-> patches for a model's input.

A model takes `input_frames` fbank frames (its config's ``max_length``); each frame is `frame_samples`
samples long and starts `shift_samples` after the previous one (25 ms and 10 ms at 16 kHz), so the audio
that fills the input exactly is ``(input_frames - 1) * shift + frame`` samples: 10.255 s for 1024 frames,
not 1024 x 10 ms = 10.24 s (which leaves the last 2 frames as padding).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ast_audio.errors import ConfigError
from ast_audio.features.kaldi import FbankOptions


@dataclasses.dataclass(frozen=True)
class Timing:
    """Conversions between seconds, samples, frames and time patches for one model input geometry."""

    options: FbankOptions = FbankOptions()
    input_frames: int = 1024
    patch_size: int = 16
    time_stride: int = 10

    def __post_init__(self) -> None:
        if self.input_frames < self.patch_size:
            raise ConfigError(f"input of {self.input_frames} frames is shorter than one {self.patch_size}-frame patch")

    @classmethod
    def for_model(cls, config: Any, options: FbankOptions | None = None) -> "Timing":
        """The timing of a model config (an `ASTConfig`: max_length, patch_size, time_stride)."""
        options = options or FbankOptions(num_mel_bins=config.num_mel_bins)
        return cls(options, config.max_length, config.patch_size, config.time_stride)

    # ----------------------------------------------------------------------------------- units
    @property
    def sampling_rate(self) -> int:
        return int(self.options.sample_frequency)

    @property
    def frame_samples(self) -> int:
        return self.options.window_size

    @property
    def shift_samples(self) -> int:
        return self.options.window_shift

    def frames(self, samples: int) -> int:
        """Frames that `samples` samples make (Kaldi's rule; 0 when shorter than one frame)."""
        return self.options.num_frames(samples)

    def samples(self, frames: int) -> int:
        """Samples that make exactly `frames` frames; more audio does not change the first `frames` frames."""
        return self.options.num_samples(frames)

    def seconds_to_samples(self, seconds: float) -> int:
        return int(round(seconds * self.sampling_rate))

    def samples_to_seconds(self, samples: int) -> float:
        return samples / self.sampling_rate

    def time_patches(self, frames: int) -> int:
        """Patches along time over `frames` frames (0 when fewer than one patch)."""
        return 0 if frames < self.patch_size else (frames - self.patch_size) // self.time_stride + 1

    # ------------------------------------------------------------------------------ windows
    @property
    def input_samples(self) -> int:
        """Samples of audio that fill every input frame."""
        return self.samples(self.input_frames)

    @property
    def input_seconds(self) -> float:
        """The longest window the model sees whole (10.255 s for 1024 frames at 16 kHz): the default window."""
        return self.samples_to_seconds(self.input_samples)

    @property
    def shortest_window_seconds(self) -> float:
        """The shortest window that fills one patch of frames (0.175 s for 16 frames)."""
        return self.samples_to_seconds(self.samples(self.patch_size))
