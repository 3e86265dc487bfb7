"""The Ray Data pipeline behind `ast_audio.distributed.tag`."""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

import numpy as np

from ast_audio.answers.options import AnswerOptions
from ast_audio.distributed.resources import DECODE_TASK_CPUS
from ast_audio.errors import ConfigError



def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ConfigError("the Ray engine needs Ray Data: pip install 'ast-audio[ray]'") from None
    return ray


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """How a job runs: the model and its options, windows, output columns, the answers (class selection and
    events: `ast_audio.answers.options.AnswerOptions`, as for the local engine), and the actor pool."""

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
    cpus_per_worker: float | None = None  # None: 1, or less where the cluster needs CPUs for decoding
    gpus_per_worker: float = 0.0
    local_files_only: bool = False
    decode_tasks_per_worker: int | None = None
    # A file of more windows than this is read by its model actor as it goes, not shipped whole as features
    # (128 windows of 1024 x 128 float32: 64 MB).
    max_windows_per_row: int = 128
    answers: AnswerOptions = AnswerOptions()

    @property
    def decode_tasks(self) -> int:
        """How many decoding+features tasks run at once: `decode_tasks_per_worker` per model replica; by
        default 1 for a CPU replica (more would take cores from the model, and each starts a process) and 4 for
        a GPU replica (one CPU cannot keep a GPU busy)."""
        per_worker = self.decode_tasks_per_worker or (4 if self.gpus_per_worker else 1)
        return self.num_workers * per_worker

    @classmethod
    def of(cls, options, **job: Any) -> "RayOptions":
        """The Ray job of an `inference.options.InferenceOptions` (its model and inference options), with the
        pipeline's own (`job`: embeddings, num_workers, cpus_per_worker, ...)."""
        return cls(**{**_shared_fields(options, cls), **job})

    @property
    def inference(self):
        """These options' `InferenceOptions` (what the model replicas load and how they score)."""
        from ast_audio.inference.options import InferenceOptions

        return InferenceOptions(**_shared_fields(self, InferenceOptions))

    def classifier(self):
        return self.inference.load()


def _shared_fields(options: Any, kind: type) -> dict[str, Any]:
    """The fields of dataclass `options` that dataclass `kind` has too, as they are (not `dataclasses.asdict`,
    which would turn the nested `AnswerOptions` into a dict)."""
    names = {field.name for field in dataclasses.fields(kind)}
    return {field.name: getattr(options, field.name) for field in dataclasses.fields(options) if field.name in names}


@dataclasses.dataclass(frozen=True)
class _WindowSpec:
    """What the CPU stage needs, built once on the driver and shipped to its tasks."""

    extractor: Any
    timing: Any
    window: float
    hop: float
    strict: bool
    max_windows_per_row: int
    labels: tuple[str, ...]  # the model's classes, in the order of its scores

    @classmethod
    def for_options(cls, options: RayOptions) -> "_WindowSpec":
        from ast_audio.features.extractor import ASTFeatureExtractor
        from ast_audio.features.timing import Timing
        from ast_audio.model.configuration import ASTConfig

        config = ASTConfig.from_pretrained(options.model, local_files_only=options.local_files_only)
        extractor = ASTFeatureExtractor.for_checkpoint(options.model, config, local_files_only=options.local_files_only)
        timing = Timing.for_model(config, extractor.fbank_options)
        from ast_audio.inference.windows import window_and_hop

        window, hop = window_and_hop(timing, options.window, options.hop)
        labels = tuple(config.id2label[index] for index in range(config.num_labels))
        return cls(extractor, timing, window, hop, options.strict, options.max_windows_per_row, labels)

    def featurise(self, clips: list[np.ndarray]) -> np.ndarray:
        """Features (windows, input frames, mel bins) of mono sample arrays at the model's rate."""
        return self.extractor(clips, sampling_rate=self.timing.sampling_rate, return_tensors="np",
                              max_length=self.timing.input_frames)["input_values"]

    @property
    def feature_shape(self) -> tuple[int, int]:
        return self.timing.input_frames, self.extractor.num_mel_bins


