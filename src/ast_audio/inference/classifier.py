"""`AudioClassifier`: files, bytes or arrays of any length in; labels, timelines and embeddings out.

Long inputs are cut into windows of the model's length (10.24 s for the default checkpoint) every `hop`
seconds (half a window by default), read one window at a time so memory is bounded by the batch, not the
file. Decoding and feature extraction run in a background thread while the model works on the previous
batch.
"""

from __future__ import annotations

import io
import logging
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from ast_audio.audio.decode import AudioFile, resample
from ast_audio.errors import ASTAudioError, AudioError, ConfigError
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.inference.results import POOLINGS, ClipResult, plan_windows

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"
SCORE_FUNCTIONS = ("auto", "sigmoid", "softmax")
BACKENDS = ("torch", "onnxruntime")

AudioInput = Union[str, os.PathLike, bytes, bytearray, np.ndarray, torch.Tensor, dict]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """None or "auto": CUDA when available, else CPU."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a device name (cpu, cuda, cuda:1, mps, ...)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use cpu")
    return resolved


class _Source:
    """One input, readable a window at a time as mono float32 at the extractor's rate."""

    def __init__(self, item: AudioInput, index: int, rate: int, sampling_rate: int | None) -> None:
        self.rate = rate
        self._file: AudioFile | None = None
        self._samples: np.ndarray | None = None
        if isinstance(item, dict):
            array = item.get("array", item.get("raw"))
            if array is None:
                raise AudioError(f"input {index}: a dict input needs an 'array' (or 'raw') entry and 'sampling_rate'")
            item, sampling_rate = array, item.get("sampling_rate", sampling_rate)
        if isinstance(item, (str, os.PathLike)):
            self.name = os.fspath(item)
            self._file = AudioFile(item)
            self.duration = self._file.duration
        elif isinstance(item, (bytes, bytearray)):
            self.name = f"<input {index}: {len(item)} bytes>"
            if len(item) == 0:
                raise AudioError(f"{self.name}: empty audio data")
            self._file = AudioFile(io.BytesIO(bytes(item)))
            self.duration = self._file.duration
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            self.name = f"<input {index}: array>"
            samples = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if samples.ndim != 1:
                raise AudioError(f"{self.name}: expected mono samples (samples,), got shape {samples.shape}")
            if samples.dtype.kind not in "f":
                raise AudioError(f"{self.name}: expected float samples in [-1, 1], got dtype {samples.dtype}")
            if not np.isfinite(samples).all():
                raise AudioError(f"{self.name}: contains NaN or infinite samples")
            if sampling_rate is None:
                logger.warning("%s: no sampling_rate given; assuming %d Hz", self.name, rate)
                sampling_rate = rate
            self._samples = resample(samples.astype(np.float32, copy=False), int(sampling_rate), rate)
            self.duration = len(self._samples) / rate
        else:
            raise AudioError(
                f"input {index}: expected a path, bytes, a NumPy array or tensor of samples, or a dict with "
                f"'array' and 'sampling_rate'; got {type(item).__name__}"
            )
        minimum = 0.025
        if self.duration < minimum:
            raise AudioError(f"{self.name}: {self.duration * 1000:.1f} ms of audio is shorter than one 25 ms frame")

    def read(self, start: float, end: float) -> np.ndarray:
        if self._file is not None:
            return self._file.read(offset=start, duration=end - start, sampling_rate=self.rate)
        return self._samples[int(round(start * self.rate)) : int(round(end * self.rate))]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class _Plan:
    index: int
    source: str
    windows: list[tuple[float, float]]
    duration: float


@dataclass
class _Failure:
    index: int
    source: str
    error: str


@dataclass
class _Batch:
    keys: list[tuple[int, int]]  # (input index, window index) per row
    features: torch.Tensor


