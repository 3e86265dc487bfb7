"""`ast-audio calibrate`: a threshold per class learned from labelled audio, written as thresholds.json."""

from __future__ import annotations

import argparse
import os
import sys

HELP = "learn a threshold per class from labelled audio (or a reviewed review.csv) into thresholds.json"
DESCRIPTION = (
    "Score each clip of DATA with MODEL (the engine of classify: windows, their scores pooled into the clip score, "
    "--pooling) and choose, per class, the threshold of best F1, or with --precision P the one reaching precision P"
    " with the best recall. DATA: a folder with one sub-folder per class, a JSON manifest or a CSV "
    "(path,label[,label...]), as train reads them; or recordings with time-stamped annotations (calibrate MODEL "
    "AUDIO... --annotations FILES: each window scored, a window positive for a class when an annotated event covers"
    " --min-overlap of the shorter of the two; only the annotated classes); or a review.csv from ast-audio segments"
    " with verdicts filled in (then the verdicts are the targets of the detections' peak scores: no audio is "
    "scored, and only precision among the detections can be learned). Classes with fewer than --min-positives "
    "positives keep the global threshold (the best single threshold, or --default) and are listed. --calibration "
    "fits a map of scores to probabilities (Platt or isotonic) and reports the expected calibration error before "
    "and after (on the same clips, optimistic, unless --holdout: then thresholds and calibration are learned on the"
    " rest and measured on the held-out clips). Writes thresholds.json beside the checkpoint, or to --output; "
    "classify --events, segments and evaluate --annotations read it. Exit code 0: done; 1: an error; 2: a bad "
    "argument or an output that cannot be written."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ast_audio.answers.calibration import METHODS
    from ast_audio.commands._detect import add_engine_arguments
    from ast_audio.inference.results import POOLINGS

    add_engine_arguments(parser)
    parser.add_argument("data", nargs="+", metavar="DATA",
                        help="class folders, a JSON manifest, a CSV, or a reviewed review.csv; with --annotations: "
                             "the audio files, folders or globs they annotate")
    parser.add_argument("--annotations", nargs="+", metavar="FILE",
                        help="Raven / Audacity / CSV annotations of DATA's recordings (files or folders): learn from "
                             "their windows, each labelled by the annotated events it holds")
    parser.add_argument("--min-overlap", type=float, default=0.5,
                        help="with --annotations: a window is positive when an event covers this part of the shorter "
                             "of the two (default 0.5)")
    parser.add_argument("--labels-csv", help="class_labels_indices.csv (index, mid, display_name) for mids")
    parser.add_argument("--precision", type=float, metavar="P",
                        help="reach this precision with the best recall (default: the best F1)")
    parser.add_argument("--min-positives", type=int, default=5,
                        help="classes with fewer positives keep the global threshold (default 5)")
    parser.add_argument("--default", type=float,
                        help="the global threshold (default: the best single threshold on DATA; 0.5 for a review)")
    parser.add_argument("--calibration", choices=METHODS, help="also fit a calibration of scores to probabilities")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="window scores into a clip score (default mean, as classify)")
    parser.add_argument("--output", "-o", help="write thresholds.json here (default: in the checkpoint directory)")
    parser.add_argument("--holdout", type=float, metavar="FRACTION",
                        help="hold out this part of the clips (seeded, stratified by first label): thresholds and "
                             "calibration learned on the rest, their precision, recall, F1 and ECE reported on it")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --holdout split (default 0)")


def output_path(args: argparse.Namespace) -> str:
    """--output, else MODEL/thresholds.json when MODEL is a writable directory; raises `UsageError` otherwise."""
    from ast_audio.answers.options import THRESHOLDS_NAME
    from ast_audio.errors import UsageError
    from ast_audio.jobs.output import check_output_file

    path = args.output
    if path is None:
        if not (os.path.isdir(args.checkpoint) and os.access(args.checkpoint, os.W_OK)):
            raise UsageError(f"{args.checkpoint}: not a writable checkpoint directory; name the file with --output")
        path = os.path.join(args.checkpoint, THRESHOLDS_NAME)
    check_output_file(path, example=THRESHOLDS_NAME)
    return path


def labelled_scores(args: argparse.Namespace):
    """(scores, targets, labels): the clip scores (clips, classes) of DATA's clips that scored, their 0/1
    targets, and the model's labels."""
    import numpy as np

    from ast_audio.commands._detect import load_engine, score_files
    from ast_audio.training.data import LabelSpace, check_files, load_clips

    classifier = load_engine(args)
    names = list(classifier.labels)
    space = LabelSpace.from_csv(args.labels_csv) if args.labels_csv else LabelSpace.from_names(names)
    if space.names != names:
        print("ast-audio calibrate: warning: the labels CSV names differ from the checkpoint's labels", file=sys.stderr)
    clips, _ = load_clips(args.data, space)
    check_files(clips, args.data)
    targets_of = {}
    for clip in clips:
        row = targets_of.setdefault(clip.path, np.zeros(len(names), dtype=bool))
        row[clip.labels] = True
    scores, targets = [], []
    for result in score_files(args, "calibrate", classifier, list(targets_of)):
        scores.append(result.scores)
        targets.append(targets_of[result.source])
    if not scores:
        from ast_audio.errors import ConfigError

        raise ConfigError(f"{args.data}: no clip could be scored")
    return np.stack(scores), np.stack(targets), names