def _file_row(row: dict[str, Any], spec: _WindowSpec) -> dict[str, Any]:
    """CPU stage: a file -> its windows' features in one row, or the file's error (`failures.input_error`, as
    the local engine); a file of more than `max_windows_per_row` windows is left for the model actor to read as
    it goes (`deferred`)."""
    from ast_audio.failures import input_error
    from ast_audio.inference.prepare import prepare

    path = str(row["path"])
    try:
        prepared = prepare(path, spec.timing, window=spec.window, hop=spec.hop, strict=spec.strict)
    except Exception as exc:  # one file's fault, whatever its kind, is that file's error row
        return _file_row_of(path, spec, error=input_error(path, exc))
    with prepared:
        plan = prepared.plan
        if len(plan.windows) > spec.max_windows_per_row:
            return _file_row_of(path, spec, deferred=True)
        try:
            features = np.concatenate(list(prepared.features(spec.featurise, len(plan.windows))))
        except Exception as exc:
            return _file_row_of(path, spec, error=input_error(path, exc))
    return _file_row_of(path, spec, windows=plan.windows, duration=plan.duration, warning=plan.warning or "",
                        features=features)


def _file_row_of(path: str, spec: _WindowSpec, *, windows: list[tuple[float, float]] = (), duration: float = 0.0,
                 warning: str = "", error: str = "", deferred: bool = False, features: np.ndarray | None = None):
    if features is None:
        features = np.zeros((0, *spec.feature_shape), np.float32)
    bounds = np.asarray(windows, np.float64).reshape(-1, 2)
    return {"path": path, "duration": duration, "warning": warning, "error": error, "deferred": deferred,
            "bounds": bounds, "features": features}


