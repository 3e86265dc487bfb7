"""Writing classification results as a table, JSON, JSON lines or CSV, streaming and atomically."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
from collections.abc import Iterator
from typing import IO, Any

from ast_audio.io_utils import atomic_path

from ast_audio.inference.results import ClipResult

FORMATS = ("table", "json", "jsonl", "csv")
CSV_COLUMNS = ("path", "level", "start", "end", "rank", "label", "score", "error")


class ResultWriter:
    """Base: `write` each result as it comes, `close` at the end."""

    def __init__(self, stream: IO[str], top_k: int, timeline: bool) -> None:
        self.stream, self.top_k, self.timeline = stream, top_k, timeline

    def write(self, result: ClipResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stream.flush()


class JsonlWriter(ResultWriter):
    """One JSON object per line, flushed at once: nothing written is lost if the run dies later."""

    def write(self, result: ClipResult) -> None:
        self.stream.write(json.dumps(result.to_dict(self.top_k, self.timeline), ensure_ascii=False) + "\n")
        self.stream.flush()


class JsonWriter(ResultWriter):
    """A JSON array of the per-input objects."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.items: list[dict[str, Any]] = []

    def write(self, result: ClipResult) -> None:
        self.items.append(result.to_dict(self.top_k, self.timeline))

    def close(self) -> None:
        json.dump(self.items, self.stream, indent=2, ensure_ascii=False)
        self.stream.write("\n")
        super().close()


class CsvWriter(ResultWriter):
    """Rows of (path, level clip|window, start, end, rank, label, score, error), flushed per input."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.writer = csv.writer(self.stream)
        self.writer.writerow(CSV_COLUMNS)

    def write(self, result: ClipResult) -> None:
        if not result.ok:
            self.writer.writerow([result.source, "clip", "", "", "", "", "", result.error])
        else:
            for rank, item in enumerate(result.top(self.top_k), 1):
                self.writer.writerow([result.source, "clip", 0.0, round(result.duration, 3), rank, item["label"],
                                      f"{item['score']:.6f}", ""])
            if self.timeline:
                for window in result.timeline(self.top_k):
                    for rank, item in enumerate(window["labels"], 1):
                        self.writer.writerow([result.source, "window", window["start"], window["end"], rank,
                                              item["label"], f"{item['score']:.6f}", ""])
        self.stream.flush()


class TableWriter(ResultWriter):
    """Human-readable: the clip's top labels, then (for multi-window inputs) the timeline."""

    def write(self, result: ClipResult) -> None:
        out = self.stream
        if not result.ok:
            out.write(f"{result.source}\n  error: {result.error}\n\n")
            return
        out.write(f"{result.source}  ({result.duration:.2f} s, {len(result.windows)} window"
                  f"{'s' if len(result.windows) != 1 else ''}, {result.pooling} pooling)\n")
        for item in result.top(self.top_k):
            out.write(f"  {item['score']:7.4f}  {item['label']}\n")
        if self.timeline and len(result.windows) > 1:
            for window in result.timeline(min(self.top_k, 3)):
                labels = ", ".join(f"{i['label']} {i['score']:.2f}" for i in window["labels"])
                out.write(f"    {window['start']:8.2f}-{window['end']:8.2f} s  {labels}\n")
        out.write("\n")
        out.flush()


WRITERS = {"table": TableWriter, "json": JsonWriter, "jsonl": JsonlWriter, "csv": CsvWriter}


@contextlib.contextmanager
def open_output(path: str | None) -> Iterator[IO[str]]:
    """stdout, or a file written as `path.partial` (flushed as results come) and renamed to `path` on success.

    After a crash the `.partial` file holds every result written so far; `path` itself is only ever replaced
    whole.
    """
    if path is None or path == "-":
        yield sys.stdout
        return
    with atomic_path(path, partial=f"{path}.partial") as partial, open(partial, "w", encoding="utf-8", newline="") as handle:
        yield handle
