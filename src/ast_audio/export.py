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


def export_onnx(
    model: ASTForAudioClassification, path: str | os.PathLike, *, opset: int = 17, verify: bool = True,
    atol: float = 1e-4,
) -> dict[str, Any]:
    """Export `model` to ONNX with a dynamic batch axis; outputs logits and pooler_output.

    With `verify`, runs the file in onnxruntime on random input (batch 2) and raises if it differs from
    PyTorch by more than `atol`. Returns {"path", "max_abs_diff"}. The file is written atomically.
    """
    model = model.float().eval()
    wrapper = LogitsAndPooled(model).eval()
    sample = torch.randn(2, model.config.max_length, model.config.num_mel_bins, generator=torch.Generator().manual_seed(0))
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
        session = onnx_session(path)
        with torch.no_grad():
            expected = [t.numpy() for t in wrapper(sample)]
        got = session.run(ONNX_OUTPUTS, {"input_values": sample.numpy()})
        difference = max(float(np.abs(a - b).max()) for a, b in zip(expected, got))
        report["max_abs_diff"] = difference
        if difference > atol:
            raise ASTAudioError(f"{path}: onnxruntime differs from PyTorch by {difference:.2e} (> {atol:.0e})")
    return report


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
