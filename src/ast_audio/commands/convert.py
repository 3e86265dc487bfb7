"""`ast-audio convert`: original research release .pth -> checkpoint directory."""

from __future__ import annotations

import argparse

HELP = "convert an original AST release .pth into a checkpoint directory"
DESCRIPTION = (
    "Convert a state dict from the original AST research release (module.v.* names, packed qkv) into a "
    "checkpoint directory (config.json, model.safetensors, preprocessor_config.json) that from_pretrained "
    "and the other commands load. Strides, frame count and label count are inferred from tensor shapes "
    "unless given."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="the release .pth file")
    parser.add_argument("output_dir", help="directory to write the converted checkpoint into")
    parser.add_argument("--labels-csv", help="class_labels_indices.csv (index, mid, display_name) for label names")
    parser.add_argument("--fstride", type=int, help="frequency stride (default: inferred)")
    parser.add_argument("--tstride", type=int, help="time stride (default: inferred)")
    parser.add_argument("--frames", type=int, help="input frames, max_length (default: inferred)")
    parser.add_argument("--mel-bins", type=int, default=128, help="mel bins of the input (default: 128)")
    parser.add_argument("--heads", type=int, help="attention heads (default: hidden size / 64, as in DeiT)")
    parser.add_argument("--dataset", choices=["audioset", "esc50", "speechcommands"],
                        help="the release recipe the model was trained with: sets mean/std, problem type and frames "
                             "(audioset 1024, esc50 512, speechcommands 128)")
    parser.add_argument("--match-release", action="store_true",
                        help="keep the release's LayerNorm epsilons (1e-6 encoder, 1e-5 head): the original code's "
                             "logits exactly; default 1e-12 everywhere, as the public converted checkpoints")
    parser.add_argument("--mean", type=float, help="feature mean for normalisation (default: the --dataset's, else AudioSet's)")
    parser.add_argument("--std", type=float, help="feature std for normalisation (default: the --dataset's, else AudioSet's)")
    parser.add_argument(
        "--problem-type", choices=["single_label_classification", "multi_label_classification", "regression"],
        help="loss the checkpoint is trained with (AudioSet: multi_label_classification)",
    )


def run(args: argparse.Namespace) -> int:
    from ast_audio.checkpoints.release import convert_original

    config = convert_original(
        args.checkpoint, args.output_dir, labels_csv=args.labels_csv, dataset=args.dataset,
        frequency_stride=args.fstride, time_stride=args.tstride, max_length=args.frames, num_mel_bins=args.mel_bins,
        num_attention_heads=args.heads, match_release=args.match_release, problem_type=args.problem_type,
        mean=args.mean, std=args.std,
    )
    print(
        f"wrote {args.output_dir}: {config.num_hidden_layers} layers, hidden {config.hidden_size}, strides "
        f"{config.frequency_stride}/{config.time_stride}, {config.max_length} frames, {config.num_labels} labels"
        f"{', release epsilons' if args.match_release else ''}"
    )
    return 0
