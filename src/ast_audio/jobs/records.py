"""The record of one input in every output form: the one owner of each row the local engine, Ray and the
service write.

- `clip_json`: the JSON / JSON lines record (`ClipResult.to_dict`: path, duration, pooling, labels
  [{label, score}], warning, windows [{start, end, labels, decisions}], events [{label, start, end, score,
  mean}] when events were asked for, decisions [{label, score, threshold}] when decisions were; or path and
  error), the service's /v1/classify answer;
- `clip_record`: the same as a table row with every column of `COLUMNS` (`schema`: its typed Arrow form, for
  Parquet with pyarrow, pandas, DuckDB; `json_record` back to the JSON form);
- `embedding_record`: the embed index line (`ast-audio embed`'s index.jsonl, the service's /v1/embed);
- `csv_rows`: the CSV rows (`CSV_COLUMNS`: a row per label of the clip and of each window, per event, and per
  decision of the clip and of each window);
- `error_record` / `unreadable`: an input that failed, and a place a listing could not read.
"""

from __future__ import annotations

import os
from typing import Any

from ast_audio.inference.results import ClipResult


# The columns of a row, in the order of `ClipResult.to_dict`'s keys (so a row less its nulls is that record).
COLUMNS = ("path", "duration", "pooling", "labels", "warning", "windows", "events", "decisions", "error")


def clip_record(result: ClipResult, top_k: int = 5, timeline: bool = True, embeddings: bool = False) -> dict[str, Any]:
    """One input's row: the record `ClipResult.to_dict` gives (the local engine's JSON), with every column of
    `COLUMNS` present (None where the record has no such key), and with `embeddings` the clip's `embedding`."""
    record: dict[str, Any] = dict.fromkeys(COLUMNS)
    record.update(clip_json(result, top_k, timeline))
    if embeddings:
        record["embedding"] = [float(x) for x in result.embedding] if result.ok else None
    return record


def clip_json(result: ClipResult, top_k: int = 5, timeline: bool = True) -> dict[str, Any]:
    """The JSON record of one input (`ClipResult.to_dict`): `top_k` labels, and the window timeline with
    `timeline`; an input that failed gives `error_record`."""
    return result.to_dict(top_k, timeline)


CSV_COLUMNS = ("path", "level", "start", "end", "rank", "label", "score", "mean", "error", "warning")


def csv_rows(result: ClipResult, top_k: int = 5, timeline: bool = True) -> list[list[Any]]:
    """The CSV rows of one input (`CSV_COLUMNS`): level "clip" for its `top_k` labels (start 0, end its duration,
    rank from 1, scores with 6 decimals) and, with `timeline`, level "window" for each window's, only for inputs
    of more than one window (a single window's scores are the clip's); with events, level "event" for each
    event (its start and end in seconds at full precision, rank empty, score its peak, mean its mean score;
    the other levels leave mean empty), in order of start; with decisions, level
    "decision" for each label of the clip at or above its threshold (start 0, end its duration, rank from 1 by
    score, its pooled score) and, with `timeline` and more than one window, level "window decision" for each
    window's (that window's start, end and score); the thresholds are the job's (its thresholds.json). An
    input that failed is one clip row with its error."""
    if not result.ok:
        return [[result.source, "clip", "", "", "", "", "", "", result.error, ""]]
    warning = result.warning or ""
    rows = [[result.source, "clip", 0.0, float(result.duration), rank, item["label"], f"{item['score']:.6f}", "", "",
             warning] for rank, item in enumerate(result.top(top_k), 1)]
    if timeline and len(result.windows) > 1:
        rows += [[result.source, "window", window["start"], window["end"], rank, item["label"],
                  f"{item['score']:.6f}", "", "", warning]
                 for window in result.timeline(top_k) for rank, item in enumerate(window["labels"], 1)]
    rows += [[result.source, "event", float(event.start), float(event.end), "", event.label,
              f"{event.score:.6f}", f"{event.mean:.6f}", "", warning] for event in result.events or ()]
    rows += [[result.source, "decision", 0.0, float(result.duration), rank, decision.label,
              f"{decision.score:.6f}", "", "", warning] for rank, decision in enumerate(result.decisions or (), 1)]
    if timeline and len(result.windows) > 1:
        rows += [[result.source, "window decision", float(start), float(end), rank, decision.label,
                  f"{decision.score:.6f}", "", "", warning]
                 for (start, end), decided in zip(result.windows, result.window_decisions or ())
                 for rank, decision in enumerate(decided, 1)]
    return rows


def error_record(source: str, error: str) -> dict[str, Any]:
    """The record of input `source` that failed with the one-line `error`: {"path", "error"}."""
    return {"path": source, "error": error}


def unreadable(path: str, reason: str) -> ClipResult:
    """The result of a place an input listing could not read (a missing file, a folder without permission),
    as every job reports it: an error naming the path and the reason."""
    from ast_audio.inference.prepare import failed  # (imports torch: not for an argument parser's FORMATS)

    return failed(path, f"{path}: {reason}")


def embedding_record(result: ClipResult, embedding: Any, window_embeddings: Any = None) -> dict[str, Any]:
    """The embed record of one input: path, embedding, duration (s), windows ([start, end] s), warning when
    there is one, and window_embeddings when given; an input that failed gives `error_record`.

    `embedding` / `window_embeddings` are what the record holds for them: the .npy file names
    (`ast-audio embed`'s index.jsonl) or the vectors as lists (the service's /v1/embed).
    """
    if not result.ok:
        return error_record(result.source, result.error)
    record: dict[str, Any] = {"path": result.source, "embedding": embedding, "duration": float(result.duration),
                              "windows": [[float(start), float(end)] for start, end in result.windows]}
    if result.warning:
        record["warning"] = result.warning
    if window_embeddings is not None:
        record["window_embeddings"] = window_embeddings
    return record


def json_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row back in the JSON form of `ClipResult.to_dict` (its null columns left out, and the windows' null
    decisions: a table's windows all have the field)."""
    record = {key: value for key, value in row.items() if value is not None}
    if record.get("windows"):
        record["windows"] = [{key: value for key, value in window.items() if key != "decisions" or value is not None}
                             for window in record["windows"]]
    return record


def schema(embedding_size: int | None = None):
    """The rows' Arrow schema, the typed form of the JSON record: `labels` list<struct<label, score>>, `windows`
    list<struct<start, end, labels, decisions>> (seconds), `events` list<struct<label, start, end, score, mean>>
    (seconds; null when events were not asked for), `decisions` list<struct<label, score, threshold>> (null
    when decisions were not asked for; in windows too); `embedding_size` adds a fixed-size list column of float32."""
    import pyarrow as pa

    label = pa.struct([("label", pa.string()), ("score", pa.float64())])
    decision = pa.struct([("label", pa.string()), ("score", pa.float64()), ("threshold", pa.float64())])
    window = pa.struct([("start", pa.float64()), ("end", pa.float64()), ("labels", pa.list_(label)),
                        ("decisions", pa.list_(decision))])
    event = pa.struct([("label", pa.string()), ("start", pa.float64()), ("end", pa.float64()),
                       ("score", pa.float64()), ("mean", pa.float64())])
    fields = [("path", pa.string()), ("duration", pa.float64()), ("pooling", pa.string()),
              ("labels", pa.list_(label)), ("warning", pa.string()), ("windows", pa.list_(window)),
              ("events", pa.list_(event)), ("decisions", pa.list_(decision)), ("error", pa.string())]
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
