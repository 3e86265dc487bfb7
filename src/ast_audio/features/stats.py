"""Dataset statistics: mean and std of the unnormalised fbank, to normalise fine-tuning on a new dataset."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ast_audio.audio.decode import load_audio
from ast_audio.errors import ASTAudioError, AudioError
from ast_audio.failures import input_error
from ast_audio.features.extractor import ASTFeatureExtractor


@dataclass
class DatasetStatistics:
    """Pooled mean and std over every real frame and mel bin (padding and masks excluded)."""

    mean: float
    std: float
    files: int
    frames: int
    failed: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _decoded(paths: list[str], sampling_rate: int, workers: int) -> Iterator[tuple[str, np.ndarray | str]]:
    """Decode files in a thread pool (libsndfile and soxr release the GIL), yielding them in order: the
    samples, or the error text of a file that failed (whatever the exception)."""

    def decode(path: str) -> np.ndarray | str:
        try:
            return load_audio(path, sampling_rate)
        except Exception as exc:  # one file's fault is that file's failure, never the job's
            return input_error(path, exc)

    if workers <= 1:
        for path in paths:
            yield path, decode(path)
        return
    with ThreadPoolExecutor(workers) as pool:
        yield from zip(paths, pool.map(decode, paths))


def dataset_statistics(
    files: Iterable[str],
    *,
    sampling_rate: int = 16000,
    num_mel_bins: int = 128,
    max_length: int | None = None,
    workers: int = 2,
    progress: bool | None = None,
) -> DatasetStatistics:
    """Mean and std of the unnormalised Kaldi fbank over `files`, pooled over all frames and bins.

    Unlike the release's script (average of per-batch means and stds, counting zero padding and SpecAugment
    masks), this is the exact statistic of the real frames. `max_length` keeps only each clip's first
    `max_length` frames, as the model sees them. Files that fail to decode are listed in `failed` and
    skipped. `progress` shows a bar on stderr (default: when stderr is a terminal).
    """
    paths = list(files)
    if not paths:
        raise AudioError("no audio files to compute statistics over")
    extractor = ASTFeatureExtractor(sampling_rate=sampling_rate, num_mel_bins=num_mel_bins)
    total = total_squares = 0.0
    count = frames = used = 0
    failed: list[dict[str, str]] = []
    from tqdm import tqdm

    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(paths), desc="statistics", unit="file", disable=not show, file=sys.stderr) as bar:
        for path, result in _decoded(paths, sampling_rate, workers):
            bar.update(1)
            if isinstance(result, str):
                failed.append({"path": path, "error": result})
                continue
            try:
                features = extractor.raw_fbank(torch.from_numpy(result))
            except Exception as exc:
                error = f"{path}: {exc}" if isinstance(exc, ASTAudioError) else input_error(path, exc)
                failed.append({"path": path, "error": error})
                continue
            if max_length:
                features = features[:max_length]
            values = features.double()
            total += float(values.sum())
            total_squares += float(values.square().sum())
            count += values.numel()
            frames += features.shape[0]
            used += 1
    if count == 0:
        raise AudioError(f"none of the {len(paths)} files could be used: {failed[0]['error']}")
    mean = total / count
    std = math.sqrt(max(total_squares / count - mean * mean, 0.0))
    return DatasetStatistics(mean=mean, std=std, files=used, frames=frames, failed=failed)
