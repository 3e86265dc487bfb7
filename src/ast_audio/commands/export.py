"""`ast-audio export`: a checkpoint to ONNX (verified with onnxruntime)."""

from __future__ import annotations

import argparse
import os

HELP = "export a checkpoint to ONNX (dynamic batch axis), checked against PyTorch with onnxruntime"
DESCRIPTION = (
    "Export a checkpoint directory to ONNX with outputs logits and pooler_output and a dynamic batch axis, "
    "run it in onnxruntime on random input and compare with PyTorch. By default the file is written as "
    "model.onnx inside the checkpoint directory, where classify --backend onnxruntime finds it. With --int8 "
    "an int8 copy (onnxruntime dynamic quantisation) is written beside it as model.int8.onnx, which "
    "classify --backend onnxruntime --int8 uses; "
    "its patch embedding, head and first and last encoder layers stay float32 (--float-layers)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="checkpoint directory (or Hub id)")
    parser.add_argument("--onnx", nargs="?", const="", metavar="PATH",
                        help="write ONNX here (default: MODEL/model.onnx)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument("--int8", action="store_true",
                        help="also write an int8 copy (PATH with .int8.onnx; default MODEL/model.int8.onnx)")
    parser.add_argument("--float-layers", type=int, nargs="*", default=None, metavar="N",
                        help="encoder layers the int8 copy keeps in float32, negative from the end (default: 0 -1, "
                             "the first and the last; --float-layers alone quantises every layer)")
    parser.add_argument("--no-verify", dest="verify", action="store_false", help="skip the onnxruntime check")


def run(args: argparse.Namespace) -> int:
    from ast_audio.errors import ASTAudioError
    from ast_audio.onnx import ONNX_NAME, compare_with_torch, export_onnx, int8_onnx_path, quantize_onnx_int8
    from ast_audio.quantize import DEFAULT_FLOAT_LAYERS
    from ast_audio.model.modeling import ASTForAudioClassification

    if args.onnx is None:
        raise ASTAudioError("choose an export format: --onnx [PATH]")
    path = args.onnx or os.path.join(args.model, ONNX_NAME)
    if not args.onnx and not os.path.isdir(args.model):
        raise ASTAudioError(f"{args.model} is not a local directory: pass --onnx PATH")
    model = ASTForAudioClassification.from_pretrained(args.model)
    report = export_onnx(model, path, opset=args.opset, verify=args.verify)
    checked = f", onnxruntime max |difference| {report['max_abs_diff']:.1e}" if "max_abs_diff" in report else ""
    print(f"wrote {path}{checked}")
    if args.int8:
        float_layers = DEFAULT_FLOAT_LAYERS if args.float_layers is None else args.float_layers
        quantized = quantize_onnx_int8(path, int8_onnx_path(path), float_layers=float_layers)
        if args.verify:
            report = compare_with_torch(model, quantized)
            checked = f", logits at cosine {report['min_cosine']:.4f} of PyTorch float32"
        print(f"wrote {quantized}{checked if args.verify else ''}")
    return 0
