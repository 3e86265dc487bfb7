"""Faster inference: ONNX export (checked with onnxruntime), int8 dynamic quantisation, and torch.compile."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from ast_audio.errors import ASTAudioError
from ast_audio.io_utils import atomic_path
from ast_audio.modeling import ASTForAudioClassification

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
ONNX_INPUTS = ["input_values"]
ONNX_OUTPUTS = ["logits", "pooler_output"]


class LogitsAndPooled(nn.Module):
    """What the classifier needs from one forward pass: logits and the pooled embedding."""

    def __init__(self, model: ASTForAudioClassification) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.model.audio_spectrogram_transformer.pool(input_values)
        return self.model.classifier(pooled), pooled


def _sample_input(config) -> torch.Tensor:
    """A seeded random batch of 2 spectrograms of the model's input shape."""
    return torch.randn(2, config.max_length, config.num_mel_bins, generator=torch.Generator().manual_seed(0))


def export_onnx(
    model: ASTForAudioClassification, path: str | os.PathLike, *, opset: int = 17, verify: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export `model` to ONNX with a dynamic batch axis; outputs logits and pooler_output.

    With `verify`, runs the file in onnxruntime on random input (batch 2) and raises if it differs from
    PyTorch by more than `atol`. Returns {"path", "max_abs_diff", "min_cosine"}. The file is written
    atomically.
    """
    model = model.float().eval()
    wrapper = LogitsAndPooled(model).eval()
    sample = _sample_input(model.config)
    path = os.fspath(path)
    # The TorchScript-based exporter: deprecated in favour of torch.export (which needs onnxscript), but it
    # exports AST exactly and without extra dependencies in this torch.
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            wrapper, (sample,), tmp, input_names=ONNX_INPUTS, output_names=ONNX_OUTPUTS, opset_version=opset,
            dynamic_axes={"input_values": {0: "batch"}, "logits": {0: "batch"}, "pooler_output": {0: "batch"}},
            dynamo=False,
        )
    report: dict[str, Any] = {"path": path}
    if verify:
        report.update(compare_with_torch(model, path))
        if report["max_abs_diff"] > atol:
            raise ASTAudioError(
                f"{path}: onnxruntime differs from PyTorch by {report['max_abs_diff']:.2e} (> {atol:.0e})"
            )
    return report


def compare_with_torch(model: ASTForAudioClassification, path: str | os.PathLike) -> dict[str, float]:
    """Run an exported file in onnxruntime and PyTorch on the same random input (batch 2): the largest
    absolute difference of logits and pooled output, and the smallest cosine similarity of the logits."""
    wrapper = LogitsAndPooled(model.float().eval()).eval()
    sample = _sample_input(model.config)
    with torch.no_grad():
        expected = [t.numpy() for t in wrapper(sample)]
    got = onnx_session(path).run(ONNX_OUTPUTS, {"input_values": sample.numpy()})
    cosine = torch.nn.functional.cosine_similarity(torch.from_numpy(got[0]), torch.from_numpy(expected[0]))
    return {
        "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(expected, got)),
        "min_cosine": float(cosine.min()),
    }


def int8_onnx_path(path: str | os.PathLike) -> str:
    """Where the int8 copy of an exported file goes: model.onnx -> model.int8.onnx."""
    root, extension = os.path.splitext(os.fspath(path))
    return f"{root}.int8{extension or '.onnx'}"


def quantize_onnx_int8(source: str | os.PathLike, target: str | os.PathLike) -> str:
    """Dynamic int8 quantisation of an exported model with onnxruntime's tools: MatMul weights int8 with
    one scale per output channel, activations 8-bit on the fly (torch's CPU kernels use 7 bits, so this
    path's logits are closer to float32). Written atomically; returns the target path."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ASTAudioError("int8 ONNX export needs onnxruntime: pip install 'ast-audio[onnx]'") from None
    target = os.fspath(target)
    root, level = logging.getLogger(), logging.getLogger().level
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
        try:
            quantize_dynamic(os.fspath(source), tmp, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
    return target


def onnx_session(path: str | os.PathLike, device: torch.device | None = None):
    """An onnxruntime session for an exported model (CUDA provider when `device` is CUDA and available)."""
    try:
        import onnxruntime
    except ImportError:
        raise ASTAudioError("the onnxruntime backend needs onnxruntime: pip install 'ast-audio[onnx]'") from None
    if not os.path.isfile(path):
        raise ASTAudioError(f"{path}: no such ONNX file; create it with ast-audio export MODEL --onnx {path}")
    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    return onnxruntime.InferenceSession(os.fspath(path), providers=providers)


def quantize_int8(model: ASTForAudioClassification) -> nn.Module:
    """Dynamic int8 quantisation of the encoder's Linear layers for CPU: weights int8 with one scale per
    output channel, activations quantised on the fly. The classification head stays float32: it is a tiny
    share of the work, and the ranking of close logits is decided there."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():
        # torch.ao's quantized tensors are deprecated in favour of torchao; they still work in this torch.
        warnings.simplefilter("ignore")
        model = model.float().eval()
        model.audio_spectrogram_transformer = quantize_dynamic(
            model.audio_spectrogram_transformer, {nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
        return model
