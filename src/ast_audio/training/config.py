"""`TrainConfig`: every setting of a fine-tuning run, read from YAML/JSON and overridden by flags."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

from ast_audio.errors import ConfigError

RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "recipes")


@dataclass
class TrainConfig:
    """Defaults are the release's ESC-50-like fine-tuning settings; recipes set the rest."""

    # data: a class-per-folder directory, a release JSON manifest, or a CSV (path,label[,label...])
    train: str = ""
    validation: str | None = None
    test: str | None = None
    labels_csv: str | None = None  # class_labels_indices.csv (index, mid, display_name) for manifests
    validation_fraction: float = 0.1  # held out from train (seeded, stratified) when no validation set is given
    # model
    init: str = "scratch"  # "scratch", an AST checkpoint dir / Hub id, or "timm:PATH" (ImageNet ViT/DeiT file)
    model: dict[str, Any] = field(default_factory=dict)  # ASTConfig fields for scratch (hidden_size, ...)
    frames: int = 1024  # input length in fbank frames (the model's max_length; --frames in convert and stats)
    frequency_stride: int = 10
    time_stride: int = 10
    num_mel_bins: int = 128
    mean: float = -4.2677393
    std: float = 4.5689974
    freeze_encoder: bool = False  # linear probe: train the head only
    # loss and model selection
    loss: str = "auto"  # auto (BCE for multi-label data, CE otherwise) | bce | ce
    metric: str = "auto"  # auto (mAP for multi-label, accuracy otherwise) | accuracy | mAP | mAUC
    # optimisation
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-5
    betas: tuple[float, float] = (0.95, 0.999)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-7
    epochs: int = 25
    # A transformer needs many optimizer steps, whatever the dataset's size: on small data, epochs is raised
    # until the run makes at least min_steps steps (0: epochs as given).
    min_steps: int = 0
    batch_size: int = 48  # global batch (split over processes)
    grad_accumulation: int = 1
    max_grad_norm: float = 0.0  # 0: no clipping
    warmup_steps: int = 0  # lr = step / warmup_steps * lr over the first steps
    lr_schedule: str = "step"  # step | cosine | constant
    # step schedule (the release's MultiStepLR): after epoch lr_decay_start, and every lr_decay_every epochs
    # after it, multiply lr by lr_decay
    lr_decay_start: int = 5
    lr_decay_every: int = 1
    lr_decay: float = 0.85
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    # augmentation
    mixup: float = 0.0
    freqm: int = 24
    timem: int = 96
    noise: bool = False
    gain_db: float = 0.0
    # speaker augmentation (not in the release; training/data.py): frequency warp factor in [1 - warp, 1 + warp]
    # (vocal tract length perturbation on the mel axis) and a circular time shift of up to shift frames
    warp: float = 0.0
    shift: int = 0
    balanced_sampling: bool = False
    # run control
    early_stopping_patience: int = 0  # epochs without improvement before stopping; 0: never
    average_epochs: list[int] | None = None  # [first, last] (1-based): average the weights of these epochs
    # An exponential moving average of the weights, updated after every optimizer step (0: off); with it, the
    # averaged weights are what validation scores and best/ and final/ hold (optimization.update_ema).
    ema_decay: float = 0.0
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    output_dir: str = "runs/ast"
    save_every_steps: int = 0  # also checkpoint every N optimizer steps (0: at epoch ends only)
    max_steps: int = 0  # stop after N optimizer steps with a resumable checkpoint (0: no limit)
    eval_batch_size: int = 32

    def validate(self) -> None:
        if not self.train:
            raise ConfigError("train: the training data (folder, JSON manifest or CSV) is required")
        choices = {
            "loss": ("auto", "bce", "ce"), "metric": ("auto", "accuracy", "mAP", "mAUC"),
            "optimizer": ("adam", "adamw", "sgd"), "lr_schedule": ("step", "cosine", "constant"),
            "precision": ("auto", "float32", "bfloat16", "float16"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "grad_accumulation", "frames", "eval_batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("lr", "weight_decay", "mean", "std", "mixup", "max_grad_norm", "gain_db", "validation_fraction"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), (int, float)):
                raise ConfigError(f"{name} must be a number, got {getattr(self, name)!r}")
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction is the share of the training data held out for validation, "
                              f"in (0, 1), got {self.validation_fraction}")
        self._check_patch_fits()
        self._check_data_kinds()
        if isinstance(self.min_steps, bool) or not isinstance(self.min_steps, int) or self.min_steps < 0:
            raise ConfigError(f"min_steps must be a whole number >= 0, got {self.min_steps!r}")
        if self.lr <= 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.mixup <= 1.0:
            raise ConfigError(f"mixup is a probability in [0, 1], got {self.mixup}")
        if isinstance(self.warp, bool) or not isinstance(self.warp, (int, float)) or not 0.0 <= self.warp < 1.0:
            raise ConfigError(f"warp is a fraction in [0, 1) (factors 1 - warp .. 1 + warp), got {self.warp!r}")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise ConfigError(f"shift must be a whole number of frames >= 0, got {self.shift!r}")
        if isinstance(self.ema_decay, bool) or not isinstance(self.ema_decay, (int, float)) \
                or not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay is a decay per optimizer step in [0, 1) (0: off), got {self.ema_decay!r}")
        if self.average_epochs is not None:
            first, last = self.average_epochs
            if not 1 <= first <= last <= self.epochs:
                raise ConfigError(f"average_epochs must be [first, last] within 1..{self.epochs}, got {self.average_epochs}")

    def _check_patch_fits(self) -> None:
        """frames and num_mel_bins must hold one patch (ASTConfig's rule, said in the run's names). The patch
        size is the model's (model.patch_size, else ASTConfig's default); a checkpoint's own patch size is
        checked when the model is built."""
        if self.init not in ("scratch", "") and not self.init.startswith("timm:"):
            return
        from ast_audio.model.configuration import ASTConfig

        patch = self.model.get("patch_size", ASTConfig().patch_size)
        if not isinstance(patch, int) or isinstance(patch, bool):
            return  # ASTConfig refuses it when the model is built
        for name, unit in (("frames", "frames"), ("num_mel_bins", "mel bins")):
            value = getattr(self, name)
            if isinstance(value, int) and value < patch:
                raise ConfigError(f"{name} {value} is shorter than one patch ({patch} {unit}); expected {name} >= "
                                  f"{patch}")

    def _check_data_kinds(self) -> None:
        """A data source that exists must be a folder, a CSV or a JSON manifest (a missing one is the data's
        error, found when it is read)."""
        for name in ("train", "validation", "test"):
            source = getattr(self, name)
            if source and os.path.isfile(source) and not source.lower().endswith((".csv", ".json")):
                raise ConfigError(f"{source}: expected a folder with one sub-folder per class, a CSV or a JSON "
                                  f"manifest ({name} data)")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"target_length"})
        if unknown:
            raise ConfigError("; ".join(_unknown_key(key, known) for key in unknown))
        data = dict(data)
        if "target_length" in data:  # the release's (and this project's earlier) name for frames
            if "frames" in data:
                raise ConfigError("set the input length once: frames (target_length is its old name)")
            data["frames"] = data.pop("target_length")
        if isinstance(data.get("model"), dict):
            check_model_keys(data["model"])
        if "betas" in data:
            data["betas"] = tuple(data["betas"])
        config = cls(**data)
        config.validate()
        return config


