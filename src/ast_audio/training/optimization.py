"""The optimizer, the learning-rate schedule and mixed precision of a training run."""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

from ast_audio.training.config import TrainConfig


def build_optimizer(config: TrainConfig, parameters: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (the release's, betas (0.95, 0.999)), AdamW or SGD with momentum, as `config` says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return optimizer_class(parameters, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def lr_at(config: TrainConfig, step: int, epoch: int, steps_per_epoch: int) -> float:
    """Learning rate for optimizer step `step` (0-based) in epoch `epoch` (0-based)."""
    lr = config.lr
    if config.warmup_steps and step < config.warmup_steps:
        return lr * (step + 1) / config.warmup_steps
    if config.lr_schedule == "step":
        # The release's MultiStepLR(milestones=range(start, ..., every)) stepped after each epoch: `epoch`
        # epochs are done, and each milestone reached so far has multiplied the rate by lr_decay.
        if epoch >= config.lr_decay_start:
            decays = (epoch - config.lr_decay_start) // config.lr_decay_every + 1
            lr *= config.lr_decay**decays
    elif config.lr_schedule == "cosine":
        total = max(1, config.epochs * steps_per_epoch - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / total)
        lr *= 0.5 * (1 + math.cos(math.pi * progress))
    return lr


def warmup_outlasts_run(config: TrainConfig, total_steps: int) -> str | None:
    """A warning when the linear warmup is longer than the run's `total_steps` optimizer steps (the learning
    rate then never reaches config.lr), else None."""
    if config.warmup_steps <= total_steps:
        return None
    return (f"warmup_steps {config.warmup_steps} is more than the run's {total_steps} optimizer steps: the learning "
            f"rate never reaches its peak {config.lr:g} (at most {lr_at(config, total_steps - 1, 0, 1):.3g}); "
            "lower warmup_steps (--set warmup_steps=N) or train longer")


def ema_decay_at(decay: float, step: int) -> float:
    """The decay of the weights' moving average after optimizer step `step` (1-based): `decay`, but at most
    (1 + step) / (10 + step), so the first steps' random weights do not linger in the average (the warm-up of
    TensorFlow's ExponentialMovingAverage with num_updates)."""
    return min(decay, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(average: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """average <- decay * average + (1 - decay) * model, for every floating-point parameter and buffer (others
    copied). Both modules have the same structure; `average` holds no gradients. Polyak averaging in its
    exponential form, as timm's ModelEmaV2 keeps for DeiT from scratch."""
    model_state = model.state_dict()
    for name, value in average.state_dict().items():
        source = model_state[name].detach()
        if value.is_floating_point():
            value.lerp_(source.to(value.dtype), 1.0 - decay)
        else:
            value.copy_(source)


class Precision:
    """Autocast and (for float16 on CUDA) gradient scaling, behind one interface the loop calls unconditionally.

    "auto": bfloat16 autocast on CUDA where supported, else float16 with a scaler; float32 on the CPU.
    """

    def __init__(self, precision: str, device: torch.device) -> None:
        if precision == "auto":
            if device.type != "cuda":
                precision = "float32"
            else:
                precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        self.dtype = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]
        self.device_type = device.type
        scaled = self.dtype == torch.float16 and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(device.type) if scaled else None

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, parameters: list[torch.nn.Parameter], max_grad_norm: float) -> None:
        """Unscale, clip to `max_grad_norm` (when > 0) and step; the scaler skips steps with inf/NaN gradients."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(parameters, max_grad_norm)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
