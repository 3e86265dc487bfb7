"""Kaldi-compatible log-mel filter bank features ("fbank") in PyTorch, batched and vectorised.

Follows Kaldi's feature-window / mel-computations as torchaudio's `compliance.kaldi.fbank` computes them:
frames of `frame_length` ms every `frame_shift` ms, per-frame DC removal, pre-emphasis, a window, an FFT
padded to a power of two, the power spectrum, triangular filters on the mel scale 1127 ln(1 + f / 700), and
the log with a floor at float32 epsilon. Defaults are the settings AST uses.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import torch

from ast_audio.errors import AudioError, ConfigError
from ast_audio.features.workspace import workspace

WINDOW_TYPES = ("hanning", "hamming", "povey", "rectangular", "blackman")
# Kaldi floors energies at float32 epsilon whatever the computation dtype.
LOG_FLOOR = float(torch.finfo(torch.float32).eps)


@dataclasses.dataclass(frozen=True)
class FbankOptions:
    """Kaldi fbank options (names as in Kaldi and torchaudio); the defaults are AST's."""

    sample_frequency: float = 16000.0
    frame_length: float = 25.0  # ms
    frame_shift: float = 10.0  # ms
    num_mel_bins: int = 128
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from the Nyquist frequency
    preemphasis_coefficient: float = 0.97
    remove_dc_offset: bool = True
    window_type: str = "hanning"
    blackman_coeff: float = 0.42
    dither: float = 0.0
    snip_edges: bool = True
    round_to_power_of_two: bool = True
    use_energy: bool = False
    raw_energy: bool = True
    energy_floor: float = 1.0
    htk_compat: bool = False
    use_log_fbank: bool = True
    use_power: bool = True
    subtract_mean: bool = False

    def __post_init__(self) -> None:
        if self.window_type not in WINDOW_TYPES:
            raise ConfigError(f"window_type must be one of {WINDOW_TYPES}, got {self.window_type!r}")
        if self.sample_frequency <= 0 or self.frame_length <= 0 or self.frame_shift <= 0:
            raise ConfigError(
                f"sample_frequency, frame_length and frame_shift must be positive, got {self.sample_frequency}, "
                f"{self.frame_length}, {self.frame_shift}"
            )
        if self.window_size < 2:
            raise ConfigError(f"frame_length {self.frame_length} ms is less than two samples")
        if self.num_mel_bins < 3:
            raise ConfigError(f"num_mel_bins must be at least 3, got {self.num_mel_bins}")
        nyquist = self.sample_frequency / 2
        high = self.high_freq if self.high_freq > 0 else nyquist + self.high_freq
        if not 0 <= self.low_freq < high <= nyquist:
            raise ConfigError(
                f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz); got low_freq {self.low_freq}, "
                f"high_freq {self.high_freq} (resolved to {high})"
            )
        if self.dither < 0:
            raise ConfigError(f"dither must be non-negative, got {self.dither}")

    @property
    def window_size(self) -> int:
        return int(self.sample_frequency * self.frame_length * 0.001)

    @property
    def window_shift(self) -> int:
        return int(self.sample_frequency * self.frame_shift * 0.001)

    @property
    def fft_size(self) -> int:
        size = self.window_size
        return 1 << (size - 1).bit_length() if self.round_to_power_of_two else size

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi makes from `num_samples` samples (0 when shorter than one window with snip_edges)."""
        if self.snip_edges:
            return 0 if num_samples < self.window_size else 1 + (num_samples - self.window_size) // self.window_shift
        return (num_samples + self.window_shift // 2) // self.window_shift

    def num_samples(self, num_frames: int) -> int:
        """The fewest samples that make `num_frames` frames (with snip_edges); more audio does not change them."""
        if num_frames <= 0:
            return 0
        if self.snip_edges:
            return (num_frames - 1) * self.window_shift + self.window_size
        return num_frames * self.window_shift - self.window_shift // 2


def mel_scale(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


@functools.lru_cache(maxsize=32)
def mel_filterbank(options: FbankOptions, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Triangular filters (fft_size // 2 + 1, num_mel_bins), built in float64 and cast; cached."""
    num_fft_bins = options.fft_size // 2
    nyquist = options.sample_frequency / 2
    high_freq = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    mel_low = mel_scale(torch.tensor(options.low_freq, dtype=torch.float64))
    mel_high = mel_scale(torch.tensor(high_freq, dtype=torch.float64))
    delta = (mel_high - mel_low) / (options.num_mel_bins + 1)
    index = torch.arange(options.num_mel_bins, dtype=torch.float64).unsqueeze(1)
    left, center, right = mel_low + index * delta, mel_low + (index + 1) * delta, mel_low + (index + 2) * delta
    bin_mel = mel_scale(options.sample_frequency / options.fft_size * torch.arange(num_fft_bins, dtype=torch.float64))
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)  # (num_mel_bins, num_fft_bins)
    # The Nyquist bin gets no weight, as in Kaldi.
    filters = torch.nn.functional.pad(filters, (0, 1))
    return filters.T.contiguous().to(device=device, dtype=dtype)


