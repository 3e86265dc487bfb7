"""`ASTModel` (the encoder) and `ASTForAudioClassification` (encoder + LayerNorm/Linear head)."""

from __future__ import annotations

import logging
import os
from typing import Any

import torch
from torch import nn

from ast_audio.model.attention import ASTSelfAttention, check_attn_implementation
from ast_audio.model.configuration import ASTConfig
from ast_audio.model.embeddings import ASTEmbeddings
from ast_audio.model.encoder import ASTEncoder
from ast_audio.errors import InputShapeError
from ast_audio.model.losses import classification_loss
from ast_audio.model.outputs import BaseModelOutputWithPooling, SequenceClassifierOutput

logger = logging.getLogger(__name__)


def check_input_values(input_values: Any, config: ASTConfig) -> None:
    """Raise `InputShapeError` unless `input_values` is a float tensor (batch, max_length, num_mel_bins)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # shapes are fixed by then; the checks are for eager callers
    expected = f"(batch, {config.max_length}, {config.num_mel_bins}) = (batch, frames, mel bins)"
    if not isinstance(input_values, torch.Tensor):
        raise InputShapeError(f"input_values must be a torch.Tensor of shape {expected}, got {type(input_values).__name__}")
    shape = tuple(input_values.shape)
    if not input_values.is_floating_point():
        raise InputShapeError(f"input_values must be floating point (log-mel features), got dtype {input_values.dtype}")
    if input_values.ndim != 3:
        hint = ""
        if shape == (config.max_length, config.num_mel_bins):
            hint = "; add the batch dimension with input_values.unsqueeze(0)"
        raise InputShapeError(f"input_values must have shape {expected}, got {shape}{hint}")
    frames, mel_bins = shape[1], shape[2]
    if (frames, mel_bins) == (config.max_length, config.num_mel_bins):
        return
    if (frames, mel_bins) == (config.num_mel_bins, config.max_length):
        raise InputShapeError(
            f"input_values must have shape {expected}, got {shape}, which looks transposed "
            "(batch, mel bins, frames); use input_values.transpose(1, 2)"
        )
    if mel_bins != config.num_mel_bins:
        raise InputShapeError(
            f"input_values must have shape {expected}, got {shape}: {mel_bins} mel bins where the model "
            f"expects {config.num_mel_bins}"
        )
    if frames < config.patch_size:
        raise InputShapeError(
            f"input_values must have shape {expected}, got {shape}: {frames} frames is fewer than one patch "
            f"({config.patch_size}); pad to {config.max_length} frames (the feature extractor does this)"
        )
    raise InputShapeError(
        f"input_values must have shape {expected}, got {shape}: pad or cut the spectrogram to "
        f"{config.max_length} frames (the feature extractor does this)"
    )


class ASTPreTrainedModel(nn.Module):
    """Shared plumbing: weight initialisation, attention kernel choice, dtype/device, and checkpoint I/O."""

    base_model_prefix = "audio_spectrogram_transformer"
    main_input_name = "input_values"
    supports_gradient_checkpointing = True

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        if not isinstance(config, ASTConfig):
            raise TypeError(f"config must be an ASTConfig, got {type(config).__name__}")
        self.config = config

    # --------------------------------------------------------------------------------- initialisation
    @torch.no_grad()
    def init_module(self, module: nn.Module) -> None:
        """Initialise one module's own parameters (not its children's) as the reference does; loading a checkpoint
        initialises this way the tensors the checkpoint lacks."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            # Truncated normal drawn in float32 then cast: float16 has no trunc_normal_ on CPU.
            weight = torch.empty(module.weight.shape, dtype=torch.float32, device=module.weight.device)
            module.weight.copy_(nn.init.trunc_normal_(weight, mean=0.0, std=std))
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()
        elif isinstance(module, ASTEmbeddings):
            module.cls_token.zero_()
            module.distillation_token.zero_()
            module.position_embeddings.zero_()

    def init_weights(self) -> None:
        """(Re-)initialise every parameter."""
        for module in self.modules():
            self.init_module(module)

    # ----------------------------------------------------------------------------------- attention
    @property
    def attn_implementation(self) -> str:
        kernels = {m.attn_implementation for m in self.modules() if isinstance(m, ASTSelfAttention)}
        return kernels.pop() if len(kernels) == 1 else "mixed"

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Switch every layer to "sdpa" (fused kernel) or "eager" (explicit softmax; can return weights)."""
        check_attn_implementation(attn_implementation)
        for module in self.modules():
            if isinstance(module, ASTSelfAttention):
                module.attn_implementation = attn_implementation

    def gradient_checkpointing_enable(self) -> None:
        """Recompute layer activations in the backward pass, trading compute for memory when training."""
        for module in self.modules():
            if isinstance(module, ASTEncoder):
                module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        for module in self.modules():
            if isinstance(module, ASTEncoder):
                module.gradient_checkpointing = False

    # ---------------------------------------------------------------------------------- properties
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of parameters, as the reference counts them: `only_trainable` counts those with
        requires_grad; `exclude_embeddings` leaves out the weights of `nn.Embedding` modules (AST has none:
        its patch embedding is a Conv2d and its position embeddings a Parameter, so the count is unchanged)."""
        skipped = set()
        if exclude_embeddings:
            skipped = {f"{name}.weight" for name, module in self.named_modules() if isinstance(module, nn.Embedding)}
        return sum(
            parameter.numel() for name, parameter in self.named_parameters()
            if name not in skipped and (parameter.requires_grad or not only_trainable)
        )

    def get_input_embeddings(self) -> nn.Module:
        """The patch embedding (a strided Conv2d), as the reference returns."""
        raise NotImplementedError

    def get_output_embeddings(self) -> None:
        """None: AST has no output embeddings to tie (as in the reference)."""
        return None

    def _output_flags(self, output_attentions: bool | None, output_hidden_states: bool | None,
                      return_dict: bool | None) -> tuple[bool, bool, bool]:
        """A call's flags, each defaulting to the config's."""
        config = self.config
        return (
            bool(config.output_attentions if output_attentions is None else output_attentions),
            bool(config.output_hidden_states if output_hidden_states is None else output_hidden_states),
            bool(config.return_dict if return_dict is None else return_dict),
        )

    def _warn_sdpa_attentions(self, output_attentions: bool) -> None:
        if output_attentions and self.attn_implementation != "eager":
            logger.warning(
                "output_attentions=True needs the eager attention kernel; using it for this call "
                "(load with attn_implementation='eager' to avoid this warning)"
            )

    def _prepare_inputs(self, input_values: torch.Tensor) -> torch.Tensor:
        check_input_values(input_values, self.config)
        device = self.device
        if input_values.device != device:
            raise InputShapeError(
                f"input_values is on {input_values.device} but the model is on {device}; move one of them"
            )
        return input_values.to(self.dtype)

    # ------------------------------------------------------------------------------ checkpoint I/O
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any):
        """Load a checkpoint directory (config.json + model.safetensors or pytorch_model.bin) or Hub id.

        Keyword arguments: config, dtype ("auto", "float16", torch.bfloat16, ...; `torch_dtype` is accepted
        too), device, attn_implementation ("sdpa" | "eager"), ignore_mismatched_sizes, revision, cache_dir,
        local_files_only, token; any other keyword overrides a config field (e.g. ``num_labels=10``).
        """
        from ast_audio.checkpoints.pretrained import load_pretrained

        return load_pretrained(cls, pretrained_model_name_or_path, **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write config.json and model.safetensors (or pytorch_model.bin) in the public layout, atomically."""
        from ast_audio.checkpoints.pretrained import save_pretrained

        save_pretrained(self, save_directory, safe_serialization=safe_serialization)


class ASTModel(ASTPreTrainedModel):
    """The AST encoder: embeddings, transformer layers, final LayerNorm, and the CLS/distillation mean pool."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__(config)
        self.embeddings = ASTEmbeddings(config)
        self.encoder = ASTEncoder(config, attn_implementation)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.init_weights()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        input_values: torch.Tensor,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> BaseModelOutputWithPooling | tuple:
        """input_values: log-mel features (batch, max_length, num_mel_bins). Flags left None follow the config."""
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict)
        self._warn_sdpa_attentions(output_attentions)
        input_values = self._prepare_inputs(input_values)
        hidden_states = self.embeddings(input_values)
        hidden_states, all_hidden, all_attentions = self.encoder(
            hidden_states, output_attentions=output_attentions, output_hidden_states=bool(output_hidden_states)
        )
        sequence_output = self.layernorm(hidden_states)
        output = BaseModelOutputWithPooling(sequence_output, self.pool(sequence_output), all_hidden, all_attentions)
        return output if return_dict else output.to_tuple()

    def forward_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """Every token's final state (batch, tokens, hidden_size), after the final LayerNorm."""
        hidden_states, _, _ = self.encoder(self.embeddings(self._prepare_inputs(input_values)))
        return self.layernorm(hidden_states)

    def forward_pooled(self, input_values: torch.Tensor) -> torch.Tensor:
        """The pooled output alone (batch, hidden_size), equal to ``forward(...).pooler_output``.

        Only the CLS and distillation tokens are read after the last layer, so that layer computes just
        those two (attending to every token): about 7% less work for the default 12-layer model.
        """
        input_values = self._prepare_inputs(input_values)
        hidden_states, _, _ = self.encoder(self.embeddings(input_values), last_layer_tokens=2)
        return self.pool(self.layernorm(hidden_states))

    @staticmethod
    def pool(sequence_output: torch.Tensor) -> torch.Tensor:
        """(batch, tokens, hidden) -> (batch, hidden): the mean of the CLS (token 0) and distillation (token 1) states."""
        return (sequence_output[:, 0] + sequence_output[:, 1]) / 2


