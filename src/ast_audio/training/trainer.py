"""The fine-tuning loop: the release's recipe (Adam, warmup, step decay, mixup, SpecAugment, weight
averaging) with resumable checkpoints, early stopping, and DistributedDataParallel under torchrun."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ast_audio.model.configuration import ASTConfig
from ast_audio.features.extractor import ASTFeatureExtractor
from ast_audio.io_utils import atomic_path, atomic_write_text
from ast_audio.model.modeling import ASTForAudioClassification
from ast_audio.training.config import TrainConfig
from ast_audio.training.data import (
    AugmentConfig,
    Clip,
    ClipDataset,
    DataError,
    EpochBatchSampler,
    FeatureConfig,
    LabelSpace,
    balanced_weights,
    check_files,
    collate,
    folder_clips,
    manifest_clips,
    seeded_split,
)
from ast_audio.checkpoints.adaptation import init_from_ast, init_from_timm
from ast_audio.training.metrics import evaluate_predictions

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.pt"


# ------------------------------------------------------------------------------------------------ data
def load_clips(source: str, labels: LabelSpace | None) -> tuple[list[Clip], LabelSpace]:
    """Clips and labels from a class-per-folder directory, a JSON manifest or a CSV."""
    if os.path.isdir(source):
        clips, found = folder_clips(source)
        if labels is not None and labels.names != found.names:
            missing = sorted(set(found.names) - set(labels.names))
            if missing:
                raise DataError(f"{source}: classes {missing} are not among the training classes {labels.names}")
            lookup = {name: i for i, name in enumerate(labels.names)}
            clips = [Clip(c.path, [lookup[found.names[c.labels[0]]]]) for c in clips]
            return clips, labels
        return clips, found
    if not os.path.isfile(source):
        raise DataError(f"{source}: no such file or folder")
    return manifest_clips(source, labels)


@dataclass
class DataSplits:
    train: list[Clip]
    validation: list[Clip]
    test: list[Clip] | None
    labels: LabelSpace
    multi_label: bool


def prepare_data(config: TrainConfig) -> DataSplits:
    """Read and check every split before any model is built: missing files and unknown labels fail here."""
    labels = LabelSpace.from_csv(config.labels_csv) if config.labels_csv else None
    train, labels = load_clips(config.train, labels)
    if config.validation:
        validation, _ = load_clips(config.validation, labels)
    else:
        train, validation = seeded_split(train, config.validation_fraction, config.seed)
    test = load_clips(config.test, labels)[0] if config.test else None
    for name, clips in (("train", train), ("validation", validation), ("test", test)):
        if clips is not None:
            check_files(clips, f"{name} data ({getattr(config, name) or config.train})")
    multi_label = any(len(clip.labels) != 1 for clip in train)
    return DataSplits(train, validation, test, labels, multi_label)


@torch.no_grad()
def score_clips(
    model: ASTForAudioClassification, clips: list[Clip], num_labels: int, features: FeatureConfig, multi_label: bool,
    batch_size: int, device: torch.device, num_workers: int = 0, indices: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores (sigmoid for multi-label, softmax otherwise) and targets of `clips` (or those at `indices`)."""
    dataset = ClipDataset(clips, num_labels, features, training=False)
    if indices is not None:
        dataset = torch.utils.data.Subset(dataset, indices)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate, num_workers=num_workers)
    was_training = model.training
    model.eval()
    scores, targets = [np.zeros((0, num_labels), np.float32)], [np.zeros((0, num_labels), np.float32)]
    for batch, target in loader:
        logits = model(batch.to(device)).logits.float()
        scores.append((torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)).cpu().numpy())
        targets.append(target.numpy())
    model.train(was_training)
    return np.concatenate(scores), np.concatenate(targets)


# ------------------------------------------------------------------------------------------- helpers
@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: torch.device) -> "Distributed":
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        if world_size <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


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


def _autocast(config: TrainConfig, device: torch.device):
    precision = config.precision
    if precision == "auto":
        if device.type != "cuda":
            return torch.autocast(device.type, enabled=False), None
        precision = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if precision == "float32":
        return torch.autocast(device.type, enabled=False), None
    dtype = torch.bfloat16 if precision == "bfloat16" else torch.float16
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 and device.type == "cuda" else None
    return torch.autocast(device.type, dtype=dtype), scaler


