"""Detections a person listens to and marks right or wrong: the review CSV, sampling, and what it teaches.

`ast-audio segments` cuts detected events into clips and writes `review.csv`, one row per clip, with the
columns `REVIEW_COLUMNS`: `file` (the source audio), `start` and `end` (the event, seconds in the source),
`label`, `score` (the event's peak score), `clip` (the clip's file name, relative to the CSV) and `verdict`,
left empty for the reviewer. A verdict is read case-insensitively: one of `RIGHT` ("right", "yes", "y",
"1", "true", "correct", "tp") or `WRONG` ("wrong", "no", "n", "0", "false", "incorrect", "fp"); an empty
verdict means "not reviewed" and the row is left out.

What a reviewed CSV is evidence of: each row is one detection at the score it had, judged. So it measures
**precision** (right / reviewed) per class and how it grows with the score (`review_precision`,
`ast-audio evaluate --review`), and teaches a threshold per class on the event scores (`review_thresholds`,
`ast-audio calibrate` on a review CSV): the verdicts are the targets of the events' peak scores, and
`thresholds.choose_class_threshold` picks the threshold of best F1 (or the target precision with the best
recall) among the reviewed detections. It cannot measure recall: sounds the model missed never became
detections. Recall here is therefore the share of the *right detections* a threshold keeps, and a learned
threshold is never below the score at which the detections were made. A sample drawn with
`--stratify score` over-represents rare scores, so its precision is of the sample, not of all detections
(the column `score` lets one reweight).

Sampling (`sample_events`): `n` of the detections at random (seeded), or with `stratify="score"` spread
evenly over strata, a stratum being one label and one of `strata` equal-count score bins of that label:
the strata take turns, each giving its next (seeded, random) event until `n` are drawn or all are taken.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from collections.abc import Iterable, Sequence

import numpy as np

from ast_audio.answers.events import Event
from ast_audio.answers.annotations import read_text, seconds_field
from ast_audio.answers.formats import AnnotationError
from ast_audio.answers.thresholds import (
    DEFAULT_MIN_POSITIVES, FEW_POSITIVES, ClassThreshold, Thresholds, choose_class_threshold, precision_recall_f1,
)
from ast_audio.errors import ConfigError

REVIEW_COLUMNS = ("file", "start", "end", "label", "score", "clip", "verdict")
RIGHT = ("right", "yes", "y", "1", "true", "correct", "tp")
WRONG = ("wrong", "no", "n", "0", "false", "incorrect", "fp")
STRATIFY = ("score",)
DEFAULT_STRATA = 5


@dataclasses.dataclass(frozen=True)
class ReviewRow:
    """One detection to review: `file`, `start`/`end` (seconds in the file), `label`, `score` (the event's
    peak), `clip` (the clip file, relative to the CSV), `verdict` (True right, False wrong, None not reviewed)."""

    file: str
    start: float
    end: float
    label: str
    score: float
    clip: str = ""
    verdict: bool | None = None


def review_csv(rows: Iterable[ReviewRow]) -> str:
    """The text of `review.csv`: a header of `REVIEW_COLUMNS`, then one row each (times to the microsecond,
    scores to 6 decimals, the verdict empty unless set), CSV-quoted where needed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REVIEW_COLUMNS)
    for row in rows:
        verdict = "" if row.verdict is None else ("right" if row.verdict else "wrong")
        writer.writerow([row.file, f"{row.start:.6f}", f"{row.end:.6f}", row.label, f"{row.score:.6f}", row.clip,
                         verdict])
    return buffer.getvalue()


def is_review_header(line: str) -> bool:
    """Whether a CSV's first line is the review header (the columns of `REVIEW_COLUMNS`, any order, extra
    columns allowed)."""
    fields = {field.strip().strip('"').lower() for field in line.split(",")}
    return set(REVIEW_COLUMNS) <= fields