# Model settings that belong to the run, under their top-level names (one name for the input length:
# frames, as --frames in convert and stats).
RUN_LEVEL_MODEL_KEYS = {"max_length": "frames", "frequency_stride": "frequency_stride",
                        "time_stride": "time_stride", "num_mel_bins": "num_mel_bins", "id2label": "the data's labels",
                        "label2id": "the data's labels", "num_labels": "the data's labels",
                        "problem_type": "loss (bce: multi-label, ce: single-label)"}


def _unknown_key(key: str, known: set[str], prefix: str = "") -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"unknown setting '{prefix}{key}'{hint}"


def check_model_keys(model: dict[str, Any]) -> None:
    """`model:` holds encoder settings (ASTConfig fields); unknown keys, and keys the run owns, are errors."""
    from ast_audio.model.configuration import CONFIG_FIELDS as fields

    problems = []
    for key in sorted(model):
        if key in RUN_LEVEL_MODEL_KEYS:
            problems.append(f"'model.{key}' is set by the run: use {RUN_LEVEL_MODEL_KEYS[key]}")
        elif key not in fields:
            problems.append(_unknown_key(key, fields - set(RUN_LEVEL_MODEL_KEYS), "model."))
    if problems:
        raise ConfigError("; ".join(problems))


def _parse_value(text: str) -> Any:
    """A flag value as YAML would read it (numbers, booleans, lists, null), else the string."""
    import yaml

    for number in (int, float):  # YAML 1.1 would read 1e-3 as a string
        try:
            return number(text)
        except ValueError:
            pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


