"""Training data: clip lists from folders, release manifests or CSVs, label spaces, and the dataset that
turns a clip into normalised fbank features with the release's augmentations.

All randomness of a sample (crop, mixup partner, masks, noise, roll, gain) is drawn from a generator seeded
by (seed, epoch, index), so a run is reproducible whatever the number of workers or processes, and a
resumed run sees exactly the samples the interrupted one would have seen.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ast_audio.audio.decode import audio_info, load_audio
from ast_audio.errors import ASTAudioError
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.features.kaldi import FbankOptions, mel_scale
from ast_audio.audio.files import AUDIO_EXTENSIONS, ManifestEntry, read_manifest
from ast_audio.failures import input_error
from ast_audio.labels import read_class_labels

if TYPE_CHECKING:
    from ast_audio.training.config import TrainConfig

logger = logging.getLogger(__name__)


class DataError(ASTAudioError, ValueError):
    """The training data cannot be used: missing files, unknown labels, empty classes..."""


@dataclass
class Clip:
    path: str
    labels: list[int]


@dataclass
class LabelSpace:
    """Class names in head order; `keys` are what manifests name them by (AudioSet mids, or the names)."""

    names: list[str]
    keys: list[str]

    @property
    def key_to_index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names))

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def from_names(cls, names: list[str]) -> "LabelSpace":
        return cls(list(names), list(names))

    @classmethod
    def from_csv(cls, path: str) -> "LabelSpace":
        """The release's class_labels_indices.csv: index, mid, display_name."""
        rows = read_class_labels(path)
        return cls([row.display_name for row in rows], [row.mid for row in rows])


def folder_clips(root: str) -> tuple[list[Clip], LabelSpace]:
    """One sub-folder per class (sorted names); every audio file below it is a clip of that class."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: no such folder")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{root}: expected one sub-folder per class, found none")
    clips: list[Clip] = []
    for index, name in enumerate(classes):
        found = [
            os.path.join(dirpath, f)
            for dirpath, _, files in sorted(os.walk(os.path.join(root, name)))
            for f in sorted(files)
            if os.path.splitext(f)[1].lower() in AUDIO_EXTENSIONS
        ]
        if not found:
            raise DataError(f"{os.path.join(root, name)}: class folder '{name}' holds no audio files")
        clips.extend(Clip(path, [index]) for path in found)
    return clips, LabelSpace.from_names(classes)


def manifest_clips(path: str, labels: LabelSpace | None = None) -> tuple[list[Clip], LabelSpace]:
    """A release JSON manifest or a CSV (path,label[,label...]); labels from `labels` or the manifest itself."""
    entries: list[ManifestEntry] = read_manifest(path)
    if labels is None:
        labels = LabelSpace.from_names(sorted({label for entry in entries for label in entry.labels}))
    lookup = labels.key_to_index
    names = {name: i for i, name in enumerate(labels.names)}
    clips, unknown = [], []
    for entry in entries:
        indices = []
        for label in entry.labels:
            index = lookup.get(label, names.get(label))
            if index is None:
                unknown.append(label)
            else:
                indices.append(index)
        if not entry.labels:
            raise DataError(f"{path}: {entry.path} has no labels")
        clips.append(Clip(entry.path, indices))
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:5])
        raise DataError(f"{path}: {len(set(unknown))} labels are not in the label list (e.g. {shown})")
    return clips, labels


def check_files(clips: list[Clip], source: str) -> None:
    """Fail before training when files are missing, naming a few of them."""
    missing = [clip.path for clip in clips if not os.path.isfile(clip.path)]
    if missing:
        raise DataError(f"{source}: {len(missing)} of {len(clips)} files are missing, e.g. {', '.join(missing[:3])}")
    if not clips:
        raise DataError(f"{source}: no clips")


def readable_clips(clips: list[Clip], source: str) -> list[Clip]:
    """The clips whose audio opens (`audio_info`: the header is read and the decodable length checked, as
    decoding does, without decoding the clip); each one that does not is skipped with a warning naming it,
    the reason and `source`, as `ast-audio stats` skips them: one bad file never ends a run."""
    kept = []
    for clip in clips:
        try:
            audio_info(clip.path)
        except Exception as exc:  # one file's fault is that file's failure, never the run's
            logger.warning("%s: skipped %s", source, input_error(clip.path, exc))
            continue
        kept.append(clip)
    return kept


def check_no_class_emptied(before: list[Clip], after: list[Clip], labels: LabelSpace, source: str) -> None:
    """Refuse training data where skipping unreadable clips left a class with none (DataError naming them)."""
    had = {label for clip in before for label in clip.labels}
    left = {label for clip in after for label in clip.labels}
    emptied = [labels.names[label] for label in sorted(had - left)]
    if emptied:
        raise DataError(f"{source}: no readable clip is left of the class{'es' if len(emptied) > 1 else ''} "
                        f"{', '.join(repr(name) for name in emptied)} (the unreadable ones are listed above)")


def seeded_split(clips: list[Clip], fraction: float, seed: int) -> tuple[list[Clip], list[Clip]]:
    """Split off `fraction` of the clips (stratified by first label) for validation, reproducibly."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must be in (0, 1), got {fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[Clip]] = {}
    for clip in clips:
        by_class.setdefault(clip.labels[0] if clip.labels else -1, []).append(clip)
    train, valid = [], []
    for group in by_class.values():
        group = list(group)
        rng.shuffle(group)
        cut = max(1, int(round(len(group) * fraction))) if len(group) > 1 else 0
        valid.extend(group[:cut])
        train.extend(group[cut:])
    return train, valid


