"""Tagging archives on a Ray cluster with Ray Data: the inference core's stages as a streaming pipeline.

files -> decoding, window planning and features (CPU tasks, one row per file with its windows' features)
-> model actors (an actor pool, one GPU each where there are GPUs; the windows of a batch of files go through
the model `batch_size` at a time) -> each file's row, assembled by the actor that scored its windows: the local
engine's record (`ClipResult.to_dict`) in the typed schema of `ast_audio.jobs.records`, with the class selection
and the `events` of the job's `AnswerOptions`, found by the same `inference.prepare.assemble`. No shuffle: rows
stream out as files finish. A file of more than `max_windows_per_row` windows is read by its actor window by
window, so no row holds an hour of features. Needs ``pip install "ast-audio[ray]"``.

Modules: `tagging` (the pipeline), `resources` (does it fit the cluster), `stream` (rows on the driver,
watched for stalls), `directory` (a job's output directory: row files, options, resume).

>>> import ast_audio.distributed as dist
>>> rows = dist.tag(["a.flac", "b.mp3"], model="./ast-audioset")    # a ray.data.Dataset, one row per file
>>> rows.write_parquet("tags/")
>>> dist.tag(paths, model="./ast-audioset", events=True, include=["Dog", "Cat"])  # rows with an events list
"""

from __future__ import annotations

from ast_audio.distributed.tagging import RayOptions, tag

__all__ = ["RayOptions", "tag"]
