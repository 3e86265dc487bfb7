"""ONNX in one place: the graph's input and output names, export (checked with onnxruntime), onnxruntime's dynamic
int8 quantisation of the export, sessions, and the onnxruntime backend the inference engine runs.

onnx and onnxruntime are imported on first use (the `onnx` extra)."""

from __future__ import annotations

import copy
import logging
import os
import re
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ast_audio.errors import ASTAudioError
from ast_audio.io_utils import atomic_path
from ast_audio.model.logits_and_pooled import LogitsAndPooled
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.quantize import DEFAULT_FLOAT_LAYERS, resolve_layers

logger = logging.getLogger(__name__)

ONNX_NAME = "model.onnx"
ONNX_INT8_NAME = "model.int8.onnx"
ONNX_INPUTS = ["input_values"]
ONNX_OUTPUTS = ["logits", "pooler_output"]
_LAYER_NAME = re.compile(r"/encoder/layer\.(\d+)/")


def _float32_for_export(model: ASTForAudioClassification) -> LogitsAndPooled:
    """The logits-and-pooled network of a float32, eval-mode copy of `model` (the caller's model is untouched)."""
    return LogitsAndPooled(copy.deepcopy(model).float().eval()).eval()


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
    wrapper = _float32_for_export(model)
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
        report.update(_compare(wrapper, sample, path))
        if report["max_abs_diff"] > atol:
            raise ASTAudioError(
                f"{path}: onnxruntime differs from PyTorch by {report['max_abs_diff']:.2e} (> {atol:.0e})"
            )
    return report


def compare_with_torch(model: ASTForAudioClassification, path: str | os.PathLike) -> dict[str, float]:
    """Run an exported file in onnxruntime and PyTorch on the same random input (batch 2): the largest
    absolute difference of logits and pooled output, and the smallest cosine similarity of the logits."""
    return _compare(_float32_for_export(model), _sample_input(model.config), path)


def _compare(wrapper: LogitsAndPooled, sample: torch.Tensor, path: str | os.PathLike) -> dict[str, float]:
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


def quantize_onnx_int8(
    source: str | os.PathLike, target: str | os.PathLike, float_layers: Sequence[int] = DEFAULT_FLOAT_LAYERS
) -> str:
    """Dynamic int8 quantisation of an exported model with onnxruntime's tools: MatMul weights int8 with
    one scale per output channel, activations 8-bit on the fly (torch's CPU kernels use 7 bits, so this
    path's logits are closer to float32). The patch embedding, the head and the encoder layers in
    `float_layers` stay float32 (see DEFAULT_FLOAT_LAYERS). Written atomically; returns the target path."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise ASTAudioError("int8 ONNX export needs onnx and onnxruntime: pip install 'ast-audio[onnx]'") from None
    target = os.fspath(target)
    excluded = _float_nodes(onnx.load(os.fspath(source), load_external_data=False).graph, float_layers)
    root, level = logging.getLogger(), logging.getLogger().level
    with atomic_path(target) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)  # quantize_dynamic logs a pre-processing hint through the root logger
        try:
            quantize_dynamic(
                os.fspath(source), tmp, weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=excluded
            )
        finally:
            root.setLevel(level)
    return target


def _float_nodes(graph, float_layers: Sequence[int]) -> list[str]:
    """Names of the graph's MatMul/Gemm/Conv nodes to keep in float32: the patch embedding, the head, and
    the encoder layers in `float_layers` (the exporter names nodes after modules: /encoder/layer.3/...)."""
    weighted = [node.name for node in graph.node if node.op_type in ("MatMul", "Gemm", "Conv")]
    layer_names = {int(match.group(1)) for name in weighted if (match := _LAYER_NAME.search(name))}
    layers = resolve_layers(float_layers, max(layer_names) + 1 if layer_names else 0)
    keep = [f"/encoder/layer.{index}/" for index in layers]
    excluded = [
        name for name in weighted
        if "/patch_embeddings/" in name or "/classifier/" in name or any(prefix in name for prefix in keep)
    ]
    if layers and not any(prefix in name for name in excluded for prefix in keep):
        logger.warning("no nodes named after encoder layers %s: every layer is quantised", layers)
    # onnxruntime turns a Gemm into a MatMul named <Gemm>_MatMul before it looks at the exclusions.
    return excluded + [f"{node.name}_MatMul" for node in graph.node if node.op_type == "Gemm" and node.name in excluded]


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


class OnnxBackend:
    """An exported model (model.onnx or model.int8.onnx) in onnxruntime."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: torch.device) -> None:
        self.session = onnx_session(path, device)

    def __call__(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, pooled = self.session.run(ONNX_OUTPUTS, {ONNX_INPUTS[0]: features.numpy()})
        return torch.from_numpy(logits), torch.from_numpy(pooled)