class Trainer:
    """Runs `TrainConfig` to a checkpoint directory: best/, averaged/ (if asked), final/, metrics."""

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        from ast_audio.inference.backends import resolve_device

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
        self.features = FeatureConfig(
            num_mel_bins=config.num_mel_bins, target_length=config.target_length, mean=config.mean, std=config.std
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
            problem_type="multi_label_classification" if self.data.multi_label else "single_label_classification",
        )
        init = config.init
        if init not in ("scratch", "") and not init.startswith("timm:"):
            # Take the encoder's shape from the checkpoint; the input geometry and head from this run.
            source = ASTConfig.from_pretrained(init)
            for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                         "hidden_act", "layer_norm_eps", "patch_size", "qkv_bias"):
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
        ASTFeatureExtractor(
            num_mel_bins=self.config.num_mel_bins, max_length=self.config.target_length, mean=self.config.mean,
            std=self.config.std,
        ).save_pretrained(directory)
        return directory

    def _save_state(self, state: dict[str, Any]) -> None:
        with atomic_path(os.path.join(self.output_dir, LAST_CHECKPOINT)) as tmp:
            torch.save(state, tmp)

    def _load_state(self) -> dict[str, Any] | None:
        path = os.path.join(self.output_dir, LAST_CHECKPOINT)
        if not os.path.isfile(path):
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    # ---------------------------------------------------------------------------------- evaluation
    def predict(self, model: torch.nn.Module, clips: list[Clip]) -> tuple[np.ndarray, np.ndarray]:
        """Scores and targets for `clips`, each process scoring its share, gathered on every process."""
        mine = list(range(self.dist.rank, len(clips), self.dist.world_size))
        network = model.module if hasattr(model, "module") else model
        scores, targets = score_clips(
            network, clips, len(self.data.labels), self.features, self.data.multi_label,
            self.config.eval_batch_size, self.device, self.config.num_workers, indices=mine,
        )
        if self.dist.world_size == 1:
            return scores, targets
        gathered: list = [None] * self.dist.world_size
        dist.all_gather_object(gathered, (mine, scores, targets))
        order = np.concatenate([np.array(g[0], dtype=int) for g in gathered])
        inverse = np.argsort(order)
        return np.concatenate([g[1] for g in gathered])[inverse], np.concatenate([g[2] for g in gathered])[inverse]

    def evaluate(self, model: torch.nn.Module, clips: list[Clip]) -> dict[str, Any]:
        scores, targets = self.predict(model, clips)
        return evaluate_predictions(scores, targets, self.data.labels.names)

    # ------------------------------------------------------------------------------------- training
    def _loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.loss_kind == "bce":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        return torch.nn.functional.cross_entropy(logits, targets)  # soft targets keep mixup's proportions

    def train(self, resume: bool = True) -> dict[str, Any]:
        """Train to the end (or to max_steps); returns the final metrics. Resumes from last.pt when present."""
        config = self.config
        model = self.model
        trainable = [p for p in model.parameters() if p.requires_grad]
        if config.optimizer == "sgd":
            optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                                        weight_decay=config.weight_decay)
        else:
            optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
            optimizer = optimizer_class(trainable, lr=config.lr, betas=tuple(config.betas),
                                        weight_decay=config.weight_decay)
        wrapped = model
        if self.dist.world_size > 1:
            wrapped = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        autocast, scaler = _autocast(config, self.device)

        augment = AugmentConfig(config.mixup, config.freqm, config.timem, config.noise, config.gain_db)
        dataset = ClipDataset(self.data.train, len(self.data.labels), self.features, augment, training=True,
                              seed=config.seed)
        # Each optimizer step accumulates grad_accumulation micro-batches that together make one global batch.
        micro_batch = config.batch_size // config.grad_accumulation
        sampler = EpochBatchSampler(
            len(dataset), micro_batch, seed=config.seed,
            weights=balanced_weights(self.data.train, len(self.data.labels)) if config.balanced_sampling else None,
            rank=self.dist.rank, world_size=self.dist.world_size, drop_last=len(dataset) >= micro_batch,
        )
        steps_per_epoch = max(1, len(sampler) // config.grad_accumulation)
        # Micro-batches left over at the end of an epoch would mix into the next epoch's first step: skip them.
        batches_per_epoch = steps_per_epoch * config.grad_accumulation
        state = {"epoch": 0, "batch": 0, "step": 0, "best": None, "best_epoch": None, "stale": 0,
                 "average": None, "averaged": 0, "history": []}
        saved = self._load_state() if resume else None
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            torch.set_rng_state(saved["torch_rng"])
            state.update({k: saved[k] for k in state})
            if self.dist.main:
                logger.info("resuming from epoch %d, batch %d (step %d)", state["epoch"] + 1, state["batch"], state["step"])

        def checkpoint() -> None:
            if self.dist.main:
                self._save_state({
                    **state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict() if scaler is not None else None, "torch_rng": torch.get_rng_state(),
                    "config": config.to_dict(),
                })
            if self.dist.world_size > 1:
                dist.barrier()

        if self.dist.main:
            atomic_write_text(os.path.join(self.output_dir, "train_config.json"), json.dumps(config.to_dict(), indent=2))
        from tqdm import tqdm

        wrapped.train()
        while state["epoch"] < config.epochs:
            epoch = state["epoch"]
            sampler.epoch, sampler.skip_batches = epoch, state["batch"]
            loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                                 num_workers=config.num_workers)
            started = time.time()
            losses = []
            bar = tqdm(total=batches_per_epoch, initial=state["batch"], desc=f"epoch {epoch + 1}/{config.epochs}",
                       unit="batch", file=sys.stderr, disable=not (self.dist.main and sys.stderr.isatty()))
            for features, targets in loader:
                if state["batch"] >= batches_per_epoch:
                    break
                with autocast:
                    logits = wrapped(features.to(self.device)).logits
                loss = self._loss(logits, targets.to(self.device)) / config.grad_accumulation
                (scaler.scale(loss) if scaler else loss).backward()
                losses.append(loss.item() * config.grad_accumulation)
                state["batch"] += 1
                bar.update(1)
                if state["batch"] % config.grad_accumulation:
                    continue
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(config, state["step"], epoch, steps_per_epoch)
                if scaler:
                    scaler.unscale_(optimizer)
                if config.max_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                if config.save_every_steps and state["step"] % config.save_every_steps == 0:
                    checkpoint()
                if config.max_steps and state["step"] >= config.max_steps:
                    bar.close()
                    checkpoint()
                    return {"stopped_at_step": state["step"]}
            bar.close()
            train_loss = float(np.mean(losses)) if losses else float("nan")
            if self.dist.world_size > 1:  # the mean over every process's batches
                totals = torch.tensor([sum(losses), len(losses)], dtype=torch.float64)
                dist.all_reduce(totals)
                train_loss = (totals[0] / totals[1]).item() if totals[1] else float("nan")
            metrics = self.evaluate(wrapped, self.data.validation)
            state["epoch"], state["batch"] = epoch + 1, 0
            self._after_epoch(state, metrics, train_loss, optimizer, started)
            checkpoint()
            if config.early_stopping_patience and state["stale"] >= config.early_stopping_patience:
                if self.dist.main:
                    logger.warning("early stopping after epoch %d: no %s improvement in %d epochs",
                                   epoch + 1, self.metric, state["stale"])
                break
        return self._finish(state)

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
            logger.info("epoch %d: train loss %.4f, validation %s %.4f%s", epoch, train_loss, self.metric, value,
                        " (best)" if improved else "")

    def _write_log(self, history: list[dict]) -> None:
        import io

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
        if self.dist.world_size > 1:
            dist.barrier()
        results["validation"] = self.evaluate(final_model, self.data.validation)
        if self.data.test:
            results["test"] = self.evaluate(final_model, self.data.test)
        if self.dist.main:
            self._save_model_dir(final_model, "final")
            atomic_write_text(os.path.join(self.output_dir, "results.json"), json.dumps(results, indent=2) + "\n")
        return results
