"""A picture of a classification: the spectrogram, and the top labels' scores over time beneath it."""

from __future__ import annotations

import numpy as np
import torch

from ast_audio.audio.decode import AudioFile
from ast_audio.errors import ASTAudioError
from ast_audio.features.kaldi import FbankOptions, fbank
from ast_audio.io_utils import atomic_path
from ast_audio.inference.results import ClipResult

MAX_COLUMNS = 2000  # spectrogram columns drawn; longer files are averaged down to this many
CHUNK_SECONDS = 60.0


def display_spectrogram(source: str | bytes, rate: int = 16000, max_columns: int = MAX_COLUMNS
                        ) -> tuple[np.ndarray, float]:
    """Log-mel fbank (columns, mel bins) of a file (a path or its bytes), read a minute at a time and averaged
    down to at most `max_columns` frames; and the duration in seconds."""
    options = FbankOptions(sample_frequency=float(rate))
    with AudioFile(source) as audio:
        duration = audio.duration
        total_frames = max(1, int(duration * 100))
        step = max(1, int(np.ceil(total_frames / max_columns)))
        columns = []
        start = 0.0
        while start < duration:
            samples = audio.read(offset=start, duration=CHUNK_SECONDS, sampling_rate=rate)
            start += CHUNK_SECONDS
            if len(samples) < options.window_size:
                break
            features = fbank(torch.from_numpy(samples), options).numpy()
            usable = len(features) - len(features) % step
            if usable:
                columns.append(features[:usable].reshape(-1, step, features.shape[1]).mean(axis=1))
    return (np.concatenate(columns) if columns else np.zeros((1, options.num_mel_bins))), duration


def mel_bin_of_frequency(hertz: np.ndarray, options: FbankOptions) -> np.ndarray:
    """Fractional mel-bin index (0 = the first filter's centre) of frequencies, on Kaldi's mel scale."""
    nyquist = options.sample_frequency / 2
    high = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    mel = lambda f: 1127.0 * np.log1p(np.asarray(f, dtype=np.float64) / 700.0)  # noqa: E731
    delta = (mel(high) - mel(options.low_freq)) / (options.num_mel_bins + 1)
    return (mel(hertz) - mel(options.low_freq)) / delta - 1


def draw_result(result: ClipResult, top: int = 5, rate: int = 16000):
    """A matplotlib figure of `result` (its source must be a file): the spectrogram with a frequency axis in
    Hz, and the top labels' scores over time, one distinct colour each, with their events (when the result
    has them) as bars of that colour along the top, a row per label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spectrogram, duration = display_spectrogram(result.source, rate)
    options = FbankOptions(sample_frequency=float(rate), num_mel_bins=spectrogram.shape[1])
    best = [item["label"] for item in result.top(top)]
    label_index = {label: i for i, label in enumerate(result.labels)}
    centres = np.array([(start + end) / 2 for start, end in result.windows])
    colours = plt.get_cmap("tab10" if len(best) <= 10 else "tab20")(np.arange(len(best)) % 20)

    figure, (upper, lower) = plt.subplots(2, 1, figsize=(12, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    upper.imshow(spectrogram.T, origin="lower", aspect="auto", cmap="magma",
                 extent=(0, duration, -0.5, spectrogram.shape[1] - 0.5))
    ticks = [f for f in (50, 100, 250, 500, 1000, 2000, 4000, 8000) if options.low_freq <= f <= rate / 2]
    upper.set_yticks(mel_bin_of_frequency(np.array(ticks), options), [f"{f:g}" for f in ticks])
    upper.set_ylabel("frequency (Hz)")
    title = f"{result.source} ({duration:.1f} s)"  # a name's bytes that are not UTF-8, or controls: U+FFFD
    upper.set_title("".join(char if char.isprintable() else "\ufffd" for char in title))
    for label, colour in zip(best, colours):
        scores = result.window_scores[:, label_index[label]]
        if len(centres) == 1:
            lower.hlines(scores[0], 0, duration, colors=[colour], label=label, linewidth=2)
        else:
            lower.plot(centres, scores, marker=".", color=colour, label=label)
    for row, (label, colour) in enumerate(zip(best, colours)):  # events: a bar per event, a row per label
        spans = [(event.start, event.end) for event in result.events or () if event.label == label]
        if spans:
            lower.hlines([1.0 - 0.025 * row] * len(spans), *zip(*spans), colors=[colour], linewidth=4, gid="events")
    lower.set_xlabel("time (s)")
    lower.set_ylabel("score")
    lower.set_ylim(0, 1.02)
    lower.set_xlim(0, duration)
    lower.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False,
                 ncol=1 if len(best) <= 12 else 2)
    figure.tight_layout()
    return figure


def plot_result(result: ClipResult, out_path: str, top: int = 5) -> str:
    """Draw `result` (its source must be a file) into a PNG at `out_path`, written atomically."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ASTAudioError("--plot needs matplotlib: pip install 'ast-audio[plot]'") from None
    figure = draw_result(result, top)
    import matplotlib.pyplot as plt

    with atomic_path(out_path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
    return out_path