class ASTMLPHead(nn.Module):
    """LayerNorm then Linear(hidden, num_labels) on the pooled output."""

    def __init__(self, config: ASTConfig) -> None:
        super().__init__()
        eps = config.classifier_layer_norm_eps or config.layer_norm_eps
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=eps)
        self.dense = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    def forward(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        normalised = self.layernorm(pooled)
        return normalised if pre_logits else self.dense(normalised)


class ASTForAudioClassification(ASTPreTrainedModel):
    """AST with a classification (or regression) head; the loss follows ``config.problem_type``."""

    def __init__(self, config: ASTConfig, attn_implementation: str = "sdpa") -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.audio_spectrogram_transformer = ASTModel(config, attn_implementation)
        self.classifier = ASTMLPHead(config)
        for module in self.classifier.modules():  # the encoder initialised itself
            self.init_module(module)

    def get_input_embeddings(self) -> nn.Module:
        return self.audio_spectrogram_transformer.get_input_embeddings()

    def forward_features(self, input_values: torch.Tensor) -> torch.Tensor:
        """The pooled embedding (batch, hidden_size): the mean of the CLS and distillation tokens."""
        return self.audio_spectrogram_transformer.forward_pooled(input_values)

    def forward_head(self, pooled: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Logits (batch, num_labels) from the pooled embedding; with `pre_logits`, the head's normalised input."""
        return self.classifier(pooled, pre_logits)

    def forward(
        self,
        input_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SequenceClassifierOutput | tuple:
        """input_values: (batch, max_length, num_mel_bins). labels: class ids (batch,) for single-label,
        multi-hot / soft targets (batch, num_labels) for multi-label, values for regression. Flags left None
        follow the config."""
        output_attentions, output_hidden_states, return_dict = self._output_flags(
            output_attentions, output_hidden_states, return_dict)
        encoder = self.audio_spectrogram_transformer
        if output_attentions or output_hidden_states:
            encoded = encoder(
                input_values, output_attentions=output_attentions, output_hidden_states=output_hidden_states,
                return_dict=True,
            )
            pooled, hidden_states, attentions = encoded.pooler_output, encoded.hidden_states, encoded.attentions
        else:  # only the pooled tokens are needed
            pooled, hidden_states, attentions = encoder.forward_pooled(input_values), None, None
        logits = self.forward_head(pooled)
        loss = None
        if labels is not None:
            loss = classification_loss(logits, labels, self.config.num_labels, self.config.problem_type)
        output = SequenceClassifierOutput(loss, logits, hidden_states, attentions)
        return output if return_dict else output.to_tuple()

