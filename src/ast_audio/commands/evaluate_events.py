"""`ast-audio evaluate --annotations` and `--review`: a checkpoint's events against time-stamped annotations,
and the precision of reviewed detections.

With `--annotations` (Raven selection tables, Audacity label tracks, CSV/TSV with onset and offset; files or
folders of them, matched to the audio files by name: `answers.annotations`): each annotated audio file is
scored by the engine of classify, its window scores become a score track and events
(`answers.events`, thresholds from `--thresholds`, the checkpoint's thresholds.json, or `--threshold`), and
the events are scored against the annotations:

- event-based precision, recall and F1 per class and overall (`answers.metrics`: onset collar `--collar`,
  default 0.2 s as DCASE and sed_eval; offset tolerance the larger of the collar and `--offset-ratio`
  (default 0.5) times the reference event's length; `--no-offset` for onsets only);
- segment-based metrics on `--segment-length` segments (default 1 s; `answers.segment_metrics`), over each
  file's decoded duration;
- a threshold sweep (19 thresholds 0.05 .. 0.95, every class at each: `answers.sweep`) and PSDS (DCASE
  scenario 1, with sed_scores_eval where installed; overlapping reference events of one class are merged
  for it, as it requires).

The classes evaluated are those the annotations name that the model has: detections of other classes are
left out (the annotations say nothing about them), and annotated labels the model lacks are named on stderr
and left out too. Audio files no annotation names are not evaluated (absence of annotation is not absence of
sound); an annotation file or name that fits no audio file is reported.

With `--review review.csv` (from `ast-audio segments`, verdicts filled in): the precision of the reviewed
detections per class and overall (`answers.review.review_precision`); no audio is scored.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
from typing import Any

ANNOTATION_EXTENSIONS = (".txt", ".csv", ".tsv")
SWEEP_POINTS = 19  # thresholds 0.05, 0.10, ..., 0.95


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the annotation and review modes (the checkpoint, --device, --batch-size, --output are
    evaluate's own)."""
    from ast_audio.commands._detect import add_event_arguments

    group = parser.add_argument_group("time-stamped annotations (evaluate MODEL AUDIO... --annotations FILES)")
    group.add_argument("--annotations", nargs="+", metavar="FILE",
                       help="Raven / Audacity / CSV annotation files or folders of them (.txt, .csv, .tsv)")
    group.add_argument("--review", metavar="CSV", help="a review.csv from segments with verdicts: precision per class")
    group.add_argument("--collar", type=float, default=0.2, help="onset collar in seconds (default 0.2, as DCASE)")
    group.add_argument("--offset-ratio", type=float, default=0.5,
                       help="offset tolerance: max(collar, ratio x the reference length) (default 0.5)")
    group.add_argument("--no-offset", action="store_true", help="match events by onset only")
    group.add_argument("--segment-length", type=float, default=1.0, help="segment-based metrics' segment (default 1 s)")
    group.add_argument("--plot", metavar="FILE",
                       help="draw the precision-recall curves of the sweep here (PNG, SVG, PDF)")
    group.add_argument("--window", type=float, help="window length in seconds (default: the model's input)")
    group.add_argument("--hop", type=float, help="seconds between window starts (default: half a window)")
    group.add_argument("--threads", type=int, help="intra-op threads (default: every core)")
    group.add_argument("--offline", action="store_true", help="never contact the Hub; use its local cache only")
    group.add_argument("--quiet", "-q", action="store_true", help="no progress")
    add_event_arguments(group)


def annotation_files(paths: list[str]) -> list[str]:
    """The annotation files `paths` name: files as given, folders searched recursively for .txt, .csv and
    .tsv files (sorted). Raises `AnnotationError` for a path that does not exist or a folder without any."""
    from ast_audio.answers.formats import AnnotationError

    found = []
    for path in paths:
        if os.path.isfile(path):
            found.append(path)
        elif os.path.isdir(path):
            inside = sorted(
                os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names
                if os.path.splitext(name)[1].lower() in ANNOTATION_EXTENSIONS and not name.startswith(".")
            )
            if not inside:
                raise AnnotationError(f"{path}: no annotation files (.txt, .csv, .tsv) in this folder")
            found.extend(inside)
        else:
            raise AnnotationError(f"{path}: no such annotation file or folder")
    return found


