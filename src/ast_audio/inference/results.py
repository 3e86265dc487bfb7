"""Results of classifying audio: a clip summary and a timeline of windows, convertible to plain dicts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ast_audio.errors import ConfigError

POOLINGS = ("mean", "max")


def pool_scores(window_scores: np.ndarray, pooling: str) -> np.ndarray:
    """Clip scores from per-window scores (windows, labels): their mean or max over windows."""
    if pooling == "mean":
        return window_scores.mean(axis=0)
    if pooling == "max":
        return window_scores.max(axis=0)
    raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


def top_labels(scores: np.ndarray, labels: list[str], k: int) -> list[dict[str, Any]]:
    """The `k` best labels as [{"label", "score"}], best first (the public pipeline's output shape)."""
    k = min(k, len(scores)) if k and k > 0 else len(scores)
    order = np.argsort(-scores, kind="stable")[:k]
    return [{"label": labels[i], "score": float(scores[i])} for i in order]


@dataclass
class ClipResult:
    """Everything known about one input: per-window scores (and embeddings), pooled into a clip summary."""

    source: str
    duration: float = 0.0
    windows: list[tuple[float, float]] = field(default_factory=list)
    window_scores: np.ndarray | None = None  # (windows, labels)
    window_embeddings: np.ndarray | None = None  # (windows, hidden)
    labels: list[str] = field(default_factory=list)
    pooling: str = "mean"
    error: str | None = None
    warning: str | None = None  # e.g. "decoded 42.1 s of 60.0 s declared" for a partial download
    events: list[Any] | None = None  # `answers.events.Event`s, sorted by start; None when events are off
    extra_windows: int = 0  # windows the finer pass scored beside `windows` (`inference.finer`)
    # `answers.decisions.Decision`s, highest score first, of the clip (its pooled scores) and of each window;
    # None when decisions are off
    decisions: list[Any] | None = None
    window_decisions: list[list[Any]] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def scores(self) -> np.ndarray:
        """Clip scores: the pooling of the window scores."""
        return pool_scores(self.window_scores, self.pooling)

    @property
    def embedding(self) -> np.ndarray:
        """Clip embedding: the mean of the window embeddings."""
        return self.window_embeddings.mean(axis=0)

    def top(self, k: int = 5) -> list[dict[str, Any]]:
        return top_labels(self.scores, self.labels, k)

    def timeline(self, k: int = 5) -> list[dict[str, Any]]:
        """Per window: start, end (s), its `k` top labels, and its `decisions` when they were asked for."""
        windows = [
            {"start": float(start), "end": float(end), "labels": top_labels(scores, self.labels, k)}
            for (start, end), scores in zip(self.windows, self.window_scores)
        ]
        for window, decided in zip(windows, self.window_decisions or ()):
            window["decisions"] = [decision.to_dict() for decision in decided]
        return windows

    def to_dict(self, top_k: int = 5, timeline: bool = True) -> dict[str, Any]:
        """JSON-ready summary: path, duration, top labels, pooling, (optionally) the window timeline, and the
        events ({label, start, end, score, mean}, seconds) and the decisions ({label, score, threshold}, highest
        score first; per window too) when they were asked for: the
        record of `ast_audio.jobs.records.clip_json` (every front end writes it through there)."""
        if not self.ok:
            return {"path": self.source, "error": self.error}
        out: dict[str, Any] = {
            "path": self.source, "duration": float(self.duration), "pooling": self.pooling,
            "labels": self.top(top_k),
        }
        if self.warning:
            out["warning"] = self.warning
        if timeline:
            out["windows"] = self.timeline(top_k)
        if self.events is not None:
            out["events"] = [event.to_dict() for event in self.events]
        if self.decisions is not None:
            out["decisions"] = [decision.to_dict() for decision in self.decisions]
        return out