RECIPE_EXTENSIONS = (".yaml", ".yml", ".json")


def shipped_recipes() -> list[str]:
    """The names of the recipes in the package's recipes folder (sorted), e.g. esc50, scratch_small."""
    return sorted(os.path.splitext(f)[0] for f in os.listdir(RECIPES_DIR) if f.endswith(RECIPE_EXTENSIONS))


def default_recipe(init: str | None) -> str | None:
    """The recipe a run without a config file starts from: scratch_small when it trains from scratch (`init`
    None, "" or "scratch"), since the dataclass defaults are the release's fine-tuning settings, which assume a
    pretrained start; None (those defaults) when it starts from a checkpoint."""
    return "scratch_small" if init in (None, "", "scratch") else None


def resolve_recipe(name: str) -> str:
    """A config path, or the name of a shipped recipe (`shipped_recipes`)."""
    if os.path.isfile(name):
        return name
    for ext in RECIPE_EXTENSIONS:
        candidate = os.path.join(RECIPES_DIR, name + ext)
        if os.path.isfile(candidate):
            return candidate
    raise ConfigError(f"{name}: no such config file or recipe (recipes: {', '.join(shipped_recipes())})")


def load_train_config(path: str | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a YAML/JSON config (or a recipe name) and apply `overrides` (already parsed values)."""
    data: dict[str, Any] = {}
    if path:
        path = resolve_recipe(path)
        try:
            with open(path, encoding="utf-8") as handle:
                if path.endswith(".json"):
                    data = json.load(handle)
                else:
                    import yaml

                    data = yaml.safe_load(handle) or {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read training config ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}  # --set model.hidden_size=64 keeps the file's other model fields
        else:
            data[key] = value
    from ast_audio.training.init_checkpoint import with_init_settings

    data = with_init_settings(data)  # input settings not given: the init checkpoint's own
    for key in ("train", "validation", "test", "labels_csv", "output_dir"):
        if isinstance(data.get(key), str) and data[key]:
            data[key] = os.path.abspath(data[key])  # train_config.json says exactly which files
    try:
        return TrainConfig.from_dict(data)
    except TypeError as exc:
        raise ConfigError(f"{path or 'training config'}: {exc}") from None


def read_stats(path: str) -> dict[str, float]:
    """{"mean", "std"} from the JSON `ast-audio stats` writes."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        return {"mean": float(data["mean"]), "std": float(data["std"])}
    except FileNotFoundError:
        raise ConfigError(f"--stats {path}: no such file; expected the JSON of ast-audio stats") from None
    except OSError as exc:
        raise ConfigError(f"--stats {path}: cannot read it ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not the JSON of ast-audio stats (needs mean and std): {exc}") from None


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["lr=1e-4", "model.hidden_size=64"] -> {"lr": 1e-4, "model": {"hidden_size": 64}}."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        target = out
        *parents, last = key.strip().split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[last] = _parse_value(value)
    return out
