"""What `calibrate`, `evaluate --annotations` and `segments` share: a checkpoint given as the first argument,
the engine's options, the thresholds a checkpoint carries, event options, and scoring a list of files.

They score audio with the same engine as `classify` (`InferenceOptions.load` -> `AudioClassifier`, windows,
batches), so thresholds learned by `calibrate` apply to the scores `classify` reports; a file that fails is
reported on stderr and left out, the others go on.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Sequence

THRESHOLDS_NAME = "thresholds.json"  # beside the checkpoint's config.json


def add_engine_arguments(parser: argparse.ArgumentParser, batch_size: int = 8) -> None:
    """The positional checkpoint and the engine's options (a subset of classify's)."""
    from ast_audio.inference.options import DTYPES

    parser.add_argument("checkpoint", metavar="MODEL", help="checkpoint directory (or Hub id)")
    parser.add_argument("--window", type=float, help="window length in seconds (default: the model's input)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half a window)")
    parser.add_argument("--batch-size", type=int, default=batch_size,
                        help=f"windows per model call (default {batch_size})")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=DTYPES, help="model precision (default float32)")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: every core)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hub; use its local cache only")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress and no closing summary")


def add_event_arguments(parser: argparse.ArgumentParser) -> None:
    """How window scores become events (`answers.events.EventOptions`), and the thresholds file."""
    parser.add_argument("--thresholds", metavar="FILE",
                        help="per-class thresholds (thresholds.json from calibrate; default: the checkpoint's "
                             "thresholds.json if it has one, else --threshold for every class)")
    parser.add_argument("--threshold", type=float, default=0.5,
                        help="an event must reach this score (default 0.5; a thresholds file's default wins)")
    parser.add_argument("--threshold-off", type=float,
                        help="an event lasts while the score stays at or above this (default 0.6 x the threshold)")
    parser.add_argument("--min-duration", type=float, default=0.0, help="drop events shorter than this (s)")
    parser.add_argument("--min-gap", type=float, default=0.0, help="merge events of a class closer than this (s)")


def checkpoint_thresholds(checkpoint: str, given: str | None):
    """The `Thresholds` of `given` (a path), else of the checkpoint directory's thresholds.json, else None.
    Raises `ConfigError` naming the file when it cannot be read."""
    from ast_audio.answers.thresholds import Thresholds

    if given:
        return Thresholds.read(given)
    path = os.path.join(checkpoint, THRESHOLDS_NAME)
    return Thresholds.read(path) if os.path.isfile(path) else None


def event_options(args: argparse.Namespace, labels: Sequence[str], thresholds=None,
                  model_labels: Sequence[str] | None = None):
    """The `EventOptions` of the command line for `labels`, with the thresholds file's per-class thresholds
    and default (its labels not among `model_labels`, default `labels`, are named on stderr)."""
    from ast_audio.answers.events import EventOptions

    threshold = thresholds.default if thresholds is not None else args.threshold
    off = args.threshold_off if args.threshold_off is not None else 0.6 * threshold
    own = thresholds.for_labels(labels) if thresholds is not None else {}
    unknown = thresholds.unknown_labels(model_labels or labels) if thresholds is not None else []
    if unknown:
        print(f"ast-audio: warning: the thresholds name {len(unknown)} labels the model lacks (e.g. "
              f"{', '.join(unknown[:3])}): ignored", file=sys.stderr)
    return EventOptions(threshold=threshold, threshold_off=min(off, threshold), min_duration=args.min_duration,
                        min_gap=args.min_gap, class_thresholds=own)


def load_engine(args: argparse.Namespace):
    """The `AudioClassifier` of the command line's options (the checkpoint is the first argument)."""
    from ast_audio.inference.options import InferenceOptions

    return InferenceOptions.from_args(args, model=args.checkpoint).load()


def score_files(args: argparse.Namespace, command: str, classifier, files: Sequence[str]) -> Iterator:
    """The `ClipResult` of each file that scores, in order; failures reported on stderr (one line each) and
    counted in `args.failed` (a list of the failed paths)."""
    from ast_audio.commands._common import Progress

    progress = Progress(args, command, len(files))
    args.failed = []
    try:
        for result in classifier.iter_classify(list(files), progress=progress):
            progress.file_done(result)
            if not result.ok:
                args.failed.append(result.source)
                print(f"ast-audio {command}: {result.error}", file=sys.stderr)
                continue
            if result.warning:
                print(f"ast-audio {command}: {result.source}: warning: {result.warning}", file=sys.stderr)
            yield result
    finally:
        progress.close()
    if args.failed:
        print(f"ast-audio {command}: {len(args.failed)} of {len(files)} files failed (left out)", file=sys.stderr)


def file_events(result, options) -> list:
    """The events of one scored file (`answers.events.events_from_windows` over its window scores)."""
    from ast_audio.answers.events import events_from_windows

    return events_from_windows(result.windows, result.window_scores, result.labels, options)


def format_figure(value: float | None) -> str:
    """A figure for a table: 3 decimals, "-" where undefined."""
    import math

    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"
