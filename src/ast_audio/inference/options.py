"""The options of an inference job, in one frozen object every front end takes.

The command line builds `InferenceOptions` once (`from_args`); `classify`/`embed` (local engine), `serve` and
`--engine ray` (`distributed.tagging.RayOptions.of`) all load their model through `load`, the one mapping of
these options onto `AudioClassifier.from_pretrained`. The vocabularies of the options that are names
(`BACKENDS`, `DTYPES`; poolings: `inference.results.POOLINGS`) live here, without importing torch, so that
argument parsers take their `choices` from them and `--help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ast_audio.answers.options import AnswerOptions

BACKENDS = ("torch", "onnxruntime")  # how a feature batch becomes scores (`inference.backends.build_backend`)
DTYPES = ("float32", "float16", "bfloat16")  # model precisions a user picks by name
DEFAULT_MODEL = "MIT/ast-finetuned-audioset-10-10-0.4593"

# The options that decide an output's numbers (and its rows' form with --strict): a resumed job must have the
# same. The keys of resume state files: do not rename.
NUMBER_OPTIONS = ("model", "window", "hop", "dtype", "backend", "int8", "strict")


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
    """What an inference job runs and how.

    model: checkpoint directory or Hub id; window, hop: seconds (None: `inference.windows.window_and_hop`'s
    default); pooling: of window scores into clip scores (`results.POOLINGS`); strict: a warning (a file cut
    short) is an error; batch_size: windows per model call; backend: one of `BACKENDS`; int8: dynamic int8
    quantisation (torch) or the int8 ONNX file (onnxruntime); dtype: one of `DTYPES` (None: float32); threads:
    intra-op threads per stage (None: every core); top_k: labels per record; timeline: records carry the
    windows; device: "auto", "cpu", "cuda:1", ...; compile: torch.compile; local_files_only: never contact the
    Hub; answers: the class selection and events (`ast_audio.answers.options.AnswerOptions`; default: every
    class of the model, no events).
    """

    model: str = DEFAULT_MODEL
    window: float | None = None
    hop: float | None = None
    pooling: str = "mean"
    strict: bool = False
    batch_size: int = 8
    backend: str = "torch"
    int8: bool = False
    dtype: str | None = None
    threads: int | None = None
    top_k: int = 5
    timeline: bool = True
    device: str = "auto"
    compile: bool = False
    local_files_only: bool = False
    answers: AnswerOptions = AnswerOptions()

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> "InferenceOptions":
        """The options a command line gave (`commands._common.add_model_options` and the job arguments); an
        option the command does not declare keeps its default; `overrides` win over both."""
        given = {"local_files_only": getattr(args, "offline", False), "answers": AnswerOptions.from_args(args)}
        for field in dataclasses.fields(cls):
            if field.name not in ("local_files_only", "answers") and hasattr(args, field.name):
                given[field.name] = getattr(args, field.name)
        return cls(**{**given, **overrides})

    def numbers(self) -> dict[str, Any]:
        """The options that decide an output's numbers (`NUMBER_OPTIONS`, and the answers' "selection" and
        "events" when set: `AnswerOptions.numbers`), as a resumed job compares them
        (`jobs.comparison.option_differences`). The model is named by its resolved location, with
        "model_fingerprint", a hash of its files (`checkpoints.identity.model_identity`)."""
        from ast_audio.checkpoints.identity import model_identity

        numbers = {**{name: getattr(self, name) for name in NUMBER_OPTIONS}, **self.answers.numbers()}
        onnx_file = ("model.int8.onnx" if self.int8 else "model.onnx") if self.backend == "onnxruntime" else None
        return {**numbers, **model_identity(self.model, onnx_file)}

    def load(self):
        """The `AudioClassifier` of these options (loads the model; raises its errors: `CheckpointNotFoundError`
        offline, `ConfigError` for options that cannot work together)."""
        from ast_audio.inference.classifier import AudioClassifier

        return AudioClassifier.from_pretrained(
            self.model, device=self.device, dtype=self.dtype, batch_size=self.batch_size, window=self.window,
            hop=self.hop, pooling=self.pooling, backend=self.backend, quantize="int8" if self.int8 else None,
            compile=self.compile, threads=self.threads, local_files_only=self.local_files_only,
            answers=self.answers,
        )
