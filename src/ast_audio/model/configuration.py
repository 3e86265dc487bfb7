"""`ASTConfig`: the hyper-parameters of an Audio Spectrogram Transformer, in the public config.json format."""

from __future__ import annotations

import copy
import inspect
import json
import logging
import os
from typing import Any

from ast_audio.errors import ConfigError

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
MODEL_TYPE = "audio-spectrogram-transformer"

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
SUPPORTED_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "quick_gelu", "relu", "silu", "swish")

# Keys that generic Hugging Face configs carry but that mean nothing to AST: accepted without a warning.
_GENERIC_CONFIG_KEYS = frozenset(
    {
        "architectures", "transformers_version", "_name_or_path", "model_type",
        "return_dict", "output_hidden_states", "output_attentions", "torchscript", "use_bfloat16",
        "pruned_heads", "tie_word_embeddings", "chunk_size_feed_forward", "is_encoder_decoder", "is_decoder",
        "cross_attention_hidden_size", "add_cross_attention", "tie_encoder_decoder", "finetuning_task",
        "tokenizer_class", "prefix", "bos_token_id", "pad_token_id", "eos_token_id", "sep_token_id",
        "decoder_start_token_id", "task_specific_params", "_attn_implementation_autoset",
        "_commit_hash", "attn_implementation", "_attn_implementation",
    }
)


class ASTConfig:
    """Configuration of an AST model; field names and defaults are those of the public checkpoints.

    The defaults describe ``MIT/ast-finetuned-audioset-10-10-0.4593``'s encoder: 12 layers of width 768 over
    16x16 patches taken with stride 10 from a (1024 frames, 128 mel bins) spectrogram.
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        classifier_layer_norm_eps: float | None = None,
        patch_size: int = 16,
        qkv_bias: bool = True,
        frequency_stride: int = 10,
        time_stride: int = 10,
        max_length: int = 1024,
        num_mel_bins: int = 128,
        num_labels: int | None = None,
        id2label: dict[int, str] | None = None,
        label2id: dict[str, int] | None = None,
        problem_type: str | None = None,
        architectures: list[str] | None = None,
        dtype: str | None = None,
        **unknown: Any,
    ) -> None:
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        # The head's LayerNorm epsilon when it differs from the encoder's: the research release used 1e-6 in the
        # encoder (timm) and 1e-5 in the head (PyTorch's default). None: layer_norm_eps. The reference ignores it.
        self.classifier_layer_norm_eps = classifier_layer_norm_eps
        self.patch_size = patch_size
        self.qkv_bias = qkv_bias
        self.frequency_stride = frequency_stride
        self.time_stride = time_stride
        self.max_length = max_length
        self.num_mel_bins = num_mel_bins
        self.problem_type = problem_type
        self.architectures = architectures
        # The dtype the weights were saved in ("float32", ...); older files call it torch_dtype.
        self.dtype = dtype if dtype is not None else unknown.pop("torch_dtype", None)
        self.id2label, self.label2id = _resolve_labels(num_labels, id2label, label2id)
        # What forward returns when its call does not say, as in the reference (stored and honoured).
        self.output_attentions = bool(unknown.pop("output_attentions", False))
        self.output_hidden_states = bool(unknown.pop("output_hidden_states", False))
        self.return_dict = bool(unknown.pop("return_dict", True))

        ignored = sorted(k for k in unknown if k not in _GENERIC_CONFIG_KEYS)
        if ignored:
            logger.warning("ASTConfig: ignoring unknown config keys %s", ", ".join(ignored))
        self.validate()

    # ----------------------------------------------------------------------------------------------- labels
    @property
    def num_labels(self) -> int:
        """Number of output classes (the size of the classification head)."""
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"num_labels must be a non-negative integer, got {value!r}")
        if value != self.num_labels:
            self.id2label = {i: f"LABEL_{i}" for i in range(value)}
            self.label2id = {label: i for i, label in self.id2label.items()}

    # -------------------------------------------------------------------------------------------- geometry
    @property
    def frequency_patches(self) -> int:
        """Number of patch rows along the mel axis."""
        return (self.num_mel_bins - self.patch_size) // self.frequency_stride + 1

    @property
    def time_patches(self) -> int:
        """Number of patch columns along the time axis."""
        return (self.max_length - self.patch_size) // self.time_stride + 1

    @property
    def num_patches(self) -> int:
        return self.frequency_patches * self.time_patches

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    # ------------------------------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise `ConfigError` naming the field, its value and what is expected, for any inconsistent value."""
        for name in (
            "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "patch_size",
            "frequency_stride", "time_stride", "max_length", "num_mel_bins",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("frequency_stride", "time_stride"):
            if getattr(self, name) > self.patch_size:
                raise ConfigError(
                    f"{name} ({getattr(self, name)}) is larger than patch_size ({self.patch_size}): "
                    "patches would skip parts of the spectrogram"
                )
        if self.max_length < self.patch_size:
            raise ConfigError(f"max_length ({self.max_length} frames) is shorter than one patch ({self.patch_size})")
        if self.num_mel_bins < self.patch_size:
            raise ConfigError(f"num_mel_bins ({self.num_mel_bins}) is smaller than one patch ({self.patch_size})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")
        for name in ("layer_norm_eps", "classifier_layer_norm_eps"):
            value = getattr(self, name)
            if (value is not None or name == "layer_norm_eps") and (not isinstance(value, (int, float)) or value <= 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.initializer_range, (int, float)) or self.initializer_range < 0:
            raise ConfigError(f"initializer_range must be a non-negative number, got {self.initializer_range!r}")
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ConfigError(f"hidden_act {self.hidden_act!r} is not supported; expected one of {SUPPORTED_ACTIVATIONS}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ConfigError(f"problem_type {self.problem_type!r} is not one of {PROBLEM_TYPES} or None")

    # ------------------------------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """The config as the JSON-ready dict found in public config.json files."""
        out: dict[str, Any] = {
            "architectures": self.architectures,
            "attention_probs_dropout_prob": self.attention_probs_dropout_prob,
            "frequency_stride": self.frequency_stride,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": self.hidden_dropout_prob,
            "hidden_size": self.hidden_size,
            "id2label": {str(i): label for i, label in self.id2label.items()},
            "initializer_range": self.initializer_range,
            "intermediate_size": self.intermediate_size,
            "label2id": dict(self.label2id),
            "layer_norm_eps": self.layer_norm_eps,
            "max_length": self.max_length,
            "model_type": self.model_type,
            "num_attention_heads": self.num_attention_heads,
            "num_hidden_layers": self.num_hidden_layers,
            "num_mel_bins": self.num_mel_bins,
            "patch_size": self.patch_size,
            "problem_type": self.problem_type,
            "qkv_bias": self.qkv_bias,
            "time_stride": self.time_stride,
        }
        if self.dtype is not None:
            out["dtype"] = str(self.dtype).replace("torch.", "")
        if self.classifier_layer_norm_eps is not None:
            out["classifier_layer_norm_eps"] = self.classifier_layer_norm_eps
        for key, default in (("output_attentions", False), ("output_hidden_states", False), ("return_dict", True)):
            if getattr(self, key) != default:
                out[key] = getattr(self, key)
        for key in ("architectures", "problem_type"):
            if out[key] is None:
                del out[key]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], **overrides: Any) -> "ASTConfig":
        """Build a config from a config.json dict; `overrides` replace fields (e.g. ``num_labels=10``)."""
        data = dict(data)
        model_type = data.get("model_type")
        if model_type not in (None, MODEL_TYPE):
            logger.warning("config has model_type %r, expected %r; loading it as AST anyway", model_type, MODEL_TYPE)
        if "num_labels" in overrides:
            # A new label count replaces the checkpoint's label names, as in the public implementation.
            data.pop("id2label", None)
            data.pop("label2id", None)
        data.update(overrides)
        return cls(**data)

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Write the config as JSON to `json_file_path` (atomically)."""
        from ast_audio.io_utils import atomic_write_text

        atomic_write_text(json_file_path, self.to_json_string())

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, save_directory: str | os.PathLike) -> str:
        """Write ``config.json`` into `save_directory` (created if needed); returns the file's path."""
        from ast_audio.io_utils import atomic_write_text

        os.makedirs(save_directory, exist_ok=True)
        path = os.path.join(save_directory, CONFIG_NAME)
        atomic_write_text(path, self.to_json_string())
        return path

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "ASTConfig":
        from ast_audio.hub import build_from_json

        return build_from_json(cls.from_dict, path, CONFIG_NAME, overrides)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **overrides: Any,
    ) -> "ASTConfig":
        """Read config.json from a checkpoint directory, a config.json path, or a Hugging Face Hub id."""
        from ast_audio.hub import build_from_json

        return build_from_json(
            cls.from_dict, pretrained_model_name_or_path, CONFIG_NAME, overrides, revision=revision,
            cache_dir=cache_dir, local_files_only=local_files_only, token=token, subfolder=subfolder,
        )

    # ------------------------------------------------------------------------------------------- helpers
    def copy(self) -> "ASTConfig":
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ASTConfig) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"ASTConfig {self.to_json_string()}"


