"""`AudioClassifier`: files, bytes or arrays of any length in; labels, timelines and embeddings out.

A thin public layer over the inference core (`ast_audio.inference.runner`): long inputs are cut into windows
of the model's input (10.255 s for the default checkpoint) every `hop` seconds (half a window by default),
read one window at a time so memory is bounded by the batch, not the file.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ast_audio.errors import AudioError, ConfigError, UsageError
from ast_audio.answers.events import EventOptions
from ast_audio.answers.options import AnswerOptions
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.features.timing import Timing
from ast_audio.inference.backends import build_backend
from ast_audio.inference.options import DEFAULT_MODEL
from ast_audio.inference.results import POOLINGS, ClipResult
from ast_audio.inference.runner import InferenceRunner
from ast_audio.inference.sources import AudioInput
from ast_audio.inference.windows import window_and_hop
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.model.scoring import SCORE_FUNCTIONS, score_function_for
from ast_audio.runtime import ThreadBudget, resolve_device



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
        threads: int | None = None,
        answers: AnswerOptions | None = None,
    ) -> None:
        """`score_function` "auto" follows the checkpoint (`ast_audio.model.scoring`); `threads` sets the
        intra-op threads of the model and of decoding/features (default: every core, `ThreadBudget`);
        `answers` the class selection and events of every result (default: every class, no events). Raises
        `ConfigError` for a selection naming a label the checkpoint lacks."""
        if quantize not in (None, "int8"):
            raise UsageError(f"quantize must be None or 'int8', got {quantize!r}")
        if score_function not in ("auto", *SCORE_FUNCTIONS):
            raise UsageError(f"score_function must be one of {('auto', *SCORE_FUNCTIONS)}, got {score_function!r}")
        if pooling not in POOLINGS:
            raise UsageError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.config = model.config
        self.device = resolve_device(device)
        self.backend = backend
        self.timing = Timing.for_model(self.config, feature_extractor.fbank_options)
        self.labels = [self.config.id2label[i] for i in range(self.config.num_labels)]
        if score_function == "auto":
            score_function = score_function_for(self.config.problem_type, self.config.num_labels)
        self.score_function = score_function
        self.runner = InferenceRunner(
            build_backend(model, self.device, backend=backend, int8=quantize == "int8", compile=compile,
                          onnx_path=onnx_path),
            feature_extractor, self.timing, self.labels, score_function, batch_size=batch_size,
            threads=ThreadBudget.for_machine(threads),
        )
        self.model = getattr(self.runner.backend, "model", None)
        self.feature_extractor = feature_extractor
        self.batch_size = batch_size
        self.window, self.hop = window_and_hop(self.timing, window, hop)
        self.pooling = pooling
        self.answers = answers or AnswerOptions()
        self.answers.build(self.labels)  # a label the model lacks is refused now, not at the first result

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
        threads: int | None = None,
        answers: AnswerOptions | None = None,
        events: EventOptions | bool | None = None,
        include: Sequence[str] | os.PathLike | None = None,
        exclude: Sequence[str] | os.PathLike | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
        rollup: bool = False,
        decide: Any = None,
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

        Answers (`ast_audio.answers.options.AnswerOptions`): pass one `answers` object, or its fields as
        keywords (not both): `events` (`EventOptions`, or True for the defaults: threshold 0.5, off 0.3),
        `include` / `exclude` (label names, or a Path to a file of them), `groups` ({name: [label, ...]}),
        `rollup` (AudioSet hierarchy), `decide` (True: the checkpoint's thresholds.json when it has one, else
        0.5 for every class; or what `AnswerOptions(decide=...)` takes). Results then carry the selected labels,
        `ClipResult.events` and `ClipResult.decisions`.
        """
        from ast_audio.hub import resolve_file

        hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
        if decide is True:
            from ast_audio.answers.options import THRESHOLDS_NAME

            beside = resolve_file(model, THRESHOLDS_NAME, required=False, **hub)
            decide = pathlib.Path(beside) if beside else True
        shortcuts = dict(events=events, include=include, exclude=exclude, groups=groups or (), rollup=rollup,
                         decide=decide)
        if answers is not None and AnswerOptions(**shortcuts).active:
            raise ConfigError("pass either answers= or its fields (events, include, exclude, groups, rollup, "
                              "decide), not both")
        answers = answers or AnswerOptions(**shortcuts)
        network = ASTForAudioClassification.from_pretrained(
            model, dtype=dtype, attn_implementation=attn_implementation, **hub
        )
        extractor = ASTFeatureExtractor.for_checkpoint(model, network.config, **hub)
        if backend == "onnxruntime" and onnx_path is None:
            from ast_audio.onnx import ONNX_INT8_NAME, ONNX_NAME

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
            threads=threads, answers=answers,
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
        strict: bool = False,
        progress: Callable[[float], Any] | None = None,
        answers: AnswerOptions | None = None,
        batch_size: int | None = None,
    ) -> Iterator[ClipResult]:
        """Yield a `ClipResult` per input, in order, as soon as it is complete; a bad input yields a result
        with `error` set and the others go on. An input cut short (a partial download) gives what decodes and
        a `warning`; with `strict` it is an error. `progress(seconds)` follows the audio scored, batch by batch.
        `answers` replaces the classifier's class selection and events for this call; `batch_size` its windows
        per model call (as a pipeline call's batch_size: the same scores)."""
        window, hop = window_and_hop(self.timing, window, hop, default=(self.window, self.hop))
        return self.runner.run(inputs, window=window, hop=hop, pooling=pooling or self.pooling,
                               sampling_rate=sampling_rate, strict=strict, progress=progress,
                               answers=answers or self.answers, batch_size=batch_size)
