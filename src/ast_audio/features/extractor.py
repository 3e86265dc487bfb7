"""`ASTFeatureExtractor`: waveforms -> normalised log-mel fbank (batch, max_length, num_mel_bins), as AST expects."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ast_audio.errors import AudioError, ConfigError
from ast_audio.features.kaldi import FbankOptions, fbank
from ast_audio.features.workspace import workspace
from ast_audio.features.preprocessor_config import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    PREPROCESSOR_CONFIG_NAME,
    default_preprocessor_config,
    write_preprocessor_config,
)

logger = logging.getLogger(__name__)

_GENERIC_KEYS = frozenset({"feature_extractor_type", "padding_side", "processor_class", "_processor_class"})


class BatchFeature(dict):
    """A dict of model inputs whose entries are also attributes (``features.input_values``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: str | torch.device) -> "BatchFeature":
        """Move every tensor to `device`."""
        return BatchFeature({k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.items()})


LIKELY_CHANNELS = 32  # a 2-D array with at most this many columns (and more rows) is multichannel audio


def multichannel_hint(shape: Sequence[int], batch_allowed: bool = False) -> str | None:
    """What to do with a 2-D array of samples that looks like multichannel audio, or None when it does not.

    (samples, channels) is recognised by having at most `LIKELY_CHANNELS` columns and more rows than that;
    (channels, samples) likewise, unless `batch_allowed` (where it reads as a batch of clips)."""
    if len(shape) != 2:
        return None
    rows, columns = (int(n) for n in shape)
    if columns <= LIKELY_CHANNELS < rows:
        return (f"shape {(rows, columns)} looks like (samples, channels); mix it to mono first, e.g. "
                "samples.mean(axis=1)")
    if not batch_allowed and rows <= LIKELY_CHANNELS < columns:
        return (f"shape {(rows, columns)} looks like (channels, samples); mix it to mono first, e.g. "
                "samples.mean(axis=0)")
    return None


def _as_waveform_list(raw_speech: Any) -> tuple[list[torch.Tensor], bool]:
    """Apply the public extractor's single/batch rules; returns float32 1-D tensors and whether it was a batch."""
    if isinstance(raw_speech, torch.Tensor) or isinstance(raw_speech, np.ndarray):
        if raw_speech.ndim > 2:
            raise AudioError(
                f"only mono audio is supported: got an array of shape {tuple(raw_speech.shape)}; pass (samples,) or "
                "(batch, samples), mixing channels to mono first"
            )
        batched = raw_speech.ndim == 2
        hint = multichannel_hint(raw_speech.shape, batch_allowed=True)
        if hint:
            raise AudioError(f"only mono audio is supported: {hint} (a batch is (batch, samples))")
        clips = list(raw_speech) if batched else [raw_speech]
    elif isinstance(raw_speech, (list, tuple)):
        if len(raw_speech) == 0:
            raise AudioError("no audio given: raw_speech is an empty list")
        batched = isinstance(raw_speech[0], (np.ndarray, torch.Tensor, list, tuple))
        clips = list(raw_speech) if batched else [raw_speech]
    else:
        raise AudioError(
            f"raw_speech must be a NumPy array, a torch.Tensor or a list of them (or of floats), got "
            f"{type(raw_speech).__name__}"
        )
    waveforms = []
    for index, clip in enumerate(clips):
        if isinstance(clip, np.ndarray) and clip.dtype.kind in "iub":
            raise AudioError(
                f"clip {index}: expected float samples in [-1, 1], got dtype {clip.dtype} (scale integer PCM first, "
                "e.g. int16 / 32768)"
            )
        tensor = clip if isinstance(clip, torch.Tensor) else torch.from_numpy(np.asarray(clip, dtype=np.float32))
        if tensor.ndim != 1:
            raise AudioError(f"clip {index}: expected mono samples (samples,), got shape {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise AudioError(
                f"clip {index}: expected float samples in [-1, 1], got dtype {tensor.dtype} (scale integer PCM "
                "first, e.g. int16 / 32768)"
            )
        waveforms.append(tensor.float())
    return waveforms, batched