def _none(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def counts_dict(counts: Any) -> dict[str, Any]:
    """An `EventCounts` or `SegmentCounts` as JSON: its counts, precision, recall, F1 (and error rate)."""
    import dataclasses

    out: dict[str, Any] = dataclasses.asdict(counts)
    for name in ("precision", "recall", "f_measure", "error_rate"):
        if hasattr(counts, name):
            out[name] = _none(getattr(counts, name))
    return out


def _scored_tracks(args: argparse.Namespace, classifier, files: list[str], labels: list[str]):
    """{file: score track of `labels`} and {file: duration s} of the files that score."""
    import numpy as np

    from ast_audio.answers.events import ScoreTrack, score_track
    from ast_audio.commands._detect import score_files

    tracks, durations = {}, {}
    columns = [classifier.labels.index(label) for label in labels]
    for result in score_files(args, "evaluate", classifier, files):
        full = score_track(result.windows, result.window_scores, result.labels)
        tracks[result.source] = ScoreTrack(full.edges, np.ascontiguousarray(full.values[:, columns]), tuple(labels))
        durations[result.source] = float(result.duration)
    return tracks, durations


def merged_activity(events: list) -> list:
    """Events of one class that overlap or touch merged into one (each class's activity), as PSDS needs: its
    reference must not hold connected events of a class (sed_scores_eval refuses them), which valid
    annotations may."""
    from ast_audio.answers.events import Event

    out: list = []
    for event in sorted(events, key=lambda e: (e.label, e.start, e.end)):
        if out and out[-1].label == event.label and event.start <= out[-1].end:
            out[-1] = Event(event.label, out[-1].start, max(out[-1].end, event.end))
        else:
            out.append(Event(event.label, event.start, event.end))
    return sorted(out, key=lambda e: (e.start, e.end, e.label))


def _psds(tracks, reference, durations) -> dict[str, Any]:
    from ast_audio.answers.sweep import psds
    from ast_audio.errors import ConfigError

    reference = {file: merged_activity(events) for file, events in reference.items()}

    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # sed_scores_eval's dependencies warn on import
            result = psds(tracks, reference, durations)
    except ConfigError as error:
        return {"psds": None, "note": str(error)}
    return {"psds": result.psds, "per_class": result.per_class, "dtc_threshold": result.dtc_threshold,
            "gtc_threshold": result.gtc_threshold, "cttc_threshold": result.cttc_threshold,
            "alpha_ct": result.alpha_ct, "alpha_st": result.alpha_st, "max_efpr": result.max_efpr}


def evaluate_tracks(args: argparse.Namespace, tracks, durations, reference, options) -> tuple[dict[str, Any], Any]:
    """The metrics of the files' score tracks against their reference events (module docstring), as JSON,
    and the `ThresholdSweep` (for the plot)."""
    import numpy as np

    from ast_audio.answers.events import detect_events
    from ast_audio.answers.metrics import event_based_metrics
    from ast_audio.answers.segment_metrics import segment_based_metrics
    from ast_audio.answers.sweep import threshold_sweep

    labels = list(next(iter(tracks.values())).labels)
    reference = {file: [e for e in reference[file] if e.label in labels] for file in tracks}
    detected = {file: detect_events(track, options) for file, track in tracks.items()}
    match = dict(collar=args.collar, offset_ratio=args.offset_ratio, evaluate_offset=not args.no_offset)
    events = event_based_metrics(reference, detected, labels=labels, **match)
    segments = segment_based_metrics(reference, detected, durations=durations, segment_length=args.segment_length,
                                     labels=labels)
    sweep = threshold_sweep(tracks, reference, np.linspace(0.05, 0.95, SWEEP_POINTS), options=options, **match)
    return {
        "files": len(tracks), "labels": labels, "options": {**match, "segment_length": args.segment_length,
                                                            "threshold": options.threshold,
                                                            "class_thresholds": dict(options.class_thresholds)},
        "event_based": {"overall": counts_dict(events.overall), "class_average_f_measure":
                        _none(events.class_average_f_measure),
                        "per_class": {label: counts_dict(c) for label, c in events.per_class.items()}},
        "segment_based": {"overall": counts_dict(segments.overall), "class_average_f_measure":
                          _none(segments.class_average_f_measure),
                          "per_class": {label: counts_dict(c) for label, c in segments.per_class.items()}},
        "sweep": sweep.rows(),
        "psds": _psds(tracks, reference, durations),
    }, sweep


def table(metrics: dict[str, Any]) -> str:
    """Per class and overall: event-based P, R, F1 (reference/detected/TP) and segment-based F1 and ER."""
    from ast_audio.commands._detect import format_figure as f

    rows = [*metrics["labels"], ""]
    width = max(len("class"), len("overall"), *(len(label) for label in metrics["labels"]))
    lines = [f"{'class':<{width}}  ref  det   tp  event P  event R  event F1  segment F1  segment ER"]
    for label in rows:
        e = metrics["event_based"]["per_class"][label] if label else metrics["event_based"]["overall"]
        s = metrics["segment_based"]["per_class"][label] if label else metrics["segment_based"]["overall"]
        counts = f"{e['reference']:3d}  {e['detected']:3d}  {e['true_positives']:3d}"
        lines.append(f"{label or 'overall':<{width}}  {counts}  "
                     f"{f(e['precision']):>7}  {f(e['recall']):>7}  {f(e['f_measure']):>8}  "
                     f"{f(s['f_measure']):>10}  {f(s['error_rate']):>10}")
    psds = metrics["psds"]["psds"]
    lines.append(f"PSDS (scenario 1): {f(psds)}" if psds is not None else f"PSDS: - ({metrics['psds']['note']})")
    return "\n".join(lines)


def sweep_csv(rows: list[dict[str, Any]]) -> str:
    """The sweep's rows as CSV (label empty for overall; undefined figures empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["label"], lineterminator="\n")
    writer.writeheader()
    writer.writerows([{k: "" if v is None else v for k, v in row.items()} for row in rows])
    return buffer.getvalue()


def plot_sweep(sweep, path: str) -> None:
    """Precision against recall of each class and overall over the sweep's thresholds, saved to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ast_audio.io_utils import atomic_path

    figure, axes = plt.subplots(figsize=(6, 5))
    for label in [None, *sweep.per_class]:
        precision, recall = sweep.curve(label)
        axes.plot(recall, precision, marker=".", linewidth=2.5 if label is None else 1,
                  label="overall" if label is None else label, color="black" if label is None else None)
    axes.set(xlabel="recall (event-based)", ylabel="precision (event-based)", xlim=(0, 1.02), ylim=(0, 1.02),
             title="precision-recall over thresholds 0.05-0.95")
    axes.legend(fontsize="small", loc="lower left")
    extension = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=extension, dpi=120, bbox_inches="tight")
    plt.close(figure)


