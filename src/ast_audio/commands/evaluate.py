"""`ast-audio evaluate`: accuracy, mAP, mean AUC, d-prime and per-class AP of a checkpoint on labelled data."""

from __future__ import annotations

import argparse
import json
import sys

HELP = ("score a checkpoint on labelled data (accuracy, mAP, AUC, d-prime, per-class AP) as JSON; with "
        "--annotations, its events against time-stamped annotations (event, segment, sweep, PSDS)")
DESCRIPTION = (
    "Evaluate a checkpoint directory on a folder with one sub-folder per class, a release JSON manifest (with "
    "--labels-csv to map mids) or a CSV (path,label[,label...]). Labels are matched to the checkpoint's "
    "id2label. Each clip is scored on its first max_length frames (as in training; use classify for long "
    "files). Prints the metrics as JSON (and writes them with --output); a metric undefined for every class "
    "is null. Exit code 0: done; 1: an error; 2: a usage error (a bad option, or an output path that cannot be "
    "written), found before the model loads. With --annotations (evaluate MODEL AUDIO... --annotations FILES): "
    "event-based, segment-based and threshold-sweep metrics of the checkpoint's events on the audio files, "
    "against time-stamped annotations (Raven, Audacity, CSV) matched by name, printed as a table (all of it "
    "as JSON with --output, the sweep as CSV beside it, precision-recall curves with --plot); with --review "
    "review.csv (from segments, verdicts filled in): the precision of the reviewed detections per class."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (or Hub id)")
    parser.add_argument("data", nargs="*", metavar="DATA",
                        help="folder, JSON manifest or CSV; with --annotations: the audio files, folders or globs")
    parser.add_argument("--labels-csv", help="class_labels_indices.csv (index, mid, display_name)")
    parser.add_argument("--batch-size", type=int, default=16, help="clips per model call (default 16)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--output", "-o",
                        help="write the metrics JSON here (atomically; missing folders are created)")
    from ast_audio.commands import evaluate_events

    evaluate_events.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ast_audio.commands import evaluate_events
    from ast_audio.errors import UsageError

    if args.annotations and args.review:
        raise UsageError("--annotations and --review are two modes: give one")
    if args.annotations:
        return evaluate_events.run_annotations(args)
    if args.review:
        return evaluate_events.run_review(args)
    if len(args.data) != 1:
        raise UsageError(f"expected one DATA (a folder, JSON manifest or CSV), got {len(args.data)}; time-stamped "
                         "annotations go with --annotations")
    args.data = args.data[0]
    return run_manifest(args)


def run_manifest(args: argparse.Namespace) -> int:
    from ast_audio.features.extractor import ASTFeatureExtractor
    from ast_audio.runtime import resolve_device
    from ast_audio.jobs.output import check_output_file
    from ast_audio.io_utils import atomic_write_text
    from ast_audio.model.modeling import ASTForAudioClassification
    from ast_audio.training.data import LabelSpace, check_files, load_clips
    from ast_audio.training.evaluation import score_clips
    from ast_audio.training.metrics import evaluate_predictions, json_safe

    if args.output:
        check_output_file(args.output, example="metrics.json")
    device = resolve_device(args.device)
    model = ASTForAudioClassification.from_pretrained(args.checkpoint, device=device)
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    extractor = ASTFeatureExtractor.for_checkpoint(args.checkpoint, model.config)
    labels = LabelSpace.from_csv(args.labels_csv) if args.labels_csv else LabelSpace.from_names(names)
    if labels.names != names:
        print("ast-audio evaluate: warning: the labels CSV names differ from the checkpoint's id2label", file=sys.stderr)
    clips, _ = load_clips(args.data, labels)
    check_files(clips, args.data)
    scores, targets = score_clips(model, clips, extractor, batch_size=args.batch_size, device=device)
    metrics = json_safe(evaluate_predictions(scores, targets, names))
    text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
    sys.stdout.write(text)
    return 0
