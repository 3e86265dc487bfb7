"""What `calibrate`, `evaluate --annotations` and `segments` share: a checkpoint given as the first argument,
the engine's options, the thresholds a checkpoint carries, event options, and scoring a list of files.

They score audio with the same engine as `classify` (`InferenceOptions.load` -> `AudioClassifier`, windows,
batches), so thresholds learned by `calibrate` apply to the scores `classify` reports; a file that fails is
reported on stderr and left out, the others go on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence


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


def add_event_arguments(parser) -> None:
    """How window scores become events (`answers.events.EventOptions`), and the thresholds file: the options of
    classify --events, read by the same rule (`event_options`)."""
    parser.add_argument("--thresholds", metavar="FILE",
                        help="per-class thresholds (thresholds.json from calibrate; default: the checkpoint's "
                             "thresholds.json if it has one, else --threshold for every class)")
    parser.add_argument("--threshold", type=float, metavar="SCORE",
                        help="an event must reach this score (default 0.5; a thresholds file's default replaces it)")
    parser.add_argument("--threshold-off", type=float, metavar="SCORE",
                        help="an event lasts while the score stays at or above this (default 0.6 x the threshold)")
    parser.add_argument("--min-duration", type=float, metavar="SECONDS", help="drop events shorter than this")
    parser.add_argument("--min-gap", type=float, metavar="SECONDS", help="merge events of a class closer than this")


def event_options(args: argparse.Namespace, model_labels: Sequence[str]):
    """The `EventOptions` of the command line by classify's rule (`AnswerOptions.from_args`: --thresholds FILE,
    else the checkpoint folder's thresholds.json, whose default replaces --threshold; --threshold-off 0.6 x
    the threshold unless given). Thresholds of labels the model lacks are named on stderr (and ignored).
    Raises `ConfigError` for a bad value or an unreadable thresholds file, naming it."""
    from ast_audio.answers.options import AnswerOptions

    given = argparse.Namespace(events=True, model=args.checkpoint, thresholds=args.thresholds,
                               threshold=args.threshold, threshold_off=args.threshold_off,
                               min_duration=args.min_duration, min_gap=args.min_gap)
    options = AnswerOptions.from_args(given).events
    unknown = sorted(set(dict(options.class_thresholds)) - set(model_labels))
    if unknown:
        print(f"ast-audio: warning: the thresholds name {len(unknown)} labels the model lacks (e.g. "
              f"{', '.join(unknown[:3])}): ignored", file=sys.stderr)
    return options


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