@functools.lru_cache(maxsize=32)
def feature_window(options: FbankOptions, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The analysis window of `options.window_type` (symmetric, as Kaldi's); cached."""
    size = options.window_size
    n = torch.arange(size, dtype=torch.float64)
    phase = 2 * math.pi * n / (size - 1)
    if options.window_type == "hanning":
        window = 0.5 - 0.5 * torch.cos(phase)
    elif options.window_type == "hamming":
        window = 0.54 - 0.46 * torch.cos(phase)
    elif options.window_type == "povey":
        window = (0.5 - 0.5 * torch.cos(phase)) ** 0.85
    elif options.window_type == "blackman":
        a = options.blackman_coeff
        window = a - 0.5 * torch.cos(phase) + (0.5 - a) * torch.cos(2 * phase)
    else:
        window = torch.ones(size, dtype=torch.float64)
    return window.to(device=device, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class _FilterGroup:
    """Consecutive mel filters [first, last) and the FFT bins [low, high) they cover, with their weights."""

    first: int
    last: int
    low: int
    high: int
    weights: torch.Tensor  # (high - low, last - first)


@functools.lru_cache(maxsize=32)
def _filter_groups(options: FbankOptions, device: torch.device, dtype: torch.dtype) -> tuple[_FilterGroup, ...]:
    """The filterbank cut into groups of 16 filters: each group touches few FFT bins, so multiplying group by
    group skips the zeros of the dense matrix (about 4x fewer operations for 128 filters over 257 bins)."""
    filters = mel_filterbank(options, device, dtype)
    groups = []
    for first in range(0, options.num_mel_bins, 16):
        last = min(first + 16, options.num_mel_bins)
        used = (filters[:, first:last] != 0).any(1).nonzero().flatten()
        low, high = (int(used.min()), int(used.max()) + 1) if len(used) else (0, 1)
        groups.append(_FilterGroup(first, last, low, high, filters[low:high, first:last].contiguous()))
    return tuple(groups)


# Up to this many frames, one dense product costs less than a call per filter group.
DENSE_FILTER_ROWS = 64


def _apply_filters(power: torch.Tensor, options: FbankOptions, out: torch.Tensor) -> None:
    """power (..., fft_size // 2 + 1) -> mel energies (..., num_mel_bins), written into `out`."""
    flat, flat_out = power.reshape(-1, power.shape[-1]), out.view(-1, options.num_mel_bins)
    if flat.shape[0] <= DENSE_FILTER_ROWS:  # a few frames (float64 refinement): one call beats saved work
        torch.mm(flat, mel_filterbank(options, power.device, power.dtype), out=flat_out)
        return
    for group in _filter_groups(options, power.device, power.dtype):
        torch.mm(flat[:, group.low : group.high], group.weights, out=flat_out[:, group.first : group.last])


def _frame_source(waveforms: torch.Tensor, options: FbankOptions) -> torch.Tensor:
    """The signal whose windows of `window_size` every `window_shift` samples are Kaldi's frames: the
    waveforms themselves with snip_edges, else the waveforms mirrored at both ends."""
    if options.snip_edges:
        return waveforms
    # Kaldi without snip_edges: frames centred on multiples of the shift, the signal mirrored at both ends
    # (sample -s-1 for s < 0, 2N-1-s for s >= N).
    size, shift = options.window_size, options.window_shift
    num_samples = waveforms.shape[-1]
    num_frames = options.num_frames(num_samples)
    pad_left = size // 2 - shift // 2
    last_end = (num_frames - 1) * shift - pad_left + size
    pad_right = max(0, last_end - num_samples)
    left = waveforms[..., :pad_left].flip(-1)
    right = waveforms[..., num_samples - pad_right :].flip(-1)
    return torch.cat((left, waveforms, right), dim=-1)


def _frames(source: torch.Tensor, options: FbankOptions, num_frames: int) -> torch.Tensor:
    """(B, samples) -> (B, num_frames, window_size), a strided view (no copy)."""
    return source.unfold(-1, options.window_size, options.window_shift)[..., :num_frames, :]


def _log_energy(frames: torch.Tensor, options: FbankOptions) -> torch.Tensor:
    energy = frames.square().sum(-1).clamp_min(LOG_FLOOR).log()
    if options.energy_floor > 0.0:
        energy = energy.clamp_min(math.log(options.energy_floor))
    return energy


@functools.lru_cache(maxsize=32)
def _window_start(options: FbankOptions) -> float:
    """The window's first coefficient (0 for hanning and povey)."""
    return float(feature_window(options, torch.device("cpu"), torch.float64)[0])


# Frames computed per pass: a pass's buffers (about 12 MB at 2048 frames of 512-point FFTs) then stay in the
# CPU cache from one step to the next, which the memory traffic of the whole batch at once would not.
CHUNK_FRAMES = 2048


def _chunks(batch: int, num_frames: int) -> list[tuple[slice, slice]]:
    """(rows, frames) blocks of about CHUNK_FRAMES frames: whole rows, or pieces of one long row."""
    if num_frames >= CHUNK_FRAMES:
        return [
            (slice(row, row + 1), slice(start, min(start + CHUNK_FRAMES, num_frames)))
            for row in range(batch) for start in range(0, num_frames, CHUNK_FRAMES)
        ]
    rows = CHUNK_FRAMES // num_frames
    return [(slice(start, min(start + rows, batch)), slice(0, num_frames)) for start in range(0, batch, rows)]


def _mel_energies(
    source: torch.Tensor, num_frames: int, options: FbankOptions
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Linear mel energies (B, num_frames, num_mel_bins) of the frames of `source` (B, samples), in a reused
    buffer, and their log energy (B, num_frames) if used; computed in blocks of about CHUNK_FRAMES frames."""
    batch = source.shape[0]
    mel = workspace.get(("mel",), (batch, num_frames, options.num_mel_bins), source.dtype, source.device)
    energy = source.new_empty(batch, num_frames) if options.use_energy else None
    shift = options.window_shift
    for rows, frames in _chunks(batch, num_frames):
        count = frames.stop - frames.start
        piece = source[rows, frames.start * shift : (frames.stop - 1) * shift + options.window_size]
        _block_mel_energies(
            piece, count, options, mel[rows, frames], energy[rows, frames] if energy is not None else None
        )
    return mel, energy


def _block_mel_energies(
    source: torch.Tensor, num_frames: int, options: FbankOptions, mel: torch.Tensor, energy: torch.Tensor | None
) -> None:
    """Writes into `mel` (B, num_frames, num_mel_bins) the linear mel energies of the frames of `source`
    (B, samples), and into `energy` (B, num_frames) their log energy when it is given.

    Per frame, Kaldi removes the DC offset m, pre-emphasises (x[i] - c x[i-1], with x[-1] taken as x[0]) and
    windows. Pre-emphasis is linear, so it is applied once to the whole signal (each sample once, not 2.5
    times as the frames overlap); it maps the offset m to m (1 - c) at every position, which is removed while
    windowing; only each frame's first sample differs, fixed where the window does not zero it.
    """
    device, dtype = source.device, source.dtype
    frames = _frames(source, options, num_frames)
    mean = frames.mean(-1, keepdim=True) if options.remove_dc_offset else None
    if energy is not None and options.raw_energy:
        energy.copy_(_log_energy(frames - mean if mean is not None else frames, options))
    coefficient = options.preemphasis_coefficient
    emphasised = frames
    if coefficient != 0.0:
        signal = workspace.get(("emphasised",), tuple(source.shape), dtype, device)
        torch.sub(source[..., 1:], source[..., :-1], alpha=coefficient, out=signal[..., 1:])
        signal[..., 0] = 0.0  # the first sample of frame 0 is set below like every frame's
        emphasised = _frames(signal, options, num_frames)
    # The FFT input: the processed window written into a zero buffer of the padded FFT size (its tail is
    # never written, so it stays zero from call to call; the window size is part of the key for that).
    padded = workspace.get(
        ("padded", options.window_size), (*frames.shape[:-1], options.fft_size), dtype, device, zeroed=True
    )
    window = padded[..., : options.window_size]
    weights = feature_window(options, device, dtype)
    torch.mul(emphasised, weights, out=window)
    if coefficient != 0.0 and _window_start(options) != 0.0:
        torch.mul(frames[..., 0], (1.0 - coefficient) * _window_start(options), out=window[..., 0])
    if mean is not None:
        window.addcmul_(mean, weights, value=-(1.0 - coefficient))
    if energy is not None and not options.raw_energy:
        energy.copy_(_log_energy(window, options))
    parts = torch.view_as_real(torch.fft.rfft(padded))  # rfft(out=) would compute elsewhere and copy
    parts.square_()
    power = workspace.get(("power",), parts.shape[:-1], dtype, device)
    torch.add(parts[..., 0], parts[..., 1], out=power)
    if not options.use_power:
        power.sqrt_()
    _apply_filters(power, options, mel)


def _dithered_frames(
    source: torch.Tensor, num_frames: int, options: FbankOptions, generator: torch.Generator | None
) -> torch.Tensor:
    """Kaldi dithers each frame independently (overlapping frames get different noise): the frames, noise
    added, as (B * num_frames, window_size) signals of one frame each."""
    frames = _frames(source, options, num_frames)
    noise = torch.randn(frames.shape, generator=generator, device=source.device, dtype=source.dtype)
    return (frames + options.dither * noise).reshape(-1, options.window_size)


# A float32 FFT's round-off reaches a few 1e-12 of the frame's strongest band; bands weaker than this
# fraction of it (pure tones, synthetic signals, a rare near-empty bin) are recomputed in float64, which keeps
# every log energy within about 5e-4 of the exact value.
REFINE_DYNAMIC_RANGE = 1e-8


@functools.lru_cache(maxsize=32)
def _empty_filters(options: FbankOptions) -> tuple[int, ...]:
    """Filters that cover no FFT bin (128 filters at 16 kHz over 257 bins leave filter 3 empty)."""
    covered = (mel_filterbank(options, torch.device("cpu"), torch.float64) != 0).any(0)
    return tuple((~covered).nonzero().flatten().tolist())


def _refine_in_float64(mel: torch.Tensor, source: torch.Tensor, options: FbankOptions) -> None:
    """Recompute in float64, in place, the frames of `mel` whose band energies span more than float32
    resolves; a clip where most frames do is recomputed whole (cheaper than gathering its frames)."""
    strongest = mel.amax(-1)
    # Empty filters are always 0; set them to +inf while looking for the weakest band (cheaper than slicing).
    empty = _empty_filters(options)
    for index in empty:
        mel[..., index].fill_(float("inf"))
    weakest = mel.amin(-1)
    for index in empty:
        mel[..., index].fill_(0.0)
    risky = (weakest < strongest * REFINE_DYNAMIC_RANGE) & (strongest > LOG_FLOOR)
    if not bool(risky.any()):
        return
    num_frames = mel.shape[1]
    whole = risky.sum(1) > num_frames // 4
    if bool(whole.any()):
        rows = whole.nonzero().flatten()
        refined, _ = _mel_energies(source[rows].double(), num_frames, options)  # float32 samples are exact
        mel[rows] = refined.to(mel.dtype)
        risky[rows] = False
    if bool(risky.any()):
        batch_index, frame_index = risky.nonzero(as_tuple=True)
        frames = _frames(source, options, num_frames)[batch_index, frame_index].double()
        refined, _ = _mel_energies(frames, 1, options)  # each frame as a signal of one frame
        mel[batch_index, frame_index] = refined.squeeze(1).to(mel.dtype)


def _as_batch(waveforms: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """(batch, samples) float32/float64 waveforms, and whether the input was a single (samples,) waveform."""
    if not isinstance(waveforms, torch.Tensor) or not waveforms.is_floating_point():
        raise AudioError(f"fbank expects a floating point torch.Tensor, got {getattr(waveforms, 'dtype', type(waveforms))}")
    squeeze = waveforms.ndim == 1
    if squeeze:
        waveforms = waveforms.unsqueeze(0)
    if waveforms.ndim != 2:
        raise AudioError(f"fbank expects (samples,) or (batch, samples), got shape {tuple(waveforms.shape)}")
    if waveforms.dtype not in (torch.float32, torch.float64):
        waveforms = waveforms.float()
    return waveforms, squeeze


def _checked_out(out: torch.Tensor | None, shape: tuple[int, ...], waveforms: torch.Tensor) -> torch.Tensor:
    """`out`, checked to fit the result, or a new tensor for it."""
    if out is None:
        return waveforms.new_empty(shape)
    if tuple(out.shape) != shape or out.dtype != waveforms.dtype or out.device != waveforms.device:
        raise ConfigError(
            f"fbank out= must be a {waveforms.dtype} tensor of shape {shape} on {waveforms.device}, got "
            f"{out.dtype} {tuple(out.shape)} on {out.device}"
        )
    return out


def fbank(
    waveforms: torch.Tensor, options: FbankOptions | None = None, generator: torch.Generator | None = None,
    refine: bool = True, out: torch.Tensor | None = None, **overrides,
) -> torch.Tensor:
    """Log-mel filter bank features of a batch of waveforms.

    waveforms: (samples,) or (batch, samples), floating point, on any device. float32 input is computed in
    float32, except frames whose band energies span more than float32 resolves (pure tones, digital
    silence next to sound), which are recomputed in float64 unless `refine` is False; float64 input is
    computed in float64. Options come from `options` and/or keyword overrides (Kaldi names). Returns
    (frames, bins) or (batch, frames, bins), bins = num_mel_bins (+1 with use_energy), written into `out`
    when given (a tensor of that shape and the input's dtype, which may be a strided view). `generator`
    seeds the dither noise.
    """
    if options is None:
        options = FbankOptions(**overrides)
    elif overrides:
        options = dataclasses.replace(options, **overrides)
    waveforms, squeeze = _as_batch(waveforms)
    batch, num_samples = waveforms.shape
    num_frames = options.num_frames(num_samples)
    if num_frames < 1:
        raise AudioError(
            f"audio of {num_samples} samples is shorter than one {options.frame_length:g} ms frame "
            f"({options.window_size} samples at {options.sample_frequency:g} Hz)"
        )
    num_bins = options.num_mel_bins + int(options.use_energy)
    out = _checked_out(out, (num_frames, num_bins) if squeeze else (batch, num_frames, num_bins), waveforms)

    source = _frame_source(waveforms, options)
    if options.dither > 0.0:
        mel, energy = _mel_energies(_dithered_frames(source, num_frames, options, generator), 1, options)
        mel = mel.reshape(batch, num_frames, -1)
        energy = energy.reshape(batch, num_frames) if energy is not None else None
    else:
        mel, energy = _mel_energies(source, num_frames, options)
        if refine and waveforms.dtype == torch.float32:
            _refine_in_float64(mel, source, options)
    target = out.unsqueeze(0) if squeeze else out
    if energy is not None:
        energy_column = -1 if options.htk_compat else 0
        target[..., energy_column] = energy
        target = target[..., :-1] if options.htk_compat else target[..., 1:]
    if options.use_log_fbank:
        torch.log(mel.clamp_min_(LOG_FLOOR), out=target)
    else:
        target.copy_(mel)
    if options.subtract_mean:  # over every column, the energy's too (as Kaldi and torchaudio)
        out.sub_(out.mean(-2, keepdim=True))
    return out
