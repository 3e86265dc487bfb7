"""`ast-audio segments`: the detections cut into short clips to listen to, and a review CSV to mark them."""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys

HELP = "cut detected events into WAV clips to listen to, with a review.csv to mark right or wrong"
DESCRIPTION = (
    "Score AUDIO with MODEL (the engine of classify), detect events (thresholds from --thresholds, the "
    "checkpoint's thresholds.json, or --threshold), and cut each detection (or a --sample of them) into a WAV "
    "clip in --output-dir: the source's own samples at its rate, [start - padding, end + padding] clipped to "
    "the file (less padding at a file edge), named FILE_START-ENDs_LABEL_SCORE.wav. review.csv lists them "
    "(file, start, end, label, score, clip, verdict): fill verdict with right or wrong, then give the CSV to "
    "calibrate (thresholds from the verdicts) or evaluate --review (precision per class). Exit code 0: done; "
    "3: some files failed (reported); 1: an error or nothing scored; 2: a bad argument."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ast_audio.commands._answers import add_selection_arguments
    from ast_audio.commands._detect import add_engine_arguments, add_event_arguments

    add_engine_arguments(parser)
    parser.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files, folders or glob patterns")
    parser.add_argument("--output-dir", "-o", required=True, help="folder for the clips and review.csv")
    parser.add_argument("--padding", type=float, default=0.5, help="seconds of audio either side (default 0.5)")
    parser.add_argument("--sample", type=int, metavar="N", help="cut only N detections, drawn at random (seeded)")
    parser.add_argument("--stratify", choices=("score",),
                        help="draw the sample evenly over labels and score bins (with --sample)")
    parser.add_argument("--strata", type=int, default=5, help="score bins per label with --stratify (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample (default 0)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a review.csv in --output-dir that already holds verdicts (else refused)")
    add_event_arguments(parser)
    add_selection_arguments(parser)  # classify's, applied by the engine before events are found


CLIP_NAME_MAX_BYTES = 240  # under the usual 255-byte name limit, leaving room for `_unique`'s "_2"


def clip_name(file: str, start: float, end: float, label: str, score: float) -> str:
    """e.g. 'rec01_12.340-14.000s_Dog_0.870.wav': the source's stem, the event's times, label and score;
    characters other than letters, digits, '.', '-' and '_' become '_'. A name over `CLIP_NAME_MAX_BYTES`
    (UTF-8) has its stem, then its label, shortened to fit, each followed by '~' and 8 hex digits of the
    SHA-1 of the whole text, so different long stems stay different."""
    def safe(text: str) -> str:
        return re.sub(r"[^\w.\-]+", "_", text).strip("_") or "_"

    def shortened(text: str, room: int) -> str:
        digest = hashlib.sha1(text.encode()).hexdigest()[:8]
        return text.encode()[: max(1, room - 9)].decode(errors="ignore") + "~" + digest

    stem, label = safe(os.path.splitext(os.path.basename(file))[0]), safe(label)
    rest = f"_{start:.3f}-{end:.3f}s__{score:.3f}.wav"
    room = CLIP_NAME_MAX_BYTES - len(rest.encode())
    if len(stem.encode()) + len(label.encode()) > room:
        label = label if len(label.encode()) <= room // 2 else shortened(label, room // 2)
        if len(stem.encode()) + len(label.encode()) > room:
            stem = shortened(stem, room - len(label.encode()))
    return f"{stem}_{start:.3f}-{end:.3f}s_{label}_{score:.3f}.wav"


def _unique(name: str, taken: set[str]) -> str:
    stem, ext = os.path.splitext(name)
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{stem}_{number}{ext}", number + 1
    taken.add(candidate)
    return candidate


def _cut(args: argparse.Namespace, scored: list, chosen: list[int]) -> tuple[list, int]:
    """Cuts the chosen (file, event) pairs file by file; returns the review rows and the files that failed."""
    from ast_audio.answers.review import ReviewRow
    from ast_audio.audio.clips import ClipCutter
    from ast_audio.errors import ASTAudioError

    by_file: dict[str, list] = {}
    for index in chosen:
        file, event = scored[index]
        by_file.setdefault(file, []).append(event)
    rows, taken, failed = [], set(), 0
    for file, events in by_file.items():
        try:
            with ClipCutter(file) as cutter:
                for event in events:
                    name = _unique(clip_name(file, event.start, event.end, event.label, event.score), taken)
                    cutter.cut(event.start, event.end, args.padding, os.path.join(args.output_dir, name))
                    rows.append(ReviewRow(file, event.start, event.end, event.label, event.score, name))
        except ASTAudioError as error:
            failed += 1
            print(f"ast-audio segments: {error}", file=sys.stderr)
    return rows, failed


def check_review(path: str, overwrite: bool) -> None:
    """Refuses (`UsageError`) to replace a review CSV holding verdicts, unless `overwrite`: a person's work."""
    from ast_audio.answers.formats import AnnotationError
    from ast_audio.answers.review import read_review_csv
    from ast_audio.errors import UsageError

    if overwrite or not os.path.isfile(path):
        return
    try:
        reviewed = sum(row.verdict is not None for row in read_review_csv(path))
    except AnnotationError:
        reviewed = 1  # unreadable as a review: not ours to replace silently
    if reviewed:
        raise UsageError(f"{path}: holds {reviewed} verdicts; move it, or pass --overwrite to replace it")


def run(args: argparse.Namespace) -> int:
    from ast_audio.answers.review import review_csv, sample_events
    from ast_audio.commands._answers import check_answers
    from ast_audio.commands._common import exit_code, input_listing
    from ast_audio.commands._detect import event_options, file_events, load_engine, score_files
    from ast_audio.errors import UsageError
    from ast_audio.io_utils import atomic_write_text
    from ast_audio.jobs.output import check_output_folder

    if args.padding < 0:
        raise UsageError(f"--padding must be >= 0 seconds, got {args.padding:g}")
    if args.sample is not None and args.sample < 1:
        raise UsageError(f"--sample must be >= 1, got {args.sample}")
    if args.stratify and args.sample is None:
        raise UsageError("--stratify needs --sample N")
    check_answers(argparse.Namespace(**{**vars(args), "format": None, "model": args.checkpoint}), ())  # exit 2
    check_output_folder(args.output_dir)
    check_review(os.path.join(args.output_dir, "review.csv"), args.overwrite)
    listing = input_listing(args)
    classifier = load_engine(args)
    options = event_options(args, classifier.labels)
    scored = [(result.source, event) for result in score_files(args, "segments", classifier, listing.files)
              for event in file_events(result, options)]
    chosen = sample_events(scored, args.sample, stratify=args.stratify, strata=args.strata, seed=args.seed)
    os.makedirs(args.output_dir, exist_ok=True)
    rows, cut_failed = _cut(args, scored, chosen)
    review = os.path.join(args.output_dir, "review.csv")
    atomic_write_text(review, review_csv(rows))
    if not args.quiet:
        print(f"ast-audio segments: {len(rows)} clips of {len(scored)} detections in {args.output_dir}; "
              f"mark the verdicts in {review}", file=sys.stderr)
    total = len(listing.files) + len(listing.problems)
    for path, reason in listing.problems:
        print(f"ast-audio segments: {path}: {reason}", file=sys.stderr)
    return exit_code(total, len(args.failed) + len(listing.problems) + cut_failed)
