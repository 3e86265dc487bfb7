"""Rendering results as a table, JSON, JSON lines or CSV: a header, one chunk of text per input, a footer.

Renderers are pure (text in, nothing written), so a job can stream chunks to a file, keep them for a resume,
and put a resumed output back together exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re

from ast_audio.inference.results import ClipResult
from ast_audio.io_utils import publish
from ast_audio.jobs.records import CSV_COLUMNS, clip_json, csv_rows

FORMATS = ("table", "json", "jsonl", "csv", "parquet")
# A file name that is not valid UTF-8 reaches Python as a str holding lone surrogates (PEP 383).
_SURROGATES = re.compile("[\ud800-\udfff]")


def json_text(value: object) -> str:
    """`value` as JSON on one line, non-ASCII text kept as it is, and the bytes of a name that are not UTF-8
    written as \\udcXX escapes: valid JSON (writable as UTF-8) that reads back to the same str, which
    `os.fsencode` turns back into the file's name."""
    text = json.dumps(value, ensure_ascii=False)
    return _SURROGATES.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def readable(text: str) -> str:
    """`text` with the bytes of a name that are not UTF-8 shown as the replacement character U+FFFD (for
    tables, CSV and Parquet, whose strings are UTF-8)."""
    return _SURROGATES.sub("\ufffd", text)


class Renderer:
    """Base: `header`, then `chunk(result)` per input joined by `separator`, then `footer`."""

    separator = ""

    def __init__(self, top_k: int, timeline: bool) -> None:
        self.top_k, self.timeline = top_k, timeline

    def header(self) -> str:
        return ""

    def chunk(self, result: ClipResult) -> str:
        raise NotImplementedError

    def footer(self) -> str:
        return ""

    def finish(self, partial: str, path: str) -> None:
        """Turn the finished partial file into the output at `path` (by default: rename it there)."""
        publish(partial, path)


class JsonlRenderer(Renderer):
    """One JSON object per line."""

    def chunk(self, result: ClipResult) -> str:
        return json_text(clip_json(result, self.top_k, self.timeline)) + "\n"


class JsonRenderer(Renderer):
    """A JSON array of the per-input objects, one per line."""

    separator = ",\n"

    def header(self) -> str:
        return "[\n"

    def chunk(self, result: ClipResult) -> str:
        return json_text(clip_json(result, self.top_k, self.timeline))

    def footer(self) -> str:
        return "\n]\n"


class CsvRenderer(Renderer):
    """The rows of `jobs.records.csv_rows` under a header of `CSV_COLUMNS`."""

    def header(self) -> str:
        return self._rows([CSV_COLUMNS])

    def chunk(self, result: ClipResult) -> str:
        return self._rows(csv_rows(result, self.top_k, self.timeline))

    @staticmethod
    def _rows(rows: list) -> str:
        buffer = io.StringIO()
        csv.writer(buffer).writerows(rows)
        return readable(buffer.getvalue())


class TableRenderer(Renderer):
    """Human-readable: the clip's top labels, then (for multi-window inputs) the timeline."""

    def chunk(self, result: ClipResult) -> str:
        return readable(self._text(result))

    def _text(self, result: ClipResult) -> str:
        if not result.ok:
            return f"{result.source}\n  error: {result.error}\n\n"
        count = len(result.windows)
        lines = [f"{result.source}  ({result.duration:.2f} s, {count} window{'s' if count != 1 else ''}, "
                 f"{result.pooling} pooling)"]
        if result.warning:
            lines.append(f"  warning: {result.warning}")
        lines += [f"  {item['score']:7.4f}  {item['label']}" for item in result.top(self.top_k)]
        if self.timeline and count > 1:
            for window in result.timeline(min(self.top_k, 3)):
                labels = ", ".join(f"{i['label']} {i['score']:.2f}" for i in window["labels"])
                lines.append(f"    {window['start']:8.2f}-{window['end']:8.2f} s  {labels}")
        return "\n".join(lines) + "\n\n"


class ParquetRenderer(Renderer):
    """One row per input with the schema of `ast_audio.jobs.records` (the Ray engine's too). The partial
    file holds the rows as JSON lines; the Parquet file is written from them at the end."""

    def __init__(self, top_k: int, timeline: bool, embeddings: bool = False) -> None:
        super().__init__(top_k, timeline)
        self.embeddings = embeddings

    def chunk(self, result: ClipResult) -> str:
        from ast_audio.jobs.records import clip_record

        record = clip_record(result, self.top_k, self.timeline, self.embeddings)
        return json_text(record) + "\n"

    def finish(self, partial: str, path: str) -> None:
        from ast_audio.jobs.records import write_parquet

        with open(partial, encoding="utf-8") as handle:
            records = [json.loads(line) for line in handle if line.strip()]
        # Parquet strings are UTF-8: a name's bytes that are not are shown as U+FFFD there
        records = [{key: readable(value) if isinstance(value, str) else value for key, value in record.items()}
                   for record in records]
        write_parquet(records, path, self.embeddings)
        os.unlink(partial)


RENDERERS: dict[str, type[Renderer]] = {
    "table": TableRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "csv": CsvRenderer,
    "parquet": ParquetRenderer,
}


def renderer(fmt: str, top_k: int = 5, timeline: bool = True) -> Renderer:
    """The renderer of format `fmt` (one of FORMATS)."""
    return RENDERERS[fmt](top_k, timeline)