def _unknown_labels(annotations, model_labels: list[str]) -> list[str]:
    known = set(model_labels)
    return sorted({e.label for events in annotations.events.values() for e in events if e.label not in known})


def run_annotations(args: argparse.Namespace) -> int:
    """`evaluate MODEL AUDIO... --annotations FILES` (module docstring)."""
    from ast_audio.answers.annotations import match_annotations
    from ast_audio.commands._detect import event_options, load_engine
    from ast_audio.errors import ConfigError
    from ast_audio.io_utils import atomic_write_text

    files = _check(args)
    annotations = match_annotations(annotation_files(args.annotations), files)
    for line in annotations.unmatched:
        print(f"ast-audio evaluate: no audio file for {line}", file=sys.stderr)
    annotated = [path for path in files if path in annotations.events]
    if not annotated:
        raise ConfigError("no audio file is named by the annotations: nothing to evaluate")
    skipped = annotations.unannotated(files)
    if skipped:
        print(f"ast-audio evaluate: {len(skipped)} audio files without annotations are not evaluated", file=sys.stderr)
    classifier = load_engine(args)
    unknown = _unknown_labels(annotations, classifier.labels)
    if unknown:
        print(f"ast-audio evaluate: {len(unknown)} annotated labels the model lacks are left out: "
              f"{', '.join(unknown[:10])}", file=sys.stderr)
    named = {e.label for events in annotations.events.values() for e in events}
    labels = [label for label in classifier.labels if label in named]
    if not labels:
        raise ConfigError("no annotated label is among the model's labels: nothing to evaluate")
    options = event_options(args, classifier.labels)
    tracks, durations = _scored_tracks(args, classifier, annotated, labels)
    if not tracks:
        raise ConfigError("no annotated audio file could be scored")
    metrics, sweep = evaluate_tracks(args, tracks, durations, annotations.events, options)
    metrics["unannotated"], metrics["unknown_labels"] = skipped, unknown
    if args.output:
        atomic_write_text(args.output, json.dumps(metrics, indent=2, allow_nan=False) + "\n")
        atomic_write_text(sweep_path(args.output), sweep_csv(metrics["sweep"]))
    if args.plot:
        plot_sweep(sweep, args.plot)
    print(table(metrics))
    return 3 if args.failed else 0


