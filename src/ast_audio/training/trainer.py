"""The fine-tuning loop: the release's recipe (Adam, warmup, step decay, mixup, SpecAugment, weight
averaging) with resumable checkpoints, early stopping, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ast_audio.checkpoints.adaptation import init_from_ast, init_from_timm
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.inference.backends import resolve_device
from ast_audio.io_utils import atomic_path, atomic_write_text
from ast_audio.model.configuration import ASTConfig
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.model.scoring import problem_type_for_loss
from ast_audio.training.config import TrainConfig
from ast_audio.training.data import (
    AugmentConfig,
    Clip,
    ClipDataset,
    DataError,
    EpochBatchSampler,
    balanced_weights,
    collate,
    prepare_data,
)
from ast_audio.training.distributed import Distributed
from ast_audio.training.evaluation import score_clips
from ast_audio.training.metrics import evaluate_predictions
from ast_audio.training.optimization import Precision, build_optimizer, lr_at

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
ENCODER_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
                  "layer_norm_eps", "patch_size", "qkv_bias")


@dataclass
class _Run:
    """Everything one call of `Trainer.train` works with."""

    wrapped: torch.nn.Module  # the model, in DDP under torchrun
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    precision: Precision
    dataset: ClipDataset
    sampler: EpochBatchSampler
    steps_per_epoch: int
    batches_per_epoch: int  # whole accumulation steps only: leftovers would mix into the next epoch's first step
    state: dict[str, Any]


class Trainer:
    """Runs `TrainConfig` to a checkpoint directory: best/, averaged/ (if asked), final/, metrics."""

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        self.device = resolve_device(config.device)
        self.dist = Distributed.setup(self.device)
        if self.dist.world_size > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if config.batch_size % (self.dist.world_size * config.grad_accumulation):
            raise DataError(
                f"batch_size {config.batch_size} must divide evenly over {self.dist.world_size} processes x "
                f"{config.grad_accumulation} accumulation steps"
            )
        self.data = prepare_data(config)
        self.loss_kind = config.loss if config.loss != "auto" else ("bce" if self.data.multi_label else "ce")
        self.metric = config.metric if config.metric != "auto" else ("mAP" if self.data.multi_label else "accuracy")
        # The one feature pipeline: training, validation, evaluate and classify all featurise through it.
        self.extractor = ASTFeatureExtractor(
            num_mel_bins=config.num_mel_bins, max_length=config.target_length, mean=config.mean, std=config.std
        )
        self.model = self._build_model()
        self.output_dir = config.output_dir
        if self.dist.main:
            os.makedirs(self.output_dir, exist_ok=True)

    # ------------------------------------------------------------------------------------ model
    def _build_model(self) -> ASTForAudioClassification:
        config = self.config
        fields = dict(config.model)
        fields.update(
            max_length=config.target_length, frequency_stride=config.frequency_stride, time_stride=config.time_stride,
            num_mel_bins=config.num_mel_bins, id2label=self.data.labels.id2label,
            problem_type=problem_type_for_loss(self.loss_kind),  # so classify scores as the model was trained
        )
        init = config.init
        if init not in ("scratch", "") and not init.startswith("timm:"):
            # Take the encoder's shape from the checkpoint; the input geometry and head from this run.
            source = ASTConfig.from_pretrained(init)
            for name in ENCODER_FIELDS:
                fields.setdefault(name, getattr(source, name))
        torch.manual_seed(config.seed)
        model = ASTForAudioClassification(ASTConfig(**fields))
        if init.startswith("timm:"):
            init_from_timm(model, init[len("timm:"):])
        elif init not in ("scratch", ""):
            init_from_ast(model, init)
        if config.freeze_encoder:
            for parameter in model.audio_spectrogram_transformer.parameters():
                parameter.requires_grad_(False)
        return model.to(self.device)

    # ------------------------------------------------------------------------------- checkpoints
    def _save_model_dir(self, model: ASTForAudioClassification, name: str) -> str:
        directory = os.path.join(self.output_dir, name)
        model.save_pretrained(directory)
        self.extractor.save_pretrained(directory)
        return directory

    def _save_state(self, run: _Run) -> None:
        if self.dist.main:
            state = {
                **run.state, "model": self.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scaler": run.precision.state_dict(), "torch_rng": torch.get_rng_state(), "config": self.config.to_dict(),
            }
            with atomic_path(os.path.join(self.output_dir, LAST_CHECKPOINT)) as tmp:
                torch.save(state, tmp)
        self.dist.barrier()

    def _load_state(self) -> dict[str, Any] | None:
        path = os.path.join(self.output_dir, LAST_CHECKPOINT)
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    # ---------------------------------------------------------------------------------- evaluation
    def predict(self, model: torch.nn.Module, clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and targets for `clips`, each process scoring its share, gathered on every process."""
        mine = list(range(self.dist.rank, len(clips), self.dist.world_size))
        network = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        scores, targets = score_clips(
            network, clips, self.extractor, batch_size=self.config.eval_batch_size, device=self.device,
            num_workers=self.config.num_workers, indices=mine,
        )
        return self.dist.gather_rows(mine, scores, targets)

    def evaluate(self, model: torch.nn.Module, clips: list[Clip]) -> dict[str, Any]:
        scores, targets = self.predict(model, clips)
        return evaluate_predictions(scores, targets, self.data.labels.names)

    # ------------------------------------------------------------------------------------- training
    def train(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (or to max_steps); returns the final metrics. Resumes from last.pt when present."""
        run = self._start(resume)
        state, config = run.state, self.config
        while state["epoch"] < config.epochs:
            started = time.time()
            losses = self._train_epoch(run)
            if config.max_steps and state["step"] >= config.max_steps:
                self._save_state(run)
                return {"stopped_at_step": state["step"]}
            metrics = self.evaluate(run.wrapped, self.data.validation)
            state["epoch"], state["batch"] = state["epoch"] + 1, 0
            self._after_epoch(state, metrics, self.dist.mean(losses), run.optimizer, started)
            self._save_state(run)
            if config.early_stopping_patience and state["stale"] >= config.early_stopping_patience:
                if self.dist.main:
                    logger.warning("early stopping after epoch %d: no %s improvement in %d epochs",
                                   state["epoch"], self.metric, state["stale"])
                break
        return self._finish(state)

    def _start(self, resume: bool) -> _Run:
        """Optimizer, precision, data order and state: fresh, or as last.pt left them."""
        config = self.config
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        augment = AugmentConfig(config.mixup, config.freqm, config.timem, config.noise, config.gain_db)
        dataset = ClipDataset(self.data.train, len(self.data.labels), self.extractor, augment, training=True,
                              seed=config.seed)
        # Each optimizer step accumulates grad_accumulation micro-batches that together make one global batch.
        micro_batch = config.batch_size // config.grad_accumulation
        sampler = EpochBatchSampler(
            len(dataset), micro_batch, seed=config.seed,
            weights=balanced_weights(self.data.train, len(self.data.labels)) if config.balanced_sampling else None,
            rank=self.dist.rank, world_size=self.dist.world_size, drop_last=len(dataset) >= micro_batch,
        )
        steps_per_epoch = max(1, len(sampler) // config.grad_accumulation)
        run = _Run(
            self.dist.wrap(self.model, self.device), trainable, build_optimizer(config, trainable),
            Precision(config.precision, self.device), dataset, sampler, steps_per_epoch,
            steps_per_epoch * config.grad_accumulation,
            {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": None, "stale": 0, "average": None,
             "averaged": 0, "history": []},
        )
        saved = self._load_state() if resume else None
        if saved is not None:
            self.model.load_state_dict(saved["model"])
            run.optimizer.load_state_dict(saved["optimizer"])
            run.precision.load_state_dict(saved.get("scaler"))
            torch.set_rng_state(saved["torch_rng"])
            run.state.update({k: saved[k] for k in run.state})
            if self.dist.main:
                logger.info("resuming from epoch %d, batch %d (step %d)", run.state["epoch"] + 1, run.state["batch"],
                            run.state["step"])
        if self.dist.main:
            atomic_write_text(os.path.join(self.output_dir, "train_config.json"), json.dumps(config.to_dict(), indent=2))
        return run

    def _train_epoch(self, run: _Run) -> list[float]:
        """The rest of the current epoch (or up to max_steps); returns the micro-batch losses."""
        from tqdm import tqdm

        config, state = self.config, run.state
        run.sampler.epoch, run.sampler.skip_batches = state["epoch"], state["batch"]
        loader = torch.utils.data.DataLoader(run.dataset, batch_sampler=run.sampler, collate_fn=collate,
                                             num_workers=config.num_workers)
        losses: list[float] = []
        run.wrapped.train()
        with tqdm(total=run.batches_per_epoch, initial=state["batch"], unit="batch", file=sys.stderr,
                  desc=f"epoch {state['epoch'] + 1}/{config.epochs}",
                  disable=not (self.dist.main and sys.stderr.isatty())) as bar:
            for features, targets in loader:
                if state["batch"] >= run.batches_per_epoch:
                    break
                last_of_step = (state["batch"] + 1) % config.grad_accumulation == 0
                with self.dist.sync_gradients(run.wrapped, last_of_step):
                    losses.append(self._backward(run, features, targets))
                state["batch"] += 1
                bar.update(1)
                if last_of_step:
                    self._optimizer_step(run)
                    if config.max_steps and state["step"] >= config.max_steps:
                        break
        return losses

    def _backward(self, run: _Run, features: torch.Tensor, targets: torch.Tensor) -> float:
        """Forward and backward of one micro-batch (its loss scaled for accumulation); returns its loss."""
        with run.precision.autocast():
            logits = run.wrapped(features.to(self.device)).logits
        loss = self._loss(logits, targets.to(self.device))
        run.precision.backward(loss / self.config.grad_accumulation)
        return loss.item()

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.loss_kind == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return torch.nn.functional.cross_entropy(logits, targets)  # soft targets keep mixup's proportions

    def _optimizer_step(self, run: _Run) -> None:
        config, state = self.config, run.state
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(config, state["step"], state["epoch"], run.steps_per_epoch)
        run.precision.step(run.optimizer, run.trainable, config.max_grad_norm)
        state["step"] += 1
        if config.save_every_steps and state["step"] % config.save_every_steps == 0:
            self._save_state(run)

    def _after_epoch(self, state: dict, metrics: dict, train_loss: float, optimizer, started: float) -> None:
        config, epoch = self.config, state["epoch"]
        value = metrics[self.metric]
        improved = state["best"] is None or value > state["best"]
        if improved:
            state["best"], state["best_epoch"], state["stale"] = value, epoch, 0
            if self.dist.main:
                self._save_model_dir(self.model, "best")
        else:
            state["stale"] += 1
        if config.average_epochs and config.average_epochs[0] <= epoch <= config.average_epochs[1]:
            weights = {k: v.detach().float().cpu().clone() for k, v in self.model.state_dict().items()}
            if state["average"] is None:
                state["average"] = weights
            else:
                for k, v in weights.items():
                    state["average"][k] += v
            state["averaged"] += 1
        row = {"epoch": epoch, "step": state["step"], "train_loss": train_loss, "lr": optimizer.param_groups[0]["lr"],
               "accuracy": metrics["accuracy"], "mAP": metrics["mAP"], "mAUC": metrics["mAUC"],
               "d_prime": metrics["d_prime"], "seconds": round(time.time() - started, 2)}
        state["history"].append(row)
        if self.dist.main:
            self._write_log(state["history"])
            logger.info("epoch %d/%d: train loss %.4f, validation %s %.4f%s, %.1f s", epoch, config.epochs, train_loss,
                        self.metric, value, " (best)" if improved else "", row["seconds"])

    def _write_log(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(os.path.join(self.output_dir, "metrics.csv"), buffer.getvalue())

    def _finish(self, state: dict) -> dict[str, Any]:
        results: dict[str, Any] = {"best_epoch": state["best_epoch"], f"best_validation_{self.metric}": state["best"]}
        final_model = ASTForAudioClassification.from_pretrained(os.path.join(self.output_dir, "best")).to(self.device)
        if state["average"] is not None and state["averaged"]:
            averaged = {k: v / state["averaged"] for k, v in state["average"].items()}
            self.model.load_state_dict(averaged)
            final_model = self.model
            if self.dist.main:
                self._save_model_dir(self.model, "averaged")
            results["averaged_epochs"] = state["averaged"]
        self.dist.barrier()
        results["validation"] = self.evaluate(final_model, self.data.validation)
        if self.data.test:
            results["test"] = self.evaluate(final_model, self.data.test)
        if self.dist.main:
            self._save_model_dir(final_model, "final")
            atomic_write_text(os.path.join(self.output_dir, "results.json"), json.dumps(results, indent=2) + "\n")
        return results
