"""The label file of a release: class_labels_indices.csv (index, mid, display_name), the model's output names.

A leaf module: checkpoints/ (the release converter) and training/ (the label space) both read it here.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from ast_audio.errors import ConfigError


@dataclass
class ClassLabel:
    """One row of the release's class_labels_indices.csv."""

    index: int
    mid: str
    display_name: str


def read_class_labels(path: str | os.PathLike) -> list[ClassLabel]:
    """The rows of a class_labels_indices.csv (columns index, mid, display_name), in index order.

    Indices must run 0..n-1 without gaps: they are the model's output positions.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{path}: cannot read the class labels CSV ({exc})") from None
    if not rows or not {"index", "mid", "display_name"} <= set(rows[0]):
        raise ConfigError(f"{path}: expected a CSV with columns index, mid, display_name")
    try:
        labels = sorted((ClassLabel(int(r["index"]), r["mid"], r["display_name"]) for r in rows), key=lambda c: c.index)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: the index column must hold integers ({exc})") from None
    if [label.index for label in labels] != list(range(len(labels))):
        raise ConfigError(f"{path}: indices must run 0..{len(labels) - 1} without gaps or repeats")
    return labels
