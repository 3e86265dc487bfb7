"""The fine-tuning loop: the release's recipe (Adam, warmup, step decay, mixup, SpecAugment, weight
averaging) with resumable checkpoints, early stopping, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ast_audio.checkpoints.adaptation import init_from_ast, init_from_timm
from ast_audio.errors import ASTAudioError, UsageError
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.io_utils import atomic_path, atomic_write_text
from ast_audio.model.configuration import ASTConfig
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.model.scoring import problem_type_for_loss
from ast_audio.runtime import resolve_device
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
from ast_audio.training.metrics import evaluate_predictions, json_safe
from ast_audio.training.optimization import (
    Precision,
    build_optimizer,
    ema_decay_at,
    lr_at,
    update_ema,
    warmup_outlasts_run,
)

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"
# Settings a resumed run may change: how long it runs and how it reports, not what it learns from.
HARMLESS_ON_RESUME = {"epochs", "min_steps", "early_stopping_patience", "save_every_steps", "max_steps",
                      "eval_batch_size", "num_workers", "device", "test", "output_dir"}
# Between epochs of equal validation metric, the later one is selected (and counts as an improvement for early
# stopping) only when its validation loss is lower by more than this fraction: a real gain, not noise.
LOSS_TIE_BREAK = 0.01
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
    ema: ASTForAudioClassification | None = None  # the weights' moving average (ema_decay > 0)
    # This process's training sums of the current epoch not yet in state["epoch_train"] (_fold_train_sums):
    # micro-batch losses, micro-batches, correct samples, samples.
    pending: list[float] = field(default_factory=lambda: [0.0] * 4)

    @property
    def scored(self) -> torch.nn.Module:
        """The weights validation scores and best/ and final/ hold: the moving average when there is one."""
        return self.ema if self.ema is not None else self.wrapped


class Trainer:
    """Runs `TrainConfig` to a checkpoint directory: best/, averaged/ (if asked), final/, metrics."""

    def __init__(self, config: TrainConfig, provenance: dict[str, Any] | None = None) -> None:
        """`provenance`: what train_config.json records beside the settings (the command line, the recipe)."""
        config.validate()
        self.config = config
        self.provenance = provenance or {}
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
        self.config = config = self._epochs_for_min_steps(config)
        if self.dist.main:
            self._warn_about_settings()
        self.loss_kind = config.loss if config.loss != "auto" else ("bce" if self.data.multi_label else "ce")
        self.metric = config.metric if config.metric != "auto" else ("mAP" if self.data.multi_label else "accuracy")
        # The one feature pipeline: training, validation, evaluate and classify all featurise through it.
        self.extractor = ASTFeatureExtractor(
            num_mel_bins=config.num_mel_bins, max_length=config.frames, mean=config.mean, std=config.std
        )
        self.model = self._build_model()
        self.output_dir = config.output_dir
        if self.dist.main:
            os.makedirs(self.output_dir, exist_ok=True)

    def _epochs_for_min_steps(self, config: TrainConfig) -> TrainConfig:
        """`config` with epochs raised so the run makes at least min_steps optimizer steps on this data."""
        per_epoch = steps_per_epoch(len(self.data.train), config)
        needed = -(-config.min_steps // per_epoch)
        if needed <= config.epochs:
            return config
        if self.dist.main:
            logger.info("%d epochs of %d optimizer steps (%d training clips) to make min_steps %d (epochs was %d)",
                        needed, per_epoch, len(self.data.train), config.min_steps, config.epochs)
        return dataclasses.replace(config, epochs=needed)

    def _warn_about_settings(self) -> None:
        """One warning each for settings that run but likely not as meant: a warmup longer than the run, and
        a model trained from scratch on AudioSet's normalisation instead of its own data's."""
        config = self.config
        warning = warmup_outlasts_run(config, config.epochs * steps_per_epoch(len(self.data.train), config))
        if warning:
            logger.warning("%s", warning)
        audioset = (TrainConfig.mean, TrainConfig.std)
        if config.init in ("scratch", "") and (config.mean, config.std) == audioset:
            logger.warning("training from scratch with AudioSet's mean %g and std %g (no --stats): other data's "
                           "features are then not centred and scaled as they should be; measure yours with "
                           "`ast-audio stats DATA -o stats.json` and pass --stats stats.json", *audioset)

    # ------------------------------------------------------------------------------------ model
    def _check_init(self) -> None:
        """Say what --init takes when it names nothing that exists; warn when a recipe assumes a pretrained start."""
        init = self.config.init
        choices = ("--init takes an AST checkpoint directory or Hub id (e.g. MIT/ast-finetuned-audioset-10-10-0.4593), "
                   "timm:PATH to a timm DeiT/ViT weights file (deit_base_distilled_patch16_384), or scratch (see the "
                   "scratch_small recipe)")
        if init in ("scratch", ""):
            if self.config.mixup > 0 or self.config.noise:
                logger.warning("training from scratch with mixup %g%s: the release's recipes assume a pretrained "
                               "start, and from scratch on small data they can keep the model at chance; the "
                               "scratch_small recipe turns them off", self.config.mixup,
                               " and noise" if self.config.noise else "")
            return
        if init.startswith("timm:"):
            if not os.path.isfile(init[len("timm:"):]):
                raise DataError(f"init {init}: no such file; {choices}")
            return
        try:
            ASTConfig.from_pretrained(init)
        except ASTAudioError as exc:
            raise DataError(f"init {init}: {exc}; {choices}") from None

    def _build_model(self) -> ASTForAudioClassification:
        config = self.config
        self._check_init()
        fields = dict(config.model)
        fields.update(
            max_length=config.frames, frequency_stride=config.frequency_stride, time_stride=config.time_stride,
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
    def _save_model_dir(self, model: ASTForAudioClassification, name: str, trainer_state: dict[str, Any]) -> str:
        """A checkpoint directory classify and evaluate load, with trainer_state.json saying what it is."""
        directory = os.path.join(self.output_dir, name)
        model.save_pretrained(directory)
        self.extractor.save_pretrained(directory)
        atomic_write_text(os.path.join(directory, "trainer_state.json"),
                          json.dumps({"checkpoint": name, "metric": self.metric, **trainer_state}, indent=2) + "\n")
        return directory

    def _save_state(self, run: _Run) -> None:
        self._fold_train_sums(run)
        if self.dist.main:
            state = {
                **run.state, "model": self.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "scaler": run.precision.state_dict(), "torch_rng": torch.get_rng_state(), "config": self.config.to_dict(),
                "ema": run.ema.state_dict() if run.ema is not None else None,
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
        """Metrics of `clips` (accuracy, mAP, mAUC, d-prime, per-class AP) and the loss the run trains with."""
        scores, targets = self.predict(model, clips)
        metrics = evaluate_predictions(scores, targets, self.data.labels.names)
        metrics["loss"] = loss_of_scores(scores, targets, self.loss_kind)
        return metrics

    # ------------------------------------------------------------------------------------- training
    def train(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (or to max_steps); returns the final metrics. Resumes from last.pt when present."""
        run = self._start(resume)
        state, config = run.state, self.config
        with _stop_requests() as stop:
            while state["epoch"] < config.epochs:
                started = time.time()
                self._train_epoch(run, stop)
                if stop.requested or (config.max_steps and state["step"] >= config.max_steps):
                    self._save_state(run)
                    if stop.requested:
                        raise TrainingInterrupted(
                            f"stopped at step {state['step']} (epoch {state['epoch'] + 1}, batch {state['batch']}); "
                            f"{os.path.join(self.output_dir, LAST_CHECKPOINT)} holds it: rerun the same command to go on"
                        )
                    return {"stopped_at_step": state["step"]}
                metrics = self.evaluate(run.scored, self.data.validation)
                train = self._epoch_train_metrics(run)
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
                self._after_epoch(run, metrics, train, started)
                self._save_state(run)
                if config.early_stopping_patience and state["stale"] >= config.early_stopping_patience:
                    if self.dist.main:
                        logger.warning("early stopping after epoch %d: no %s improvement in %d epochs",
                                       state["epoch"], self.metric, state["stale"])
                    break
        return self._finish(run)

    def _start(self, resume: bool) -> _Run:
        """Optimizer, precision, data order and state: fresh, or as last.pt left them."""
        config = self.config
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        augment = AugmentConfig(config.mixup, config.freqm, config.timem, config.noise, config.gain_db, config.warp,
                                config.shift)
        dataset = ClipDataset(self.data.train, len(self.data.labels), self.extractor, augment, training=True,
                              seed=config.seed)
        # Each optimizer step accumulates grad_accumulation micro-batches that together make one global batch.
        micro_batch = config.batch_size // config.grad_accumulation
        sampler = EpochBatchSampler(
            len(dataset), micro_batch, seed=config.seed,
            weights=balanced_weights(self.data.train, len(self.data.labels)) if config.balanced_sampling else None,
            rank=self.dist.rank, world_size=self.dist.world_size, drop_last=len(dataset) >= micro_batch,
        )
        per_epoch = max(1, len(sampler) // config.grad_accumulation)  # as steps_per_epoch counts them
        run = _Run(
            self.dist.wrap(self.model, self.device), trainable, build_optimizer(config, trainable),
            Precision(config.precision, self.device), dataset, sampler, per_epoch, per_epoch * config.grad_accumulation,
            {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_loss": None, "best_epoch": None, "stale": 0,
             "average": None, "averaged": 0, "history": [], "epoch_train": [0.0] * 4},
            ema=copy.deepcopy(self.model).requires_grad_(False) if config.ema_decay else None,
        )
        saved = self._load_state() if resume else None
        if saved is not None:
            self._check_resumable(saved.get("config", {}))
            self.model.load_state_dict(saved["model"])
            run.optimizer.load_state_dict(saved["optimizer"])
            run.precision.load_state_dict(saved.get("scaler"))
            torch.set_rng_state(saved["torch_rng"])
            if run.ema is not None:
                run.ema.load_state_dict(saved["ema"])
            run.state.update({k: saved[k] for k in run.state if k in saved})  # last.pt of earlier versions: no best_loss
            if self.dist.main and run.state["epoch"] >= config.epochs:
                logger.info("%s: this run is already complete (%d of %d epochs): pass more --epochs to go on, or "
                            "--no-resume to start over", self.output_dir, run.state["epoch"], config.epochs)
            elif self.dist.main:
                logger.info("resuming from epoch %d, batch %d (step %d)", run.state["epoch"] + 1, run.state["batch"],
                            run.state["step"])
        if self.dist.main:
            record = {**config.to_dict(), **self.provenance, "labels": self.data.labels.names,
                      "validation_clips": [clip.path for clip in self.data.validation]}
            atomic_write_text(os.path.join(self.output_dir, "train_config.json"), json.dumps(record, indent=2))
        return run

    def _check_resumable(self, before: dict[str, Any]) -> None:
        """Refuse to resume a run whose model or data settings changed; log the harmless changes."""
        now = self.config.to_dict()
        changed = {key for key in set(before) | set(now) if before.get(key) != now.get(key)}
        harmless = changed & HARMLESS_ON_RESUME
        if harmless and self.dist.main:
            logger.info("resuming with changed %s", ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}"
                                                             for k in sorted(harmless)))
        blocking = sorted(changed - HARMLESS_ON_RESUME)
        if blocking:
            listed = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in blocking)
            raise UsageError(  # the command line's settings clash with the run's: exit 2, as README says
                f"{os.path.join(self.output_dir, LAST_CHECKPOINT)} was written by a run with other settings ({listed}); "
                "resuming would mix them: pass --no-resume to start over, or another --output-dir"
            )

    def _train_epoch(self, run: _Run, stop: "_StopRequests") -> None:
        """The rest of the current epoch (or up to max_steps, or a stop request at a step's end), adding each
        micro-batch's loss and each training sample's correctness (argmax of logits = argmax of target) to
        run.pending."""
        from tqdm import tqdm

        config, state = self.config, run.state
        run.sampler.epoch, run.sampler.skip_batches = state["epoch"], state["batch"]
        loader = torch.utils.data.DataLoader(run.dataset, batch_sampler=run.sampler, collate_fn=collate,
                                             num_workers=config.num_workers)
        run.wrapped.train()
        with tqdm(total=run.batches_per_epoch, initial=state["batch"], unit="batch", file=sys.stderr,
                  desc=f"epoch {state['epoch'] + 1}/{config.epochs}",
                  disable=not (self.dist.main and sys.stderr.isatty())) as bar:
            for features, targets in loader:
                if state["batch"] >= run.batches_per_epoch:
                    break
                last_of_step = (state["batch"] + 1) % config.grad_accumulation == 0
                with self.dist.sync_gradients(run.wrapped, last_of_step):
                    loss, hits = self._backward(run, features, targets)
                run.pending = [run.pending[0] + loss, run.pending[1] + 1, run.pending[2] + sum(hits),
                               run.pending[3] + len(hits)]
                state["batch"] += 1
                bar.update(1)
                if last_of_step:
                    self._optimizer_step(run)
                    stop.requested = self.dist.any(stop.requested)  # every process stops at the same step
                    if stop.requested or (config.max_steps and state["step"] >= config.max_steps):
                        break

    def _fold_train_sums(self, run: _Run) -> None:
        """Add every process's pending training sums to state["epoch_train"], the epoch's totals that last.pt
        keeps, so an epoch interrupted and resumed (even after its last step) reports all of its batches."""
        totals = self.dist.sum(run.pending)
        run.state["epoch_train"] = [a + b for a, b in zip(run.state["epoch_train"], totals)]
        run.pending = [0.0] * 4

    def _epoch_train_metrics(self, run: _Run) -> tuple[float, float]:
        """The finished epoch's training loss (mean over micro-batches) and accuracy (over samples); NaN where
        it had none. Resets the epoch's totals."""
        self._fold_train_sums(run)
        loss_sum, batches, correct, samples = run.state["epoch_train"]
        run.state["epoch_train"] = [0.0] * 4
        return (loss_sum / batches if batches else float("nan"), correct / samples if samples else float("nan"))

    def _backward(self, run: _Run, features: torch.Tensor, targets: torch.Tensor) -> tuple[float, list[float]]:
        """Forward and backward of one micro-batch (its loss scaled for accumulation); returns its loss and each
        sample's correctness."""
        with run.precision.autocast():
            logits = run.wrapped(features.to(self.device)).logits
        targets = targets.to(self.device)
        loss = self._loss(logits, targets)
        run.precision.backward(loss / self.config.grad_accumulation)
        hits = (logits.detach().argmax(-1) == targets.argmax(-1)).float().tolist()
        return loss.item(), hits

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
        if run.ema is not None:
            update_ema(run.ema, self.model, ema_decay_at(config.ema_decay, state["step"]))
        if config.save_every_steps and state["step"] % config.save_every_steps == 0:
            self._save_state(run)

    def _after_epoch(self, run: _Run, metrics: dict, train: tuple[float, float], started: float) -> None:
        config, state, optimizer = self.config, run.state, run.optimizer
        epoch = state["epoch"]
        value = metrics[self.metric]  # None where undefined (e.g. mAP of a validation set of one class)
        improved = _better(value, metrics["loss"], state)
        if improved:
            state["best"], state["best_loss"], state["best_epoch"], state["stale"] = value, metrics["loss"], epoch, 0
            if self.dist.main:
                self._save_model_dir(self._network(run), "best", {"epoch": epoch, "step": state["step"],
                                                                  self.metric: value, **self._weights_note()})
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
        row = {"epoch": epoch, "step": state["step"], "lr": optimizer.param_groups[0]["lr"], "train_loss": train[0],
               "train_accuracy": train[1], "val_loss": metrics["loss"], "val_accuracy": metrics["accuracy"],
               "val_mAP": metrics["mAP"], "val_mAUC": metrics["mAUC"], "val_d_prime": metrics["d_prime"],
               "seconds": round(time.time() - started, 2)}
        state["history"].append(row)
        if self.dist.main:
            self._write_log(state["history"])
            remaining = (config.epochs - epoch) * sum(r["seconds"] for r in state["history"]) / len(state["history"])
            logger.info(
                "epoch %d/%d: train loss %.4f, accuracy %.3f; validation loss %.4f, %s %s%s; lr %.3g; %.1f s, ETA %s",
                epoch, config.epochs, train[0], train[1], metrics["loss"], self.metric,
                "undefined" if value is None else f"{value:.4f}",
                " (best)" if improved else "", row["lr"], row["seconds"], _duration(remaining),
            )

    def _write_log(self, history: list[dict]) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]))
        writer.writeheader()
        writer.writerows(history)
        atomic_write_text(os.path.join(self.output_dir, "metrics.csv"), buffer.getvalue())

    def _network(self, run: _Run) -> ASTForAudioClassification:
        """The model whose weights best/ and final/ save (run.scored, outside DDP's wrapper)."""
        return run.ema if run.ema is not None else self.model

    def _weights_note(self) -> dict[str, Any]:
        """What trainer_state.json adds about the saved weights: the moving average's decay, when they are it."""
        return {"ema_decay": self.config.ema_decay} if self.config.ema_decay else {}

    def _finish(self, run: _Run) -> dict[str, Any]:
        """final/ (the last epoch's weights, or their moving average), averaged/ (with weight averaging),
        results.json with the metrics of the selected model (averaged, else best/)."""
        state = run.state
        results: dict[str, Any] = {"best_epoch": state["best_epoch"], f"best_validation_{self.metric}": state["best"]}
        if self.dist.main:
            self._save_model_dir(self._network(run), "final", {"epoch": state["epoch"], "step": state["step"],
                                                               **self._weights_note()})
        selected = ASTForAudioClassification.from_pretrained(os.path.join(self.output_dir, "best")).to(self.device)
        if state["average"] is not None and state["averaged"]:
            averaged = {k: v / state["averaged"] for k, v in state["average"].items()}
            self.model.load_state_dict(averaged)
            selected = self.model
            if self.dist.main:
                self._save_model_dir(self.model, "averaged", {"averaged_epochs": state["averaged"]})
            results["averaged_epochs"] = state["averaged"]
        self.dist.barrier()
        results["validation"] = self.evaluate(selected, self.data.validation)
        if self.data.test:
            results["test"] = self.evaluate(selected, self.data.test)
        if self.dist.main:
            atomic_write_text(os.path.join(self.output_dir, "results.json"),
                              json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
        return results


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training at a step's end, after saving a resumable checkpoint."""


class _StopRequests:
    requested = False


@contextlib.contextmanager
def _stop_requests():
    """SIGINT and SIGTERM ask the loop to stop at the end of the current optimizer step (in the main thread)."""
    stop = _StopRequests()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def request(signum, frame) -> None:
        stop.requested = True

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _better(value: float | None, loss: float, state: dict[str, Any]) -> bool:
    """Whether an epoch with validation metric `value` (None: undefined) and loss `loss` beats the best so far.

    A higher metric wins; an equal one wins with a validation loss lower by more than LOSS_TIE_BREAK (a small
    validation set's accuracy saturates early: keeping the first epoch to reach it kept an undertrained
    model, measured in the README's training-from-scratch notes). The first epoch is the best so far even
    when its metric is undefined, so best/ always exists."""
    if state["best_epoch"] is None:
        return True
    if value is None:
        return False
    if state["best"] is None or value > state["best"]:
        return True
    best_loss = state.get("best_loss")
    return value == state["best"] and best_loss is not None and loss < best_loss * (1 - LOSS_TIE_BREAK)


def steps_per_epoch(clips: int, config: TrainConfig) -> int:
    """Optimizer steps in one epoch over `clips` training clips: whole micro-batches (a last partial one only
    when the data is smaller than one), grouped by grad_accumulation; at least 1."""
    micro_batch = config.batch_size // config.grad_accumulation
    batches = clips // micro_batch if clips >= micro_batch else 1
    return max(1, batches // config.grad_accumulation)


def loss_of_scores(scores: np.ndarray, targets: np.ndarray, loss_kind: str) -> float:
    """The training loss computed from scores (sigmoid for BCE, softmax for cross-entropy) and targets."""
    p = np.clip(scores.astype(np.float64), 1e-12, 1 - 1e-12)
    if loss_kind == "bce":
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    return float(-np.mean(np.sum(targets * np.log(p), axis=1)))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"
