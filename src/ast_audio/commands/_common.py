"""Arguments and helpers shared by the commands that run a model over audio files."""

from __future__ import annotations

import argparse
import sys


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio files, directories (searched recursively) or glob patterns")
    parser.add_argument("--model", "-m", default="MIT/ast-finetuned-audioset-10-10-0.4593",
                        help="checkpoint directory or Hugging Face Hub id (default: %(default)s)")
    parser.add_argument("--window", type=float, help="window length in seconds: from one patch of frames up to the "
                        "model's input (default: the whole input, 10.255 s for 1024 frames)")
    parser.add_argument("--hop", type=float, help="seconds between window starts (default: half a window)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per model call (default 8)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], help="model precision (default float32)")
    parser.add_argument("--backend", choices=["torch", "onnxruntime"], default="torch",
                        help="torch (default) or onnxruntime (runs MODEL/model.onnx from ast-audio export)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the Linear layers, the first and "
                        "last encoder layers kept float32 (CPU; with --backend onnxruntime: run model.int8.onnx "
                        "from export --int8)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (slow first batches)")
    parser.add_argument("--threads", type=int, help="intra-op threads of the model and of decoding/features, each "
                        "in its own thread (default: every core; on a machine shared with other jobs, fewer)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hub; use its local cache only")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")


def load_classifier(args: argparse.Namespace, pooling: str = "mean"):
    from ast_audio.inference.classifier import AudioClassifier

    return AudioClassifier.from_pretrained(
        args.model, device=args.device, dtype=args.dtype, batch_size=args.batch_size, window=args.window,
        hop=args.hop, pooling=pooling, local_files_only=args.offline, backend=args.backend,
        quantize="int8" if args.int8 else None, compile=args.compile, threads=args.threads,
    )


def input_files(args: argparse.Namespace) -> list[str]:
    from ast_audio.errors import AudioError
    from ast_audio.audio.files import find_audio_files

    files = find_audio_files(args.inputs)
    if not files:
        raise AudioError(f"no audio files found in {', '.join(args.inputs)}")
    return files


def progress(total: int, args: argparse.Namespace, description: str):
    """A tqdm bar on stderr, shown only on a terminal and without --quiet."""
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="file", file=sys.stderr,
                disable=args.quiet or not sys.stderr.isatty())


def exit_code(total: int, failed: int) -> int:
    """0: everything worked; 3: some inputs failed (reported); 1: all failed."""
    if failed == 0:
        return 0
    return 1 if failed == total else 3
