"""Results as table rows: one row per input with a fixed schema, for Parquet (pyarrow, pandas, DuckDB)."""

from __future__ import annotations

import os
from typing import Any

from ast_audio.inference.results import ClipResult


def clip_record(result: ClipResult, top_k: int = 5, timeline: bool = True, embeddings: bool = False) -> dict[str, Any]:
    """One input's row: path, duration, the top labels and scores, the timeline (start, end, labels, scores
    per window), the embedding (with `embeddings`), error and warning."""
    record: dict[str, Any] = {"path": result.source, "duration": None, "labels": [], "scores": [], "timeline": [],
                              "error": result.error, "warning": result.warning}
    if embeddings:
        record["embedding"] = None
    if not result.ok:
        return record
    top = result.top(top_k)
    record.update(duration=round(result.duration, 3), labels=[i["label"] for i in top],
                  scores=[i["score"] for i in top])
    if timeline:
        record["timeline"] = [{"start": w["start"], "end": w["end"], "labels": [i["label"] for i in w["labels"]],
                               "scores": [i["score"] for i in w["labels"]]} for w in result.timeline(top_k)]
    if embeddings:
        record["embedding"] = [float(x) for x in result.embedding]
    return record


def schema(embedding_size: int | None = None):
    """The rows' Arrow schema; `embedding_size` adds a fixed-size list column of float32."""
    import pyarrow as pa

    window = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("labels", pa.list_(pa.string())),
                        ("scores", pa.list_(pa.float64()))])
    fields = [("path", pa.string()), ("duration", pa.float64()), ("labels", pa.list_(pa.string())),
              ("scores", pa.list_(pa.float64())), ("timeline", pa.list_(window)), ("error", pa.string()),
              ("warning", pa.string())]
    if embedding_size:
        fields.append(("embedding", pa.list_(pa.float32(), embedding_size)))
    return pa.schema(fields)


def records_table(records: list[dict[str, Any]], embeddings: bool = False):
    """A pyarrow Table of rows from `clip_record`."""
    import pyarrow as pa

    size = next((len(r["embedding"]) for r in records if r.get("embedding") is not None), None) if embeddings else None
    if embeddings and size is None:
        size = 1  # no input succeeded: any fixed size holds only nulls
    return pa.Table.from_pylist(records, schema=schema(size))


def write_parquet(records: list[dict[str, Any]], path: str | os.PathLike, embeddings: bool = False) -> None:
    """Write rows to a Parquet file atomically."""
    import pyarrow.parquet as pq

    from ast_audio.io_utils import atomic_path

    table = records_table(records, embeddings)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