def _resolve_labels(
    num_labels: int | None, id2label: dict | None, label2id: dict | None
) -> tuple[dict[int, str], dict[str, int]]:
    """Reconcile num_labels / id2label / label2id the way public configs use them (2 labels by default)."""
    if id2label is not None:
        try:
            id2label = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError, AttributeError):
            raise ConfigError(f"id2label must map integer ids to names, got {id2label!r}") from None
        if sorted(id2label) != list(range(len(id2label))):
            raise ConfigError(f"id2label keys must be 0..{len(id2label) - 1}, got {sorted(id2label)}")
        if num_labels is not None and num_labels != len(id2label):
            raise ConfigError(f"num_labels ({num_labels}) disagrees with id2label ({len(id2label)} entries)")
    else:
        if num_labels is None:
            num_labels = len(label2id) if label2id else 2
        if not isinstance(num_labels, int) or isinstance(num_labels, bool) or num_labels < 0:
            raise ConfigError(f"num_labels must be a non-negative integer, got {num_labels!r}")
        if label2id and len(label2id) == num_labels:
            id2label = {int(i): str(name) for name, i in label2id.items()}
        else:
            id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
    if label2id is None or len(label2id) != len(id2label):
        label2id = {name: i for i, name in id2label.items()}
    else:
        label2id = {str(k): int(v) for k, v in label2id.items()}
    return id2label, label2id


# The names ASTConfig takes as arguments (what from_pretrained overrides and training's `model:` may set).
CONFIG_FIELDS = frozenset(inspect.signature(ASTConfig.__init__).parameters) - {"self", "unknown"}
