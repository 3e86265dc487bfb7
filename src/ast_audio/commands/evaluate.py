"""`ast-audio evaluate`: accuracy, mAP, mean AUC, d-prime and per-class AP of a checkpoint on labelled data."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "score a checkpoint on labelled data (accuracy, mAP, AUC, d-prime, per-class AP) as JSON"
DESCRIPTION = (
    "Evaluate a checkpoint directory on a folder with one sub-folder per class, a release JSON manifest (with "
    "--labels-csv to map mids) or a CSV (path,label[,label...]). Labels are matched to the checkpoint's "
    "id2label. Prints the metrics as JSON (and writes them with --output)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="checkpoint directory (or Hub id)")
    parser.add_argument("data", help="folder, JSON manifest or CSV")
    parser.add_argument("--labels-csv", help="class_labels_indices.csv (index, mid, display_name)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--output", "-o", help="write the metrics JSON here (atomically)")


def run(args: argparse.Namespace) -> int:
    from ast_audio.features.extractor import ASTFeatureExtractor
    from ast_audio.inference.backends import resolve_device
    from ast_audio.inference.output import check_output_file
    from ast_audio.io_utils import atomic_write_text
    from ast_audio.model.modeling import ASTForAudioClassification
    from ast_audio.training.data import LabelSpace, check_files, load_clips
    from ast_audio.training.evaluation import score_clips
    from ast_audio.training.metrics import evaluate_predictions

    if args.output:
        check_output_file(args.output)
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
    metrics = evaluate_predictions(scores, targets, names)
    text = json.dumps(metrics, indent=2) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
    sys.stdout.write(text)
    return 0