def is_review_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a readable file whose first non-blank line is the review header."""
    try:
        with open(path, encoding="utf-8-sig") as handle:
            first = next((line for line in handle if line.strip()), "")
    except (OSError, UnicodeDecodeError):
        return False
    return is_review_header(first)


def _verdict(value: str, where: str) -> bool | None:
    word = value.strip().lower()
    if not word:
        return None
    if word in RIGHT:
        return True
    if word in WRONG:
        return False
    raise AnnotationError(f"{where}: verdict {value.strip()!r} must be one of {', '.join(RIGHT)} or {', '.join(WRONG)}"
                          " (or empty: not reviewed)")


def _row(fields: dict[str, str], where: str) -> ReviewRow:
    start, end = seconds_field(fields["start"], "start", where), seconds_field(fields["end"], "end", where)
    if end < start:
        raise AnnotationError(f"{where}: end {end:g} is before start {start:g}")
    try:
        score = float(fields["score"])
    except ValueError:
        score = math.nan
    if not math.isfinite(score):
        raise AnnotationError(f"{where}: score {fields['score']!r} is not a number")
    if not fields["label"].strip() or not fields["file"].strip():
        raise AnnotationError(f"{where}: the file and the label must not be empty")
    return ReviewRow(fields["file"].strip(), start, end, fields["label"].strip(), score, fields["clip"].strip(),
                     _verdict(fields["verdict"], where))


def read_review_csv(path: str | os.PathLike) -> list[ReviewRow]:
    """The rows of a review CSV (reviewed or not), in file order. Raises `AnnotationError` naming the file
    (and line): unreadable, not the review header, a time or score that is not a number, an unknown verdict."""
    source = os.fspath(path)
    text = read_text(path, "the review CSV")
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    rows = []
    for fields in reader:
        if not any(field.strip() for field in fields):
            continue
        where = f"{source} line {reader.line_num}"
        if header is None:
            header = [field.strip().lower() for field in fields]
            if not set(REVIEW_COLUMNS) <= set(header):
                raise AnnotationError(f"{where}: expected the review columns {', '.join(REVIEW_COLUMNS)}, got "
                                      f"{', '.join(fields)}")
            continue
        if len(fields) > len(header):
            raise AnnotationError(f"{where}: {len(fields)} fields where the header has {len(header)} columns")
        rows.append(_row(dict(zip(header, fields + [""] * (len(header) - len(fields)))), where))
    if header is None:
        raise AnnotationError(f"{source}: empty, expected the review columns {', '.join(REVIEW_COLUMNS)}")
    return rows


def sample_events(
    scored: Sequence[tuple[str, Event]], n: int | None, *, stratify: str | None = None,
    strata: int = DEFAULT_STRATA, seed: int = 0,
) -> list[int]:
    """The indices into `scored` ((file, event) pairs) of the sample (module docstring), sorted; all of them
    when `n` is None or at least len(scored). Raises `ConfigError` for n < 1, strata < 1 or an unknown
    `stratify`."""
    if stratify is not None and stratify not in STRATIFY:
        raise ConfigError(f"stratify must be one of {', '.join(STRATIFY)}, got {stratify!r}")
    if n is not None and n < 1:
        raise ConfigError(f"the sample size must be >= 1, got {n}")
    if strata < 1:
        raise ConfigError(f"strata must be >= 1, got {strata}")
    if n is None or n >= len(scored):
        return list(range(len(scored)))
    rng = np.random.default_rng(seed)
    if stratify is None:
        return sorted(int(i) for i in rng.choice(len(scored), size=n, replace=False))
    groups: list[list[int]] = []
    for label in sorted({event.label for _, event in scored}):
        members = [i for i, (_, event) in enumerate(scored) if event.label == label]
        members.sort(key=lambda i: (scored[i][1].score or 0.0, i))
        for part in np.array_split(np.array(members), min(strata, len(members))):
            groups.append([int(i) for i in rng.permutation(part)])
    chosen: list[int] = []
    while len(chosen) < n:
        for group in groups:
            if group and len(chosen) < n:
                chosen.append(group.pop())
    return sorted(chosen)


def review_precision(rows: Iterable[ReviewRow]) -> dict[str, dict[str, float | int | None]]:
    """{label: {reviewed, right, precision}} over the reviewed rows, and "" for all pooled (precision None
    where nothing of a label was reviewed)."""
    counts: dict[str, list[int]] = {}
    for row in rows:
        if row.verdict is not None:
            for key in (row.label, ""):
                pair = counts.setdefault(key, [0, 0])
                pair[0] += 1
                pair[1] += int(row.verdict)
    return {key: {"reviewed": n, "right": right, "precision": right / n if n else None}
            for key, (n, right) in sorted(counts.items())}


def review_thresholds(
    rows: Iterable[ReviewRow], *, target_precision: float | None = None, min_positives: int = DEFAULT_MIN_POSITIVES,
    default: float = 0.5, source: str = "",
) -> Thresholds:
    """A threshold per label from reviewed detections (module docstring): the verdicts are the targets of
    the events' peak scores. Labels with fewer than `min_positives` right detections keep `default`. Raises
    `ConfigError` when no row has a verdict."""
    by_label: dict[str, list[ReviewRow]] = {}
    for row in rows:
        if row.verdict is not None:
            by_label.setdefault(row.label, []).append(row)
    if not by_label:
        raise ConfigError(f"{source or 'review CSV'}: no row has a verdict (right or wrong): nothing to learn from")
    own, classes = {}, {}
    for label, items in sorted(by_label.items()):
        scores = np.array([row.score for row in items], dtype=np.float64)
        targets = np.array([bool(row.verdict) for row in items])
        positives = int(targets.sum())
        if positives < min_positives:
            figures = precision_recall_f1((scores >= default)[:, None], targets[:, None])
            classes[label] = ClassThreshold(default, positives, len(items) - positives,
                                            *(float(v[0]) for v in figures), FEW_POSITIVES)
            continue
        classes[label] = choose_class_threshold(scores, targets, target_precision)
        own[label] = classes[label].threshold
    method = "f1" if target_precision is None else "precision"
    return Thresholds(own, float(default), source, method, target_precision, min_positives, classes)
