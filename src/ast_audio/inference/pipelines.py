"""`pipeline("audio-classification", model=...)`: the public pipeline's call shape and options over
`AudioClassifier`.

The options follow transformers' `AudioClassificationPipeline` (5.x): `top_k` (None: every label; more than
the head has: every label), `function_to_apply` ("softmax", "sigmoid" or "none", at construction and per
call), and `device` as an int (-1: CPU, N: cuda:N), a name or a `torch.device`. Two deliberate differences:

- `top_k` given at construction is the default of every call (5 when not given), as the reference's
  constructor intends; the reference 5.24 drops it and returns every label unless a call passes `top_k`.
- `function_to_apply` defaults to the checkpoint's score function (`ast_audio.model.scoring`): the same as
  the reference's default when `problem_type` is set or the head has fewer than 100 labels; a large head with
  no `problem_type` (the public AudioSet checkpoints) gets sigmoid where the reference applies softmax. Pass
  function_to_apply="softmax" for the reference's numbers there.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from ast_audio.errors import ConfigError
from ast_audio.inference.classifier import DEFAULT_MODEL, AudioClassifier
from ast_audio.inference.results import ClipResult
from ast_audio.inference.sources import AudioInput
from ast_audio.model.scoring import SCORE_FUNCTIONS, logits_to_scores, score_function_for

TASKS = ("audio-classification",)
# transformers' names -> ours (`ast_audio.model.scoring`); ours are accepted too.
FUNCTIONS_TO_APPLY = {"softmax": "softmax", "sigmoid": "sigmoid", "none": "identity"}
DEFAULT_TOP_K = 5
_UNSET: Any = object()  # a call without top_k (None means every label)


def score_function_named(function_to_apply: str) -> str:
    """Our score function for transformers' `function_to_apply` name (or one of ours); ConfigError otherwise."""
    if function_to_apply in FUNCTIONS_TO_APPLY:
        return FUNCTIONS_TO_APPLY[function_to_apply]
    if function_to_apply in SCORE_FUNCTIONS:
        return function_to_apply
    raise ConfigError(
        f"function_to_apply must be one of {list(FUNCTIONS_TO_APPLY)}, got {function_to_apply!r}"
    )


def checked_top_k(top_k: int | None) -> int | None:
    """`top_k` as given when it is None (every label) or a positive int; ConfigError otherwise."""
    if top_k is None or (isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0):
        return top_k
    raise ConfigError(f"top_k must be a positive number of labels, or None for every label; got {top_k!r}")


def pipeline_device(device: int | str | torch.device | None) -> str | torch.device | None:
    """transformers' device argument as ours: an int is an accelerator ordinal (cuda:N), negative meaning CPU."""
    if isinstance(device, bool):
        raise ConfigError(f"device must be an int, a device name or a torch.device, got {device!r}")
    if isinstance(device, int):
        return "cpu" if device < 0 else f"cuda:{device}"
    return device


class AudioClassificationPipeline(AudioClassifier):
    """An `AudioClassifier` called as transformers' audio-classification pipeline (see the module docstring).

    The model's logits are kept per window and turned into scores per call, so `function_to_apply` can change
    from call to call; windows are scored first, then pooled, as for `AudioClassifier`.
    """

    def __init__(self, *args: Any, top_k: int | None = DEFAULT_TOP_K, function_to_apply: str | None = None,
                 score_function: str = "auto", **kwargs: Any) -> None:
        """`function_to_apply` and `score_function` name the same choice (transformers' and ast-audio's
        names); "auto" / None follow the checkpoint. Other arguments as `AudioClassifier`."""
        super().__init__(*args, score_function="identity", **kwargs)
        self.score_function = score_function_for(self.config.problem_type, self.config.num_labels)
        self.top_k: int | None = DEFAULT_TOP_K
        self.set_call_defaults(top_k=top_k, function_to_apply=function_to_apply, score_function=score_function)

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike = DEFAULT_MODEL, *, top_k: int | None = DEFAULT_TOP_K,
                        function_to_apply: str | None = None, **kwargs: Any) -> "AudioClassificationPipeline":
        """`AudioClassifier.from_pretrained` with the pipeline's call defaults."""
        loaded = super().from_pretrained(model, **kwargs)
        loaded.set_call_defaults(top_k=top_k, function_to_apply=function_to_apply)
        return loaded

    def set_call_defaults(self, *, top_k: int | None = _UNSET, function_to_apply: str | None = None,
                          score_function: str = "auto") -> None:
        """Set what a call without these options uses; an option not given is left as it is."""
        if top_k is not _UNSET:
            self.top_k = checked_top_k(top_k)
        chosen = function_to_apply if function_to_apply is not None else score_function
        if chosen != "auto":
            self.score_function = score_function_named(chosen)

    def __call__(
        self, inputs: AudioInput | list[AudioInput], top_k: int | None = _UNSET, sampling_rate: int | None = None,
        function_to_apply: str | None = None, **options: Any,
    ) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Top labels as [{"label", "score"}] for one input, or a list of such lists for a list of inputs.

        top_k: this call's number of labels (None: every label; default: the pipeline's). function_to_apply:
        this call's score function (default: the pipeline's). Raises the input's error on a bad input.
        """
        top_k = self.top_k if top_k is _UNSET else checked_top_k(top_k)
        results = self.classify(inputs, sampling_rate=sampling_rate, function_to_apply=function_to_apply, **options)
        if isinstance(results, ClipResult):
            return results.top(top_k)
        return [result.top(top_k) for result in results]

    def iter_classify(
        self, inputs: Iterable[AudioInput], *, function_to_apply: str | None = None, **options: Any
    ) -> Iterator[ClipResult]:
        """`AudioClassifier.iter_classify`, each window scored with `function_to_apply` (default: the
        pipeline's) before pooling."""
        function = self.score_function if function_to_apply is None else score_function_named(function_to_apply)
        return (_scored(result, function) for result in super().iter_classify(inputs, **options))


def _scored(result: ClipResult, function: str) -> ClipResult:
    """`result` with its window logits replaced by their scores under `function`."""
    if result.ok and result.window_scores is not None:
        logits = torch.from_numpy(result.window_scores)
        result.window_scores = logits_to_scores(logits, function).numpy()
    return result


def pipeline(
    task: str | None = "audio-classification", model: str | os.PathLike = DEFAULT_MODEL, *,
    top_k: int | None = DEFAULT_TOP_K, function_to_apply: str | None = None,
    device: int | str | torch.device | None = None, **kwargs: Any,
) -> AudioClassificationPipeline:
    """A callable returning [{"label", "score"}] per input, like the public audio-classification pipeline.

    top_k: labels per input (None: every label); function_to_apply: "softmax", "sigmoid" or "none" (default:
    the checkpoint's, see the module docstring); device: -1 (CPU), N (cuda:N), a name or a torch.device
    (default: CUDA when available). Other keyword arguments go to `AudioClassifier.from_pretrained` (dtype,
    batch_size, window, hop, ...). Raises ConfigError (a ValueError) for an unknown task or a bad option.
    """
    if task is not None and task not in TASKS:  # None: the task of the model, as transformers infers it
        raise ConfigError(f"unsupported task {task!r}; supported: {TASKS}")
    top_k = checked_top_k(top_k)
    if function_to_apply is not None:
        score_function_named(function_to_apply)  # refused before the checkpoint loads
    return AudioClassificationPipeline.from_pretrained(
        model, top_k=top_k, function_to_apply=function_to_apply, device=pipeline_device(device), **kwargs
    )