@dataclass
class AugmentConfig:
    """The release's augmentations; each 0 / False disables it."""

    mixup: float = 0.0  # probability of mixing a clip with a random partner, lambda ~ Beta(10, 10)
    freqm: int = 0  # SpecAugment: one frequency mask of up to freqm bins
    timem: int = 0  # SpecAugment: one time mask of up to timem frames
    noise: bool = False  # small uniform noise on the fbank and a time roll of up to 10 frames
    gain_db: float = 0.0  # random gain in [-gain_db, +gain_db] dB on the waveform
    # Speaker augmentation (not in the release): a vocal-tract-length-like frequency warp by a random factor in
    # [1 - warp, 1 + warp], and a circular time shift of up to shift frames.
    warp: float = 0.0
    shift: int = 0


# The unaugmented fbank of each clip is kept in memory, up to this many bytes per dataset (per DataLoader
# worker): small-data training revisits each clip hundreds of times, and decoding plus the fbank cost more
# than a small model's step.
FEATURE_CACHE_BYTES = 512 * 2**20


class ClipDataset(torch.utils.data.Dataset):
    """Items are (index, epoch) pairs from `EpochBatchSampler`; returns (features (T, F), target (labels,)).

    Features come from `extractor` exactly as inference computes them (fbank, pad or cut to its max_length,
    normalise); training adds the augmentations around those steps: mixup and gain on the waveform, a random
    crop of long clips, SpecAugment masks on the unnormalised fbank, noise and a time roll after normalising.
    """

    def __init__(
        self, clips: list[Clip], num_labels: int, extractor: ASTFeatureExtractor, augment: AugmentConfig | None = None,
        training: bool = False, seed: int = 0, role: str | None = None,
    ) -> None:
        """`role` names the clips in errors (default: "training" when `training`, else "evaluation")."""
        self.clips = clips
        self.role = role or ("training" if training else "evaluation")
        self.num_labels = num_labels
        self.extractor = extractor
        self.augment = augment or AugmentConfig()
        self.training = training
        self.seed = seed
        self._fbank_cache: dict[int, torch.Tensor] = {}
        self._cached_bytes = 0

    def __len__(self) -> int:
        return len(self.clips)

    def _target(self, clip: Clip) -> torch.Tensor:
        target = torch.zeros(self.num_labels)
        target[clip.labels] = 1.0
        return target

    def _waveform(self, index: int) -> np.ndarray:
        clip = self.clips[index]
        try:
            return load_audio(clip.path, self.extractor.sampling_rate)
        except ASTAudioError as exc:
            raise DataError(f"{self.role} clip {index}: {exc}") from None

    def __getitem__(self, item: int | tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng([self.seed, epoch, index])
        augment = self.augment if self.training else AugmentConfig()
        if augment.mixup == 0 and augment.gain_db == 0:  # the waveform is the file's: its fbank can be reused
            feats, target = self._cached_fbank(index), self._target(self.clips[index])
        else:
            waveform, target = self._mixed(index, augment, rng)
            if augment.gain_db > 0:
                waveform = waveform * 10 ** (rng.uniform(-augment.gain_db, augment.gain_db) / 20)
            feats = self._fbank(waveform)
        longer = feats.shape[0] - self.extractor.max_length
        offset = int(rng.integers(0, longer + 1)) if self.training and longer >= 0 else 0
        feats = self.extractor.fit_length(feats, offset=offset)
        if augment.warp > 0:
            factor = float(rng.uniform(1 - augment.warp, 1 + augment.warp))
            feats = frequency_warp(feats, factor, self.extractor.fbank_options)
        feats = _spec_augment(feats, augment, rng)
        if self.extractor.do_normalize:
            feats = self.extractor.normalize(feats)
        if augment.noise:
            feats = feats + torch.from_numpy(rng.random(feats.shape, dtype=np.float32)) * float(rng.random()) / 10
            feats = torch.roll(feats, int(rng.integers(-10, 10)), 0)
        if augment.shift > 0:
            feats = torch.roll(feats, int(rng.integers(-augment.shift, augment.shift + 1)), 0)
        return feats, target

    def _fbank(self, waveform: np.ndarray) -> torch.Tensor:
        """The extractor's unnormalised fbank (frames, mel bins) of a waveform (one window at least)."""
        waveform = np.asarray(waveform, dtype=np.float32)
        shortest = self.extractor.fbank_options.window_size
        if len(waveform) < shortest:
            waveform = np.pad(waveform, (0, shortest - len(waveform)))
        return self.extractor.raw_fbank(torch.from_numpy(waveform))

    def _cached_fbank(self, index: int) -> torch.Tensor:
        """A copy of clip `index`'s fbank (augmentations write into it), from memory when it has been seen."""
        feats = self._fbank_cache.get(index)
        if feats is None:
            feats = self._fbank(self._waveform(index))
            size = feats.numel() * feats.element_size()
            if self._cached_bytes + size <= FEATURE_CACHE_BYTES:
                self._fbank_cache[index] = feats
                self._cached_bytes += size
        return feats.clone()

    def _mixed(self, index: int, augment: AugmentConfig, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor]:
        """The clip's waveform and target, mixed with a random partner's with probability `augment.mixup`."""
        waveform, target = self._waveform(index), self._target(self.clips[index])
        if not (augment.mixup > 0 and rng.random() < augment.mixup):
            return waveform, target
        partner = int(rng.integers(len(self.clips)))
        # Mean-removed before the partner is zero-padded, as the release does: a DC step where the partner ends
        # would survive Kaldi's per-frame DC removal. (Without mixup that removal makes the mean irrelevant, so
        # a clip's features are exactly the extractor's.)
        waveform = waveform - waveform.mean()
        other = self._waveform(partner)
        other = other - other.mean()
        other = np.pad(other, (0, max(0, len(waveform) - len(other))))[: len(waveform)]
        lam = float(rng.beta(10, 10))
        waveform = lam * waveform + (1 - lam) * other
        return waveform - waveform.mean(), lam * target + (1 - lam) * self._target(self.clips[partner])


def _spec_augment(feats: torch.Tensor, augment: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    """One frequency mask of up to `freqm` bins and one time mask of up to `timem` frames, set to 0 (in place)."""
    if augment.freqm > 0:
        width = int(rng.integers(0, augment.freqm + 1))
        start = int(rng.integers(0, feats.shape[1] - width + 1))
        feats[:, start : start + width] = 0.0
    if augment.timem > 0:
        width = int(rng.integers(0, min(augment.timem, feats.shape[0]) + 1))
        start = int(rng.integers(0, feats.shape[0] - width + 1))
        feats[start : start + width, :] = 0.0
    return feats


def frequency_warp(feats: torch.Tensor, factor: float, options: FbankOptions) -> torch.Tensor:
    """The log-mel fbank (frames, mel bins) of the same sound with every frequency scaled by `factor`: bin b
    takes the value the input has at frequency centre(b) / factor (linear interpolation between bins, the edge
    bins held beyond the band). A factor above 1 moves energy up, as a shorter vocal tract does; this is
    vocal tract length perturbation (Jaitly and Hinton 2013) applied to the mel axis, so a few speakers cover
    more of the formant positions unseen ones have. Raises ValueError for a factor <= 0."""
    if factor <= 0:
        raise ValueError(f"frequency warp factor must be positive, got {factor}")
    bins = feats.shape[1]
    high = options.high_freq if options.high_freq > 0 else options.sample_frequency / 2 + options.high_freq
    mel_low = float(mel_scale(torch.tensor(options.low_freq, dtype=torch.float64)))
    mel_high = float(mel_scale(torch.tensor(high, dtype=torch.float64)))
    delta = (mel_high - mel_low) / (bins + 1)
    centres_mel = mel_low + delta * torch.arange(1, bins + 1, dtype=torch.float64)
    centres = 700.0 * torch.expm1(centres_mel / 1127.0)  # Kaldi's mel scale inverted
    source = (mel_scale(centres / factor) - mel_low) / delta - 1  # fractional bin index the value comes from
    source = source.clamp(0, bins - 1)
    lower = source.floor().long()
    upper = (lower + 1).clamp(max=bins - 1)
    weight = (source - lower).to(feats.dtype)
    return feats[:, lower] * (1 - weight) + feats[:, upper] * weight


def load_clips(source: str, labels: LabelSpace | None) -> tuple[list[Clip], LabelSpace]:
    """Clips and labels from a class-per-folder directory, a JSON manifest or a CSV."""
    if os.path.isdir(source):
        clips, found = folder_clips(source)
        if labels is not None and labels.names != found.names:
            missing = sorted(set(found.names) - set(labels.names))
            if missing:
                raise DataError(f"{source}: classes {missing} are not among the training classes {labels.names}")
            lookup = {name: i for i, name in enumerate(labels.names)}
            clips = [Clip(c.path, [lookup[found.names[c.labels[0]]]]) for c in clips]
            return clips, labels
        return clips, found
    if not os.path.isfile(source):
        raise DataError(f"{source}: no such file or folder")
    return manifest_clips(source, labels)


@dataclass
class DataSplits:
    train: list[Clip]
    validation: list[Clip]
    test: list[Clip] | None
    labels: LabelSpace
    multi_label: bool


def prepare_data(config: "TrainConfig") -> DataSplits:
    """Read and check every split before any model is built: missing files and unknown labels fail here."""
    labels = LabelSpace.from_csv(config.labels_csv) if config.labels_csv else None
    train, labels = load_clips(config.train, labels)
    if config.validation:
        validation, _ = load_clips(config.validation, labels)
    else:
        train, validation = seeded_split(train, config.validation_fraction, config.seed)
    test = load_clips(config.test, labels)[0] if config.test else None
    splits = {"train": train, "validation": validation, "test": test}
    for name, clips in splits.items():
        if clips is not None:
            source = f"{name} data ({getattr(config, name) or config.train})"
            check_files(clips, source)
            splits[name] = readable_clips(clips, source)
            if name == "train":
                check_no_class_emptied(clips, splits[name], labels, source)
            check_files(splits[name], source)  # none left: "no clips"
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    check_classes(train, labels, config.train)
    multi_label = any(len(clip.labels) != 1 for clip in train)
    return DataSplits(train, validation, test, labels, multi_label)


def check_classes(clips: list[Clip], labels: LabelSpace, source: str) -> None:
    """Refuse training data that holds fewer than two classes: a classifier has nothing to tell apart (and its
    mAP and AUC are undefined). Raises DataError naming the source and the one class found."""
    present = sorted({label for clip in clips for label in clip.labels})
    if len(present) < 2:
        found = f"only the class '{labels.names[present[0]]}'" if present else "no labelled clips"
        raise DataError(f"{source}: the training data holds {found}; training a classifier needs at least two "
                        f"classes ({_classes_hint(source)})")


def _classes_hint(source: str) -> str:
    """How the kind of data `source` is gives a second class."""
    if os.path.isdir(source):
        return "a folder: one sub-folder per class"
    if str(source).lower().endswith(".csv"):
        return "a CSV: rows path,label[,label...] naming at least two labels"
    return "a manifest: clips whose 'labels' name at least two classes"


def balanced_weights(clips: list[Clip], num_labels: int) -> np.ndarray:
    """The release's AudioSet sampling weights: sum over a clip's labels of 1000 / (label count + 0.01)."""
    counts = np.zeros(num_labels)
    for clip in clips:
        counts[clip.labels] += 1
    per_label = 1000.0 / (counts + 0.01)
    return np.array([per_label[clip.labels].sum() for clip in clips])


@dataclass
class EpochBatchSampler:
    """Yields this rank's share of each global batch as (index, epoch) pairs.

    The epoch's order is a permutation (or, with `weights`, a weighted draw with replacement) seeded by
    (seed, epoch); global batch k is order[k*B:(k+1)*B] and rank r takes its r-th slice, so any number of
    processes sees the same global batches as one process. `skip_batches` resumes mid-epoch.
    """

    size: int
    batch_size: int  # global batch
    seed: int = 0
    shuffle: bool = True
    weights: np.ndarray | None = None
    rank: int = 0
    world_size: int = 1
    drop_last: bool = False
    epoch: int = 0
    skip_batches: int = 0

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7919])
        if self.weights is not None:
            p = self.weights / self.weights.sum()
            return rng.choice(self.size, size=self.size, replace=True, p=p)
        return rng.permutation(self.size) if self.shuffle else np.arange(self.size)

    def __len__(self) -> int:
        full = self.size // self.batch_size
        return full if self.drop_last or self.size % self.batch_size == 0 else full + 1

    def __iter__(self):
        order = self.order()
        per_rank = self.batch_size // self.world_size
        for batch in range(self.skip_batches, len(self)):
            chunk = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            if len(chunk) < self.batch_size and self.world_size > 1:
                # Pad the last global batch by wrapping around so every rank gets the same count.
                chunk = np.concatenate([chunk, order[: self.batch_size - len(chunk)]])
            mine = chunk[self.rank * per_rank : (self.rank + 1) * per_rank] if self.world_size > 1 else chunk
            yield [(int(i), self.epoch) for i in mine]


def collate(batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    features, targets = zip(*batch)
    return torch.stack(features), torch.stack(targets)