class AudioClassifier:
    """Classify audio of any length with an AST checkpoint.

    >>> classifier = AudioClassifier.from_pretrained("path/to/checkpoint")
    >>> classifier("dog.wav", top_k=3)
    [{'label': 'Dog', 'score': 0.93}, ...]
    """

    def __init__(
        self,
        model: ASTForAudioClassification,
        feature_extractor: ASTFeatureExtractor,
        *,
        device: str | torch.device | None = None,
        batch_size: int = 8,
        window: float | None = None,
        hop: float | None = None,
        pooling: str = "mean",
        score_function: str = "auto",
        backend: str = "torch",
        quantize: str | None = None,
        compile: bool = False,
        onnx_path: str | os.PathLike | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if quantize not in (None, "int8"):
            raise ConfigError(f"quantize must be None or 'int8', got {quantize!r}")
        if backend == "onnxruntime" and compile:
            raise ConfigError("torch.compile applies to the torch backend, not onnxruntime")
        if feature_extractor.num_mel_bins != model.config.num_mel_bins:
            raise ConfigError(
                f"feature extractor makes {feature_extractor.num_mel_bins} mel bins but the model expects "
                f"{model.config.num_mel_bins}"
            )
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if score_function not in SCORE_FUNCTIONS:
            raise ConfigError(f"score_function must be one of {SCORE_FUNCTIONS}, got {score_function!r}")
        self.device = resolve_device(device)
        self.config = model.config
        self.backend = backend
        self._session = None
        if backend == "onnxruntime":
            from ast_audio.export import onnx_session

            if onnx_path is None:  # with quantize="int8", onnx_path is the int8 file (model.int8.onnx)
                raise ConfigError("the onnxruntime backend needs onnx_path (ast-audio export writes model.onnx)")
            self._session = onnx_session(onnx_path, self.device)
            self.model = None
        else:
            if quantize == "int8":
                if self.device.type != "cpu":
                    raise ConfigError("int8 dynamic quantisation runs on the CPU only; use dtype=float16 on a GPU")
                from ast_audio.export import quantize_int8

                model = quantize_int8(model)
            from ast_audio.export import LogitsAndPooled

            self.model = model.to(self.device).eval()
            self._network = LogitsAndPooled(self.model)
            if compile:
                self._network = torch.compile(self._network)
        self.feature_extractor = feature_extractor
        if feature_extractor.max_length != self.config.max_length:
            logger.warning(
                "preprocessor max_length %d differs from the model's %d; using the model's",
                feature_extractor.max_length, self.config.max_length,
            )
            feature_extractor.max_length = self.config.max_length
        self.batch_size = batch_size
        frame_shift = feature_extractor.fbank_options.frame_shift / 1000
        self.window = window or self.config.max_length * frame_shift
        self.hop = hop or self.window / 2
        self._check_window(self.window, self.hop)
        self.pooling = pooling
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        self.score_function = self._resolve_score_function(score_function)

    def _check_window(self, window: float, hop: float) -> None:
        longest = self.config.max_length * self.feature_extractor.fbank_options.frame_shift / 1000
        if window <= 0 or hop <= 0:
            raise ConfigError(f"window and hop must be positive seconds, got {window}, {hop}")
        if window > longest + 1e-6:
            raise ConfigError(
                f"window {window:g} s is longer than the model's input ({longest:g} s, {self.config.max_length} "
                "frames): the rest would be cut off; use a shorter window"
            )

    def _resolve_score_function(self, requested: str) -> str:
        if requested != "auto":
            return requested
        by_problem = {"multi_label_classification": "sigmoid", "single_label_classification": "softmax",
                      "regression": "identity"}
        if self.config.problem_type in by_problem:
            return by_problem[self.config.problem_type]
        # Unset in the public checkpoints: AudioSet-style taggers (hundreds of labels) are multi-label.
        return "sigmoid" if self.config.num_labels >= 100 else "softmax"

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike = DEFAULT_MODEL,
        *,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        batch_size: int = 8,
        window: float | None = None,
        hop: float | None = None,
        pooling: str = "mean",
        score_function: str = "auto",
        attn_implementation: str = "sdpa",
        backend: str = "torch",
        quantize: str | None = None,
        compile: bool = False,
        onnx_path: str | os.PathLike | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> "AudioClassifier":
        """Load a checkpoint directory or Hub id (model + preprocessor_config.json).

        backend "onnxruntime" runs `onnx_path` (default: the checkpoint's model.onnx, from `ast-audio export`,
        or model.int8.onnx with quantize="int8", from `ast-audio export --int8`); on the torch backend
        quantize="int8" applies dynamic int8 quantisation to the Linear layers (CPU); compile=True wraps the
        model in torch.compile (the first batches are slow while it compiles).
        """
        from ast_audio.checkpoints.hub import resolve_file

        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        network = ASTForAudioClassification.from_pretrained(
            model, dtype=dtype, attn_implementation=attn_implementation, **hub
        )
        extractor = ASTFeatureExtractor.for_checkpoint(model, network.config, **hub)
        if backend == "onnxruntime" and onnx_path is None:
            from ast_audio.export import ONNX_INT8_NAME, ONNX_NAME

            name = ONNX_INT8_NAME if quantize == "int8" else ONNX_NAME
            onnx_path = resolve_file(model, name, required=False, **hub)
            if onnx_path is None:
                raise AudioError(
                    f"{model}: no {name} for the onnxruntime backend; create it with "
                    f"ast-audio export {model} --onnx{' --int8' if quantize == 'int8' else ''}"
                )
        return cls(
            network, extractor, device=device, batch_size=batch_size, window=window, hop=hop, pooling=pooling,
            score_function=score_function, backend=backend, quantize=quantize, compile=compile, onnx_path=onnx_path,
        )

    # -------------------------------------------------------------------------------------------- API
    def __call__(
        self, inputs: AudioInput | list[AudioInput], top_k: int = 5, sampling_rate: int | None = None, **options: Any
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Top labels as [{"label", "score"}] for one input, or a list of such lists for a list of inputs.

        Raises the input's error when one cannot be decoded (use `iter_classify` to go on past bad items).
        """
        results = self.classify(inputs, sampling_rate=sampling_rate, **options)
        if isinstance(results, ClipResult):
            return results.top(top_k)
        return [result.top(top_k) for result in results]

    def classify(
        self, inputs: AudioInput | list[AudioInput], sampling_rate: int | None = None, **options: Any
    ) -> ClipResult | list[ClipResult]:
        """`ClipResult`s (clip scores, timeline, embeddings) for one input or a list; raises on a bad input."""
        single = not isinstance(inputs, (list, tuple))
        results = list(self.iter_classify([inputs] if single else inputs, sampling_rate=sampling_rate, **options))
        for result in results:
            if not result.ok:
                raise AudioError(result.error)
        return results[0] if single else results

    def embed(
        self, inputs: AudioInput | list[AudioInput], sampling_rate: int | None = None, **options: Any
    ) -> np.ndarray | list[np.ndarray]:
        """Clip embeddings (the pooled hidden_size vector, averaged over windows) for one input or a list."""
        results = self.classify(inputs, sampling_rate=sampling_rate, **options)
        if isinstance(results, ClipResult):
            return results.embedding
        return [result.embedding for result in results]

    def iter_classify(
        self,
        inputs: Iterable[AudioInput],
        *,
        sampling_rate: int | None = None,
        window: float | None = None,
        hop: float | None = None,
        pooling: str | None = None,
    ) -> Iterator[ClipResult]:
        """Yield a `ClipResult` per input, in order, as soon as it is complete; a bad input yields a result
        with `error` set and the others go on."""
        if window is None:
            window, hop = self.window, hop or self.hop
        else:
            hop = hop or window / 2
        self._check_window(window, hop)
        pooling = pooling or self.pooling
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        events: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        producer = threading.Thread(
            target=self._produce, args=(list(inputs), sampling_rate, window, hop, events, stop), daemon=True
        )
        producer.start()
        pending: dict[int, ClipResult] = {}
        remaining: dict[int, int] = {}
        finished: dict[int, ClipResult] = {}
        next_index = 0
        try:
            while True:
                event = events.get()
                if event is None:
                    break
                if isinstance(event, BaseException):
                    raise event
                if isinstance(event, _Plan):
                    pending[event.index] = ClipResult(
                        source=event.source, duration=event.duration, windows=event.windows, labels=self.labels,
                        pooling=pooling,
                    )
                    remaining[event.index] = len(event.windows)
                elif isinstance(event, _Failure):
                    pending.pop(event.index, None)
                    remaining.pop(event.index, None)
                    finished[event.index] = ClipResult(source=event.source, labels=self.labels, error=event.error)
                else:
                    scores, embeddings = self._run_model(event.features)
                    for row, (index, window_index) in enumerate(event.keys):
                        result = pending.get(index)
                        if result is None:  # its input failed after some windows were batched
                            continue
                        if result.window_scores is None:
                            result.window_scores = np.empty((len(result.windows), scores.shape[1]), np.float32)
                            result.window_embeddings = np.empty((len(result.windows), embeddings.shape[1]), np.float32)
                        result.window_scores[window_index] = scores[row]
                        result.window_embeddings[window_index] = embeddings[row]
                        remaining[index] -= 1
                        if remaining[index] == 0:
                            finished[index] = pending.pop(index)
                            del remaining[index]
                while next_index in finished:
                    yield finished.pop(next_index)
                    next_index += 1
        finally:
            stop.set()
            while producer.is_alive():
                try:
                    events.get(timeout=0.05)
                except queue.Empty:
                    pass

    # ------------------------------------------------------------------------------------ internals
    def _produce(
        self, inputs: list[AudioInput], sampling_rate: int | None, window: float, hop: float,
        events: queue.Queue, stop: threading.Event,
    ) -> None:
        """Decode windows and compute their features, batch by batch, in input order (runs in a thread)."""

        def put(event: Any) -> bool:
            while not stop.is_set():
                try:
                    events.put(event, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        rate = self.feature_extractor.sampling_rate
        minimum = self.feature_extractor.fbank_options.window_size
        keys: list[tuple[int, int]] = []
        clips: list[np.ndarray] = []

        def flush() -> bool:
            if not clips:
                return True
            try:
                features = self.feature_extractor(clips, sampling_rate=rate, return_tensors="pt")["input_values"]
            except ASTAudioError as exc:  # cannot happen for decoded windows, but never lose the whole batch
                for index in {key[0] for key in keys}:
                    if not put(_Failure(index, f"input {index}", str(exc))):
                        return False
                keys.clear(), clips.clear()
                return True
            batch = _Batch(list(keys), features)
            keys.clear(), clips.clear()
            return put(batch)

        try:
            for index, item in enumerate(inputs):
                if stop.is_set():
                    return
                name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<input {index}>"
                try:
                    source = _Source(item, index, rate, sampling_rate)
                except (ASTAudioError, OSError) as exc:
                    if not put(_Failure(index, name, str(exc))):
                        return
                    continue
                try:
                    windows = plan_windows(source.duration, window, hop)
                    if not put(_Plan(index, source.name, windows, source.duration)):
                        return
                    for window_index, (start, end) in enumerate(windows):
                        samples = source.read(start, end)
                        if len(samples) < minimum:  # a sliver at the very end: pad to one frame
                            samples = np.pad(samples, (0, minimum - len(samples)))
                        keys.append((index, window_index))
                        clips.append(samples)
                        if len(clips) == self.batch_size and not flush():
                            return
                except (ASTAudioError, OSError) as exc:
                    if not put(_Failure(index, source.name, str(exc))):
                        return
                finally:
                    source.close()
            if flush():
                put(None)
        except BaseException as exc:  # surface unexpected errors in the consumer, not a silent thread death
            put(exc)

    @torch.inference_mode()
    def _forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and pooled embeddings of a feature batch, on whichever backend."""
        if self._session is not None:
            logits, pooled = self._session.run(["logits", "pooler_output"], {"input_values": features.numpy()})
            return torch.from_numpy(logits), torch.from_numpy(pooled)
        return self._network(features.to(self.device, non_blocking=True))

    @torch.inference_mode()
    def _run_model(self, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, pooled = self._forward(features)
        logits = logits.float()
        if self.score_function == "sigmoid":
            scores = torch.sigmoid(logits)
        elif self.score_function == "softmax":
            scores = torch.softmax(logits, dim=-1)
        else:
            scores = logits
        return scores.cpu().numpy(), pooled.float().cpu().numpy()
