"""The Ray Data pipeline behind `ast_audio.distributed.tag`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from ast_audio.errors import ASTAudioError, ConfigError


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("the Ray engine needs Ray Data: pip install 'ast-audio[ray]'") from None
    return ray


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How a job runs: the model and its options, windows, output columns, and the actor pool."""

    model: str
    window: float | None = None
    hop: float | None = None
    pooling: str = "mean"
    top_k: int = 5
    timeline: bool = True
    embeddings: bool = False
    strict: bool = False
    batch_size: int = 8
    backend: str = "torch"
    int8: bool = False
    dtype: str | None = None
    device: str = "auto"
    threads: int | None = None
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    local_files_only: bool = False

    def classifier(self):
        from ast_audio.inference.classifier import AudioClassifier

        return AudioClassifier.from_pretrained(
            self.model, device=self.device, dtype=self.dtype, batch_size=self.batch_size, window=self.window,
            hop=self.hop, pooling=self.pooling, backend=self.backend, quantize="int8" if self.int8 else None,
            threads=self.threads, local_files_only=self.local_files_only,
        )


@dataclasses.dataclass(frozen=True)
class _WindowSpec:
    """What the CPU stage needs, built once on the driver and shipped to its tasks."""

    extractor: Any
    timing: Any
    window: float
    hop: float
    strict: bool

    @classmethod
    def for_options(cls, options: RayOptions) -> "_WindowSpec":
        from ast_audio.features.extractor import ASTFeatureExtractor
        from ast_audio.features.timing import Timing
        from ast_audio.model.configuration import ASTConfig

        config = ASTConfig.from_pretrained(options.model, local_files_only=options.local_files_only)
        extractor = ASTFeatureExtractor.for_checkpoint(options.model, config, local_files_only=options.local_files_only)
        timing = Timing.for_model(config, extractor.fbank_options)
        window = options.window or timing.input_seconds
        hop = options.hop or window / 2
        timing.check_window(window, hop)
        return cls(extractor, timing, window, hop, options.strict)


def _window_rows(row: dict[str, Any], spec: _WindowSpec) -> list[dict[str, Any]]:
    """CPU stage: a file row -> one row per window with its features (or one row with the file's error)."""
    from ast_audio.inference.sources import AudioSource
    from ast_audio.inference.windows import plan_windows

    path = str(row["path"])
    try:
        source = AudioSource(path, 0, spec.timing)
    except (ASTAudioError, OSError) as exc:
        return [_failed_row(path, str(exc), spec)]
    try:
        if spec.strict and source.warning:
            raise ASTAudioError(f"{source.name}: {source.warning} (--strict)")
        windows = plan_windows(source.duration, spec.window, spec.hop)
        clips = [source.read(start, end) for start, end in windows]
        features = spec.extractor(clips, sampling_rate=spec.timing.sampling_rate, return_tensors="np",
                                  max_length=spec.timing.input_frames)["input_values"]
    except (ASTAudioError, OSError) as exc:
        return [_failed_row(path, str(exc), spec)]
    finally:
        source.close()
    return [{"path": path, "window_index": i, "windows": len(windows), "start": start, "end": end,
             "duration": source.duration, "warning": source.warning or "", "error": "", "features": features[i]}
            for i, (start, end) in enumerate(windows)]


def _failed_row(path: str, error: str, spec: _WindowSpec) -> dict[str, Any]:
    shape = (spec.timing.input_frames, spec.extractor.num_mel_bins)
    return {"path": path, "window_index": 0, "windows": 1, "start": 0.0, "end": 0.0, "duration": 0.0,
            "warning": "", "error": error, "features": np.zeros(shape, np.float32)}


class _Model:
    """Actor stage: scores and pooled embeddings of window rows, batched across files (error rows pass)."""

    def __init__(self, options: RayOptions) -> None:
        self.runner = options.classifier().runner

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        ok = batch["error"] == ""
        count = len(batch["error"])
        scores = np.zeros((count, len(self.runner.labels)), np.float32)
        embeddings = None
        if ok.any():
            got_scores, got_embeddings = self.runner.infer(torch.from_numpy(np.ascontiguousarray(batch["features"][ok])))
            scores[ok] = got_scores
            embeddings = np.zeros((count, got_embeddings.shape[1]), np.float32)
            embeddings[ok] = got_embeddings
        if embeddings is None:
            embeddings = np.zeros((count, 1), np.float32)
        out = {key: value for key, value in batch.items() if key != "features"}
        out.update(scores=scores, embedding=embeddings)
        return out


def _assemble(group, labels: list[str], options: RayOptions):
    """Aggregation stage: a file's window rows (any order) -> its row, as the local engine computes it."""
    import pyarrow as pa

    from ast_audio.inference.results import ClipResult
    from ast_audio.inference.tabular import clip_record, schema

    order = np.argsort(group["window_index"])
    path = str(group["path"][0])
    error = str(group["error"][0])
    if error:
        result = ClipResult(source=path, labels=labels, error=error)
    else:
        result = ClipResult(
            source=path, duration=float(group["duration"][0]),
            windows=[(float(group["start"][i]), float(group["end"][i])) for i in order],
            window_scores=np.stack([group["scores"][i] for i in order]).astype(np.float32),
            window_embeddings=np.stack([group["embedding"][i] for i in order]).astype(np.float32),
            labels=labels, pooling=options.pooling, warning=str(group["warning"][0]) or None,
        )
    record = clip_record(result, options.top_k, options.timeline, options.embeddings)
    size = None
    if options.embeddings:
        size = len(record["embedding"]) if record["embedding"] is not None else int(group["embedding"].shape[-1])
    return pa.Table.from_pylist([record], schema=schema(size))


def tag(inputs: Any, model: str | RayOptions, **options: Any):
    """One row per input file (see `ast_audio.inference.tabular` for the columns), as a `ray.data.Dataset`.

    `inputs`: paths, or a Ray Dataset with a "path" column. `model` and keyword options as `RayOptions`
    (window, hop, pooling, top_k, timeline, embeddings, strict, batch_size, backend, int8, num_workers,
    cpus_per_worker, gpus_per_worker, ...). Bad files come back as rows with `error` set.
    """
    ray = require_ray()
    config = model if isinstance(model, RayOptions) else RayOptions(model=os.fspath(model), **options)
    if config.num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {config.num_workers}")
    from ast_audio.model.configuration import ASTConfig

    model_config = ASTConfig.from_pretrained(config.model, local_files_only=config.local_files_only)
    labels = [model_config.id2label[i] for i in range(model_config.num_labels)]
    if not isinstance(inputs, ray.data.Dataset):
        inputs = [os.fspath(p) for p in inputs]
    files = inputs if isinstance(inputs, ray.data.Dataset) else ray.data.from_items([{"path": p} for p in inputs])
    # Decoding and features are light beside the model: a quarter CPU each, so they fit beside the actors.
    windows = files.flat_map(_window_rows, fn_kwargs={"spec": _WindowSpec.for_options(config)}, num_cpus=0.25)
    scored = windows.map_batches(
        _Model, fn_constructor_kwargs={"options": config}, batch_size=config.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.num_workers), num_cpus=config.cpus_per_worker,
        num_gpus=config.gpus_per_worker,
    )
    # A few shuffle partitions per replica: Ray's default (200) costs more than the assembly on small jobs.
    partitions = max(1, min(len(inputs) if isinstance(inputs, list) else 64, 4 * config.num_workers))
    return scored.groupby("path", num_partitions=partitions).map_groups(
        _assemble, fn_kwargs={"labels": labels, "options": config}, batch_format="numpy")
