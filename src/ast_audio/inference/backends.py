"""Backends: what turns a batch of features into logits and pooled embeddings (torch, int8, compiled, ONNX)."""

from __future__ import annotations

import os
from typing import Protocol

import torch
from torch import nn

from ast_audio.errors import UsageError
from ast_audio.inference.options import BACKENDS  # the vocabulary, owned where it needs no torch
from ast_audio.model.logits_and_pooled import LogitsAndPooled
from ast_audio.model.modeling import ASTForAudioClassification


class Backend(Protocol):
    """features (batch, frames, mel bins) on the CPU -> (logits, pooled), float32 on the CPU."""

    name: str

    def __call__(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class TorchBackend:
    """The model in PyTorch on `device`, optionally int8-quantised (CPU) or compiled."""

    name = "torch"

    def __init__(self, model: ASTForAudioClassification, device: torch.device, *, int8: bool = False,
                 compile: bool = False) -> None:
        if int8:
            if device.type != "cpu":
                raise UsageError("int8 dynamic quantisation runs on the CPU only; use dtype=float16 on a GPU")
            from ast_audio.quantize import quantize_int8

            model = quantize_int8(model)
        self.model = model.to(device).eval()
        self.device = device
        self.network: nn.Module = LogitsAndPooled(self.model)
        if compile:
            self.network = torch.compile(self.network)

    @torch.inference_mode()
    def __call__(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, pooled = self.network(features.to(self.device, non_blocking=True))
        return logits.float().cpu(), pooled.float().cpu()


def build_backend(
    model: ASTForAudioClassification, device: torch.device, *, backend: str = "torch", int8: bool = False,
    compile: bool = False, onnx_path: str | os.PathLike | None = None,
) -> Backend:
    """The backend named by `backend` for `model` (whose config describes the input either way)."""
    if backend not in BACKENDS:
        raise UsageError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "torch":
        return TorchBackend(model, device, int8=int8, compile=compile)
    if compile:
        raise UsageError("torch.compile applies to the torch backend, not onnxruntime")
    if onnx_path is None:  # with int8, onnx_path is the int8 file (model.int8.onnx)
        raise UsageError("the onnxruntime backend needs onnx_path (ast-audio export writes model.onnx)")
    from ast_audio.onnx import OnnxBackend

    return OnnxBackend(onnx_path, device)