def annotated_window_scores(args: argparse.Namespace):
    """(scores, targets, labels) of the windows of DATA's annotated recordings (`answers.window_labels`):
    scores (windows, classes) of the annotated classes the model has, their 0/1 targets, those labels."""
    import numpy as np

    from ast_audio.answers.annotations import match_annotations
    from ast_audio.answers.window_labels import window_targets
    from ast_audio.audio.files import scan_inputs
    from ast_audio.commands._detect import load_engine, score_files
    from ast_audio.commands.evaluate_events import annotation_files
    from ast_audio.errors import ConfigError

    listing = scan_inputs(args.data)
    listing.require_some(args.data)
    annotations = match_annotations(annotation_files(args.annotations), listing.files)
    for line in annotations.unmatched:
        print(f"ast-audio calibrate: no audio file for {line}", file=sys.stderr)
    annotated = [path for path in listing.files if path in annotations.events]
    if not annotated:
        raise ConfigError("no audio file is named by the annotations: nothing to learn from")
    classifier = load_engine(args)
    named = {e.label for events in annotations.events.values() for e in events}
    labels = [label for label in classifier.labels if label in named]
    if not labels:
        raise ConfigError("no annotated label is among the model's labels: nothing to learn from")
    columns = [classifier.labels.index(label) for label in labels]
    scores, targets = [], []
    for result in score_files(args, "calibrate", classifier, annotated):
        scores.append(result.window_scores[:, columns])
        targets.append(window_targets(result.windows, annotations.events[result.source], labels, args.min_overlap))
    if not scores:
        raise ConfigError("no annotated audio file could be scored")
    print(f"ast-audio calibrate: {sum(len(s) for s in scores)} windows of {len(scores)} annotated files, "
          f"{len(labels)} classes", file=sys.stderr)
    return np.concatenate(scores), np.concatenate(targets), labels


def _table(thresholds, shown: list[str]) -> str:
    from ast_audio.commands._detect import format_figure

    width = max([len("class"), *(len(label) for label in shown)])
    lines = [f"{'class':<{width}}  threshold  precision  recall     f1  positives  status"]
    for label in shown:
        item = thresholds.classes[label]
        figures = f"{format_figure(item.precision):>9}  {format_figure(item.recall):>6}  {format_figure(item.f1):>5}"
        lines.append(f"{label:<{width}}  {item.threshold:9.4f}  {figures}  {item.positives:9d}  {item.status}")
    return "\n".join(lines)


def report(thresholds, notes: list[str]) -> str:
    """The table per class (classes with at least one positive), the global threshold, the classes that kept
    it and those short of the target precision, then `notes` (ECE, held-out figures)."""
    shown = [label for label, item in thresholds.classes.items() if item.positives > 0]
    lines = [_table(thresholds, shown), f"global threshold: {thresholds.default:.4f}"]
    few = [label for label in thresholds.few_positives if thresholds.classes[label].positives > 0]
    none = len(thresholds.few_positives) - len(few)
    if few or none:
        lines.append(f"{len(few) + none} classes with fewer than {thresholds.min_positives} positives keep the global "
                     f"threshold: {', '.join(few) or '-'}" + (f" (and {none} with none)" if none else ""))
    if thresholds.not_reached:
        lines.append(f"target precision {thresholds.target_precision:g} not reached by: "
                     f"{', '.join(thresholds.not_reached)} (their threshold of best precision kept)")
    return "\n".join([*lines, *notes])


def holdout_split(targets, fraction: float, seed: int):
    """(fit, held_out) index arrays: `fraction` of the clips of each first label (the clips without a label
    as one more group) held out, at least one of any group of two or more; seeded."""
    import numpy as np

    rng = np.random.default_rng(seed)
    groups = np.where(targets.any(axis=1), np.argmax(targets, axis=1), -1)
    held = []
    for group in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == group))
        count = int(round(fraction * len(members)))
        held.extend(members[: max(count, 1) if len(members) >= 2 else count])
    held = np.sort(np.array(held, dtype=np.int64))
    return np.setdiff1d(np.arange(len(targets)), held), held