class ASTFeatureExtractor:
    """Kaldi fbank + pad/cut to `max_length` frames + (x - mean) / (2 * std), with the public extractor's API.

    Same constructor arguments, defaults and preprocessor_config.json as the public `ASTFeatureExtractor`.
    Accepts NumPy arrays, torch tensors or lists; a batch of clips of different lengths is computed in one
    batched call, on `device` when given (CPU or CUDA).
    """

    model_input_names = ["input_values", "attention_mask"]

    def __init__(
        self,
        feature_size: int = 1,
        sampling_rate: int = 16000,
        num_mel_bins: int = 128,
        max_length: int = 1024,
        padding_value: float = 0.0,
        do_normalize: bool = True,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        return_attention_mask: bool = False,
        **kwargs: Any,
    ) -> None:
        unknown = sorted(set(kwargs) - _GENERIC_KEYS)
        if unknown:
            logger.warning("ASTFeatureExtractor: ignoring unknown settings %s", ", ".join(unknown))
        if feature_size != 1:
            raise ConfigError(f"feature_size must be 1 (mono audio), got {feature_size}")
        if not isinstance(max_length, int) or max_length < 1:
            raise ConfigError(f"max_length must be a positive number of frames, got {max_length!r}")
        if not std or std <= 0:
            raise ConfigError(f"std must be positive, got {std!r}")
        self.feature_size = feature_size
        self.sampling_rate = int(sampling_rate)
        self.num_mel_bins = num_mel_bins
        self.max_length = max_length
        self.padding_value = padding_value
        self.do_normalize = do_normalize
        self.mean = mean
        self.std = std
        self.return_attention_mask = return_attention_mask
        try:
            self.fbank_options = FbankOptions(sample_frequency=float(self.sampling_rate), num_mel_bins=num_mel_bins)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    # ------------------------------------------------------------------------------------- features
    def normalize(self, features: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
        """(x - mean) / (2 * std), as the AST release normalises (the same arithmetic as the batched path)."""
        scale, offset = self._normalisation()
        return features * scale + offset

    def _normalisation(self) -> tuple[float, float]:
        """(scale, offset) with (x - mean) / (2 std) = x * scale + offset."""
        return 1.0 / (2 * self.std), -self.mean / (2 * self.std)

    def raw_fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """The unnormalised, unpadded fbank (frames, num_mel_bins) of one mono float waveform."""
        if waveform.shape[-1] < self.fbank_options.window_size:
            raise AudioError(
                f"{waveform.shape[-1]} samples is shorter than one {self.fbank_options.frame_length:g} ms frame "
                f"({self.fbank_options.window_size} samples at {self.sampling_rate} Hz)"
            )
        return fbank(waveform.float(), self.fbank_options)

    def fit_length(self, features: torch.Tensor, max_length: int | None = None, offset: int = 0) -> torch.Tensor:
        """Unnormalised (frames, bins) features padded with `padding_value` or cut to `max_length` frames from
        `offset` (training crops at random offsets; inference and evaluation start at 0)."""
        max_length = max_length or self.max_length
        frames = features.shape[0]
        if frames <= max_length:
            return torch.nn.functional.pad(features, (0, 0, 0, max_length - frames), value=self.padding_value)
        if not 0 <= offset <= frames - max_length:
            raise ConfigError(f"offset {offset} is outside 0..{frames - max_length} for {frames} frames")
        return features[offset : offset + max_length].clone()

    def extract_fbank(
        self, waveforms: Sequence[torch.Tensor], max_length: int | None = None, device: str | torch.device | None = None,
        normalize: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fbank of mono float waveforms, padded with `padding_value` or cut to `max_length`, and normalised
        when `normalize` (padding included, as the public extractor does).

        Returns features (batch, max_length, num_mel_bins) and the number of real frames per clip (batch,).
        """
        max_length = max_length or self.max_length
        options = self.fbank_options
        limit = options.num_samples(max_length)
        lengths = []
        for index, waveform in enumerate(waveforms):
            samples = waveform.shape[-1]
            if samples < options.window_size:
                raise AudioError(
                    f"clip {index}: {samples} samples is shorter than one 25 ms frame "
                    f"({options.window_size} samples at {self.sampling_rate} Hz)"
                )
            lengths.append(min(samples, limit))
        longest = max(lengths)
        # The batch lives in a kept buffer: a fresh one (5 MB for 8 clips of 10 s) next to the fresh output
        # made the allocator hand memory back to the system and fault it in again, 2700 page faults a call.
        batch = workspace.get(("batch",), (len(waveforms), longest), torch.float32, torch.device(device or "cpu"))
        for row, (waveform, length) in enumerate(zip(waveforms, lengths)):
            batch[row, :length] = waveform[:length]
            if length < longest:
                batch[row, length:] = 0.0
        # NaN and inf propagate into the sum: one cheap reduction, then a row-by-row look only when it fails.
        if not bool(torch.isfinite(batch.sum())):
            bad = [i for i, row in enumerate(batch) if not bool(torch.isfinite(row).all())]
            if bad:
                raise AudioError(f"clip {bad[0]}: contains NaN or infinite samples")
        frames = [options.num_frames(n) for n in lengths]
        computed = options.num_frames(longest)  # <= max_length: the batch is cut to `limit` samples
        output = batch.new_empty((len(waveforms), max_length, self.num_mel_bins))
        features = fbank(batch, options, out=output[:, :computed])
        padding = self.padding_value
        if normalize:  # in place
            scale, offset = self._normalisation()
            features.mul_(scale).add_(offset)
            padding = padding * scale + offset
        output[:, computed:] = padding
        for row, count in enumerate(frames):
            if count < computed:  # frames computed over another clip's zero padding
                output[row, count:computed] = padding
        return output, torch.tensor(frames, device=output.device).clamp(max=max_length)

    def __call__(
        self,
        raw_speech: np.ndarray | torch.Tensor | list,
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        max_length: int | None = None,
        device: str | torch.device | None = None,
        return_attention_mask: bool | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Featurise one clip or a batch: (samples,), (batch, samples), or a list of clips of any lengths.

        return_tensors: "pt" (a (batch, max_length, num_mel_bins) tensor, on `device` if given), "np" (an
        array), or None (a list of arrays, as the public extractor). A single clip is returned as a batch of one.
        """
        if sampling_rate is not None and int(sampling_rate) != self.sampling_rate:
            raise AudioError(
                f"audio sampled at {sampling_rate} Hz, but this feature extractor (and its model) expects "
                f"{self.sampling_rate} Hz: resample it first (ast_audio.load_audio(path, sampling_rate="
                f"{self.sampling_rate}) does)"
            )
        if sampling_rate is None:
            logger.warning(
                "pass sampling_rate= to ASTFeatureExtractor(); without it a wrongly sampled input goes unnoticed"
            )
        if return_tensors not in (None, "pt", "np"):
            raise ConfigError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        waveforms, _ = _as_waveform_list(raw_speech)
        features, frames = self.extract_fbank(waveforms, max_length=max_length, device=device,
                                              normalize=self.do_normalize)
        output = BatchFeature(input_values=features)
        if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
            positions = torch.arange(features.shape[1], device=features.device)
            output["attention_mask"] = (positions < frames.unsqueeze(1)).to(torch.int32)
        if return_tensors == "pt":
            return output
        arrays = {key: value.cpu().numpy() for key, value in output.items()}
        if return_tensors == "np":
            return BatchFeature(arrays)
        return BatchFeature({key: list(value) for key, value in arrays.items()})

    # ------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        settings = default_preprocessor_config(
            self.num_mel_bins, self.max_length, mean=self.mean, std=self.std, sampling_rate=self.sampling_rate
        )
        settings.update(
            padding_value=self.padding_value, do_normalize=self.do_normalize,
            return_attention_mask=self.return_attention_mask,
        )
        return settings

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        from ast_audio.io_utils import atomic_write_text

        atomic_write_text(json_file_path, self.to_json_string())

    @classmethod
    def from_json_file(cls, json_file: str | os.PathLike) -> "ASTFeatureExtractor":
        return cls.from_pretrained(json_file)

    def save_pretrained(self, save_directory: str | os.PathLike) -> list[str]:
        """Write preprocessor_config.json into `save_directory`; returns the files written (as the reference)."""
        os.makedirs(save_directory, exist_ok=True)
        return [write_preprocessor_config(save_directory, self.to_dict())]

    def pad(
        self, processed_features: dict[str, Any], padding: bool | str = True, max_length: int | None = None,
        return_attention_mask: bool | None = None, return_tensors: str | None = None, **kwargs: Any,
    ) -> BatchFeature:
        """Pad sequences (raw waveforms, or feature rows) of several lengths with `padding_value`, as the public
        extractor's `pad`: to the longest (True or "longest") or to `max_length` ("max_length"); never cuts."""
        if isinstance(processed_features, (list, tuple)):  # a list of {"input_values": ...}, as the reference takes
            processed_features = {key: [item[key] for item in processed_features] for key in processed_features[0]}
        values = [np.asarray(v, dtype=np.float32) for v in processed_features["input_values"]]
        if padding in (True, "longest"):
            target = max(len(v) for v in values)
        elif padding == "max_length":
            if max_length is None:
                raise ConfigError("padding='max_length' needs max_length")
            target = max(max_length, max(len(v) for v in values))
        elif padding in (False, "do_not_pad"):
            target = None
        else:
            raise ConfigError(f"padding must be True, 'longest', 'max_length' or False, got {padding!r}")
        out: dict[str, Any] = dict(processed_features)
        if target is not None:
            out["input_values"] = [
                np.pad(v, [(0, target - len(v))] + [(0, 0)] * (v.ndim - 1), constant_values=self.padding_value)
                for v in values
            ]
        if return_attention_mask if return_attention_mask is not None else self.return_attention_mask:
            out["attention_mask"] = [(np.arange(len(padded)) < len(v)).astype(np.int32)
                                     for padded, v in zip(out["input_values"], values)]
        if return_tensors in ("np", "pt"):
            out = {key: np.stack(value) if isinstance(value, list) else value for key, value in out.items()}
            if return_tensors == "pt":
                out = {key: torch.from_numpy(value) if isinstance(value, np.ndarray) else value
                       for key, value in out.items()}
        return BatchFeature(out)

    @classmethod
    def from_dict(cls, settings: dict[str, Any], **overrides: Any) -> "ASTFeatureExtractor":
        return cls(**{**settings, **overrides})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **overrides: Any,
    ) -> "ASTFeatureExtractor":
        """Read preprocessor_config.json from a checkpoint directory (or its `subfolder`), the file itself, or a
        Hub id."""
        from ast_audio.hub import build_from_json

        return build_from_json(
            cls.from_dict, pretrained_model_name_or_path, PREPROCESSOR_CONFIG_NAME, overrides, revision=revision,
            cache_dir=cache_dir, local_files_only=local_files_only, token=token, subfolder=subfolder,
        )

    @classmethod
    def for_checkpoint(cls, name: str | os.PathLike, model_config: Any, **hub_kwargs: Any) -> "ASTFeatureExtractor":
        """The extractor for a checkpoint's model: its preprocessor_config.json (or, with a warning, AudioSet
        normalisation when it has none), with the model's input length and mel bins, which the model owns."""
        from ast_audio.hub import resolve_file

        geometry = {"max_length": model_config.max_length, "num_mel_bins": model_config.num_mel_bins}
        if not resolve_file(name, PREPROCESSOR_CONFIG_NAME, required=False, **hub_kwargs):
            logger.warning("%s has no %s; using AudioSet normalisation", name, PREPROCESSOR_CONFIG_NAME)
            return cls(**geometry)
        extractor = cls.from_pretrained(name, **hub_kwargs)
        if extractor.max_length != model_config.max_length:
            logger.warning("%s: preprocessor max_length %d differs from the model's %d; using the model's",
                           name, extractor.max_length, model_config.max_length)
        if extractor.num_mel_bins != model_config.num_mel_bins:
            raise ConfigError(f"{name}: the preprocessor makes {extractor.num_mel_bins} mel bins but the model "
                              f"expects {model_config.num_mel_bins}")
        return cls.from_dict(extractor.to_dict(), max_length=model_config.max_length)

    def __repr__(self) -> str:
        return f"ASTFeatureExtractor {json.dumps(self.to_dict(), sort_keys=True)}"
