"""Dynamic int8 quantisation of the encoder for CPU inference in PyTorch, and which layers stay float32 (the rule
the onnxruntime int8 path in ast_audio.onnx shares)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from ast_audio.errors import ConfigError
from ast_audio.model.modeling import ASTForAudioClassification

# Encoder layers the int8 paths keep in float32 by default: the first and the last. Measured with
# onnxruntime on the default geometry (12 layers) and a linear-probe head, this takes the smallest logit
# cosine to float32 from 0.995 to 0.998 and keeps near-tied top-1 decisions, for about 11% of int8's speed.
# The patch embedding and the head always stay float32: a tiny share of the work, and the patch convolution
# in float32 alone took that cosine from 0.989 to 0.995.
DEFAULT_FLOAT_LAYERS = (0, -1)


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """Layer indices (negative ones count from the end) as sorted non-negative indices; `ConfigError` when out
    of range."""
    resolved = set()
    for index in layers:
        if not -num_layers <= int(index) < num_layers:
            raise ConfigError(f"float layer {index} is out of range for a model of {num_layers} encoder layers")
        resolved.add(int(index) % num_layers)
    return sorted(resolved)


def quantize_int8(
    model: ASTForAudioClassification, float_layers: Sequence[int] = DEFAULT_FLOAT_LAYERS
) -> ASTForAudioClassification:
    """A copy of `model` with the encoder's Linear layers dynamically quantised to int8 (CPU): weights int8
    with one scale per output channel, activations quantised on the fly. The patch embedding, the head and
    the encoder layers in `float_layers` stay float32 (see DEFAULT_FLOAT_LAYERS). `model` is left as it was."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    layers = model.audio_spectrogram_transformer.encoder.layer
    kept = set(resolve_layers(float_layers, len(layers)))
    prefix = f"{model.base_model_prefix}.encoder.layer"
    targets = {
        f"{prefix}.{index}.{name}": per_channel_dynamic_qconfig
        for index, layer in enumerate(layers) if index not in kept
        for name, module in layer.named_modules() if isinstance(module, nn.Linear)
    }
    quantized = copy.deepcopy(model).float().eval()
    if not targets:
        return quantized
    with warnings.catch_warnings():
        # torch.ao's quantized tensors are deprecated in favour of torchao; they still work in this torch.
        warnings.simplefilter("ignore")
        return quantize_dynamic(quantized, targets, dtype=torch.qint8, inplace=True)