def held_out_lines(thresholds, scores, targets, labels: list[str]) -> list[str]:
    """Precision, recall and F1 per class on held-out clips at the learned thresholds, and the mean F1 against
    the global threshold's."""
    import numpy as np

    from ast_audio.answers.thresholds import precision_recall_f1
    from ast_audio.commands._detect import format_figure as f

    precision, recall, f1 = precision_recall_f1(thresholds.decide(scores, labels), targets)
    *_, f1_global = precision_recall_f1(scores >= thresholds.default, targets)
    shown = [i for i in range(len(labels)) if targets[:, i].any()]
    width = max([len("class"), *(len(labels[i]) for i in shown)])
    lines = [f"held out ({len(scores)} clips):", f"{'class':<{width}}  precision  recall     f1  positives"]
    lines += [f"{labels[i]:<{width}}  {f(precision[i]):>9}  {f(recall[i]):>6}  {f(f1[i]):>5}  "
              f"{int(targets[:, i].sum()):9d}" for i in shown]
    if shown:
        lines.append(f"held-out mean F1: {np.mean(f1[shown]):.3f} with these thresholds, "
                     f"{np.mean(f1_global[shown]):.3f} with the global one")
    return lines


def learn(args: argparse.Namespace, scores, targets, labels: list[str], source: str):
    """(Thresholds, report notes) from labelled scores: with --holdout, learned on the rest and measured on
    the held-out part; with --calibration, the calibration and its ECE before and after."""
    import dataclasses

    import numpy as np

    from ast_audio.answers.calibration import expected_calibration_error, fit_calibration
    from ast_audio.answers.thresholds import choose_thresholds

    fit, held = holdout_split(targets, args.holdout, args.seed) if args.holdout else (np.arange(len(scores)), None)
    thresholds = choose_thresholds(
        scores[fit], targets[fit], labels, target_precision=args.precision, min_positives=args.min_positives,
        default=args.default, source=source,
    )
    notes = []
    if args.calibration:
        calibration = fit_calibration(scores[fit], targets[fit], labels, method=args.calibration,
                                      min_positives=args.min_positives)
        thresholds = dataclasses.replace(thresholds, calibration=calibration)
        on = fit if held is None else held
        before = expected_calibration_error(scores[on], targets[on])
        after = expected_calibration_error(calibration.apply(scores[on], labels), targets[on])
        notes.append(f"expected calibration error: {before:.4f} before, {after:.4f} after ({args.calibration}, "
                     + ("on the same clips: optimistic)" if held is None else "on the held-out clips)"))
    if held is not None:
        notes += held_out_lines(thresholds, scores[held], targets[held], labels)
    return thresholds, notes


def run(args: argparse.Namespace) -> int:
    from ast_audio.answers.review import is_review_file, read_review_csv, review_thresholds
    from ast_audio.errors import UsageError

    check_arguments(args)
    path = output_path(args)
    notes: list[str] = []
    if not args.annotations and is_review_file(args.data):
        if args.calibration or args.holdout:
            raise UsageError("--calibration and --holdout need labelled clips, not a review CSV")
        thresholds = review_thresholds(
            read_review_csv(args.data), target_precision=args.precision, min_positives=args.min_positives,
            default=0.5 if args.default is None else args.default, source=os.path.abspath(args.data),
        )
    elif args.annotations:
        if args.holdout:
            raise UsageError("--holdout is for labelled clips (the windows of one recording are not independent)")
        scores, targets, labels = annotated_window_scores(args)
        source = "annotations: " + ", ".join(os.path.abspath(path) for path in args.annotations)
        thresholds, notes = learn(args, scores, targets, labels, source)
    else:
        scores, targets, labels = labelled_scores(args)
        thresholds, notes = learn(args, scores, targets, labels, os.path.abspath(args.data))
    thresholds.write(path)
    print(report(thresholds, notes))
    print(f"ast-audio calibrate: wrote {path}", file=sys.stderr)
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """The options' values, before any work (`UsageError`); DATA becomes one path without --annotations."""
    from ast_audio.errors import UsageError

    if args.precision is not None and not 0 < args.precision <= 1:
        raise UsageError(f"--precision must be in (0, 1], got {args.precision:g}")
    if args.min_positives < 1:
        raise UsageError(f"--min-positives must be >= 1, got {args.min_positives}")
    if not 0 < args.min_overlap <= 1:
        raise UsageError(f"--min-overlap must be in (0, 1], got {args.min_overlap:g}")
    if args.holdout is not None and not 0 < args.holdout < 1:
        raise UsageError(f"--holdout must be a fraction in (0, 1), got {args.holdout:g}")
    if not args.annotations:
        if len(args.data) != 1:
            raise UsageError(f"expected one DATA (class folders, a manifest or a review CSV), got {len(args.data)}; "
                             "recordings with time-stamped annotations go with --annotations")
        args.data = args.data[0]