class _Model:
    """Actor stage: rows of files -> their result rows. The windows of all files in a batch go through the
    model together, `batch_size` at a time; a deferred (long) file is read and scored here, window by window,
    as the local engine does. A file's windows never leave one actor, so no shuffle assembles them."""

    def __init__(self, options: RayOptions) -> None:
        from ast_audio.allocator import keep_freed_memory

        keep_freed_memory()  # as the local engine: reuse batch buffers instead of faulting them in each batch
        # Built here, not shipped: constructor arguments over Ray's inline limit go to the object store, which
        # makes restarting a killed replica depend on them (and Ray says so on stderr at every start).
        spec = _WindowSpec.for_options(options)
        classifier = options.classifier()
        self.runner = classifier.runner
        self.embedding_size = classifier.config.hidden_size if options.embeddings else None
        self.options = options
        self.spec = spec
        # The selection and event plan, built once per replica as the local engine builds it once per job.
        self.answers = options.answers.build(self.runner.labels) if options.answers.active else None
        self.labels = self.runner.labels if self.answers is None else list(self.answers.labels)

    def __call__(self, batch: dict[str, np.ndarray]):
        import pyarrow as pa

        from ast_audio.jobs.records import clip_record, schema

        options = self.options
        results = self._results(batch)
        records = [clip_record(result, options.top_k, options.timeline, options.embeddings) for result in results]
        return pa.Table.from_pylist(records, schema=schema(self.embedding_size))

    def _results(self, batch: dict[str, np.ndarray]) -> list:
        """Each row's `ClipResult` (`prepare.assemble` with the job's answers and, where they ask for it, the
        finer pass; or `prepare.failed` for a row with an error)."""
        from ast_audio.inference.prepare import WindowPlan, assemble, failed

        count = len(batch["path"])
        features = [np.asarray(batch["features"][i]) for i in range(count)]  # none for errors and deferred files
        scores, embeddings = self._infer(features)
        results, first = [], 0
        for i in range(count):
            path, error = str(batch["path"][i]), str(batch["error"][i])
            if error:
                results.append(failed(path, error, self.labels))
            elif batch["deferred"][i]:
                results.append(self._read_here(path))
            else:
                last = first + len(features[i])
                bounds = np.asarray(batch["bounds"][i]).reshape(-1, 2)
                plan = WindowPlan(i, path, [tuple(map(float, b)) for b in bounds], float(batch["duration"][i]),
                                  str(batch["warning"][i]) or None)
                result = assemble(plan, scores[first:last], embeddings[first:last], self.runner.labels,
                                  self.options.pooling, self.answers)
                results.append(self.runner.refine(result, result.source, self.answers, self.spec.window, self.spec.hop))
                first = last
        return results

    def _infer(self, features: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and pooled embeddings of every window of `features`, in model batches of `batch_size`."""
        import torch

        windows = np.concatenate(features) if features else np.zeros((0, *self.spec.feature_shape), np.float32)
        scores, embeddings = [], []
        for first in range(0, len(windows), self.runner.batch_size):
            got = self.runner.infer(torch.from_numpy(np.ascontiguousarray(windows[first : first + self.runner.batch_size])))
            scores.append(got[0])
            embeddings.append(got[1])
        if not scores:
            return np.zeros((0, len(self.runner.labels)), np.float32), np.zeros((0, 1), np.float32)
        return np.concatenate(scores), np.concatenate(embeddings)

    def _read_here(self, path: str):
        spec = self.spec
        return next(self.runner.run([path], window=spec.window, hop=spec.hop, pooling=self.options.pooling,
                                    strict=spec.strict, answers=self.options.answers))


def _with_answers(options: dict[str, Any]) -> dict[str, Any]:
    """`tag`'s keyword options with the answers' fields given as keywords (events=True, include=[...]) gathered
    into one `AnswerOptions`; ConfigError where both `answers` and its fields are given."""
    names = {field.name for field in dataclasses.fields(AnswerOptions)}
    fields = {name: options.pop(name) for name in list(options) if name in names}
    if fields and "answers" in options:
        raise ConfigError("pass either answers= or its fields (events, include, exclude, groups, rollup, refine), "
                          "not both")
    return {**options, "answers": options.get("answers") or AnswerOptions(**fields)}


def fit_to_cluster(config: RayOptions) -> tuple[RayOptions, str | None]:
    """`config` with the CPUs per replica the connected cluster can run beside the decoding tasks (see
    `ast_audio.distributed.resources` for the rule), and a one-line note where they were lowered. Raises
    ConfigError, naming the options to change, for a pipeline the cluster cannot run."""
    from ast_audio.distributed.resources import fit, live_nodes

    chosen = fit(live_nodes(), config.num_workers, config.cpus_per_worker, config.gpus_per_worker,
                 config.decode_tasks)
    return dataclasses.replace(config, cpus_per_worker=chosen.cpus_per_worker), chosen.note


def tag(inputs: Any, model: str | RayOptions, **options: Any):
    """One row per input file (the columns of `ast_audio.jobs.records.schema`: the local engine's record,
    typed), as a `ray.data.Dataset`.

    `inputs`: paths, or a Ray Dataset with a "path" column. `model` and keyword options as `RayOptions`
    (window, hop, pooling, top_k, timeline, embeddings, strict, batch_size, backend, int8, num_workers,
    cpus_per_worker, gpus_per_worker, ...). `answers` (`ast_audio.answers.options.AnswerOptions`), or its
    fields as keywords (events, include, exclude, groups, rollup, refine) as for
    `AudioClassifier.from_pretrained`: the class selection and the events (with the finer pass where asked),
    so rows carry the selected labels and an `events` list. Bad files
    come back as rows with `error` set. Rows stream out as their files are done (no barrier), in no
    particular order. Connects to Ray (`ray.init()`) if no connection is open, and checks that the pipeline
    fits the cluster: ConfigError if it cannot run, or if the answers name a label the model lacks (before
    any work); a warning where the CPUs per replica were lowered to leave room for decoding.
    """
    ray = require_ray()
    config = model if isinstance(model, RayOptions) else RayOptions(model=os.fspath(model),
                                                                    **_with_answers(options))
    if config.num_workers < 1:
        raise ConfigError(f"num_workers must be at least 1, got {config.num_workers}")
    for name in ("max_windows_per_row", "decode_tasks_per_worker"):
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    spec = _WindowSpec.for_options(config)
    config.answers.build(spec.labels)  # a label the model lacks is refused here, not in every replica
    if not ray.is_initialized():
        ray.init()
    config, note = fit_to_cluster(config)
    if note:
        warnings.warn(note, stacklevel=2)
    if not isinstance(inputs, ray.data.Dataset):
        inputs = ray.data.from_items([{"path": os.fspath(p)} for p in inputs])
    # A bounded number of decoding tasks at once, or Ray starts a process (importing torch) per free quarter
    # CPU, on the model's cores.
    files = inputs.map(_file_row, fn_kwargs={"spec": spec}, num_cpus=DECODE_TASK_CPUS,
                       compute=ray.data.TaskPoolStrategy(size=config.decode_tasks))
    # batch_size counts files here: their windows are batched `batch_size` at a time inside the actor.
    return files.map_batches(
        _Model, fn_constructor_kwargs={"options": config}, batch_size=config.batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=config.num_workers),
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker,
    )