def sweep_path(output: str) -> str:
    """Where the sweep's CSV goes beside the --output JSON: metrics.json -> metrics.sweep.csv."""
    stem, extension = os.path.splitext(output)
    return (stem if extension.lower() == ".json" else output) + ".sweep.csv"


def _check(args: argparse.Namespace) -> list[str]:
    """Checks the options and outputs before any work; the audio files the inputs name."""
    from ast_audio.audio.files import scan_inputs
    from ast_audio.errors import UsageError
    from ast_audio.jobs.output import check_output_file

    if not args.data:
        raise UsageError("--annotations needs the audio files they annotate: evaluate MODEL AUDIO... --annotations ...")
    if not (math.isfinite(args.collar) and args.collar >= 0 and args.offset_ratio >= 0 and args.segment_length > 0):
        raise UsageError("--collar and --offset-ratio must be >= 0 and --segment-length > 0 seconds")
    if args.output:
        check_output_file(args.output, example="metrics.json")
    if args.plot:
        check_output_file(args.plot, option="--plot", example="pr.png")
    listing = scan_inputs(args.data)
    listing.require_some(args.data)
    for path, reason in listing.problems:
        print(f"ast-audio evaluate: {path}: {reason}", file=sys.stderr)
    return listing.files


def run_review(args: argparse.Namespace) -> int:
    """`evaluate MODEL --review review.csv`: the precision of the reviewed detections per class."""
    from ast_audio.answers.review import read_review_csv, review_precision
    from ast_audio.commands._detect import format_figure
    from ast_audio.errors import ConfigError
    from ast_audio.io_utils import atomic_write_text

    figures = review_precision(read_review_csv(args.review))
    if not figures:
        raise ConfigError(f"{args.review}: no row has a verdict (right or wrong): nothing to evaluate")
    width = max(len("overall"), *(len(label) for label in figures))
    lines = [f"{'class':<{width}}  reviewed  right  precision"]
    for label, item in [*((k, v) for k, v in figures.items() if k), ("", figures[""])]:
        lines.append(f"{label or 'overall':<{width}}  {item['reviewed']:8d}  {item['right']:5d}  "
                     f"{format_figure(item['precision']):>9}")
    metrics = {"source": args.review, "per_class": {k: v for k, v in figures.items() if k}, "overall": figures[""]}
    if args.output:
        atomic_write_text(args.output, json.dumps(metrics, indent=2) + "\n")
    print("\n".join(lines))
    return 0
