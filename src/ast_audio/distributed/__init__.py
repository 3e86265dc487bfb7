"""Tagging archives on a Ray cluster with Ray Data: the inference core's stages as a streaming pipeline.

files -> decoding, window planning and features (CPU tasks, one row per window) -> model actors (an actor
pool, one GPU each where there are GPUs, batching windows across files) -> per-file assembly (clip scores,
timeline, embedding) -> rows with the schema of `ast_audio.inference.tabular`. Windows of one long file may be
scored by different actors; the file's row equals the local engine's. Needs ``pip install "ast-audio[ray]"``.

>>> import ast_audio.distributed as dist
>>> rows = dist.tag(["a.flac", "b.mp3"], model="./ast-audioset")    # a ray.data.Dataset, one row per file
>>> rows.write_parquet("tags/")
"""

from __future__ import annotations

from ast_audio.distributed.tagging import RayOptions, tag

__all__ = ["RayOptions", "tag"]
