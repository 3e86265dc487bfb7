"""Results as table rows: one row per input with a fixed schema, for Parquet (pyarrow, pandas, DuckDB)."""

from __future__ import annotations

import os
from typing import Any

from ast_audio.inference.results import ClipResult


# The columns of a row, in the order of `ClipResult.to_dict`'s keys (so a row less its nulls is that record).
COLUMNS = ("path", "duration", "pooling", "labels", "warning", "windows", "error")


def clip_record(result: ClipResult, top_k: int = 5, timeline: bool = True, embeddings: bool = False) -> dict[str, Any]:
    """One input's row: the record `ClipResult.to_dict` gives (the local engine's JSON), with every column of
    `COLUMNS` present (None where the record has no such key), and with `embeddings` the clip's `embedding`."""
    record: dict[str, Any] = dict.fromkeys(COLUMNS)
    record.update(result.to_dict(top_k, timeline))
    if embeddings:
        record["embedding"] = [float(x) for x in result.embedding] if result.ok else None
    return record


def json_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row back in the JSON form of `ClipResult.to_dict` (its null columns left out)."""
    return {key: value for key, value in row.items() if value is not None}


def schema(embedding_size: int | None = None):
    """The rows' Arrow schema, the typed form of the JSON record: `labels` list<struct<label, score>>, `windows`
    list<struct<start, end, labels>> (seconds); `embedding_size` adds a fixed-size list column of float32."""
    import pyarrow as pa

    label = pa.struct([("label", pa.string()), ("score", pa.float64())])
    window = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("labels", pa.list_(label))])
    fields = [("path", pa.string()), ("duration", pa.float64()), ("pooling", pa.string()),
              ("labels", pa.list_(label)), ("warning", pa.string()), ("windows", pa.list_(window)),
              ("error", pa.string())]
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
