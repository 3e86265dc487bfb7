"""Does a self-supervised pass over the user's own unlabelled audio give scratch_keywords a better start?

On bench_train_small's keyword set (10 espeak-ng words, 8 voices to train, 3 unseen voices to test), for each
seed:
1. pretrain the scratch_keywords-sized encoder by masked patch modelling (SSAST, Gong et al. 2022, "SSAST:
   Self-Supervised Audio Spectrogram Transformer") on the TRAINING clips only, read without their labels (the
   test voices are never seen): MASK of the 64 non-overlapping 16x16 patches of each clip are replaced by a
   learned mask token, and the encoder's output at each masked position must both pick its own patch among
   the clip's masked patches (InfoNCE, the discriminative loss) and reconstruct it (mean squared error, the
   generative loss, weighted 10 as in SSAST). The clips get the recipe's speaker augmentation (frequency warp,
   time shift), not SpecAugment (the masking takes its place). The encoder is saved as an AST checkpoint
   with a 2-label head, so `train --init` keeps the encoder and re-initialises the head;
2. fine-tune with the same recipe and seed as a user would (`ast-audio stats`, then `ast-audio train RECIPE
   --init PRETRAINED`), beside the same command from scratch;
3. report held-out accuracy on the unseen voices (the checkpoint chosen on the 20% validation split),
   training accuracy, wall time, and a linear probe (logistic regression on the mean of the patch tokens'
   final states) on the random and on the pretrained encoder before any fine-tuning.

The recipe (scratch_keywords) is copied into the work folder once, so every run of a measurement trains with
the same settings even while the shipped recipe changes.

    python benchmarks/bench_pretrain_small.py [--seeds 0 1 2] [--pretrain-steps 1500] [--mask 24] [--jobs 2]
                                              [--work DIR] [--threads N]

--jobs 2 runs two fine-tuning commands at once (each with threads / 2, as the pretraining), the runs from
scratch alongside the pretraining: wall times are then contended and the fine-tuning runs' CPU s are not
measured. Needs espeak-ng (apt-get install espeak-ng). Timings name the CPU.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

RECIPE = "scratch_keywords"
GENERATIVE_WEIGHT = 10.0  # SSAST's weight of the reconstruction loss beside InfoNCE
CURVE_STEPS = (1000, 2000, 4000)  # the fine-tuning runs' validation accuracy reported at these steps


def masked_patch_loss(model, heads, mask_token, features, masked):
    """SSAST's joint loss for one batch; returns (loss, InfoNCE accuracy).

    model: ASTForAudioClassification; heads: (discriminative, generative) modules hidden -> patch_size**2;
    mask_token: (hidden,); features: normalised fbank (batch, frames, mel bins); masked: patch indices
    (batch, M) in the model's token order (frequency-major). Needs frequency and time strides equal to the
    patch size (non-overlapping patches), so each token has one target patch.
    """
    import torch
    import torch.nn.functional as F

    encoder = model.audio_spectrogram_transformer
    embeddings = encoder.embeddings
    size = model.config.patch_size
    image = features.transpose(1, 2).unsqueeze(1)  # (B, 1, mel, frames), as the patch embedding sees it
    targets = F.unfold(image, kernel_size=size, stride=size).transpose(1, 2)  # (B, patches, size*size)
    tokens = embeddings.patch_embeddings(features)
    is_masked = torch.zeros(tokens.shape[:2], dtype=torch.bool).scatter_(1, masked, True)
    tokens = torch.where(is_masked.unsqueeze(-1), mask_token.to(tokens.dtype), tokens)
    batch = tokens.shape[0]
    tokens = torch.cat((embeddings.cls_token.expand(batch, -1, -1),
                        embeddings.distillation_token.expand(batch, -1, -1), tokens), dim=1)
    hidden, _, _ = encoder.encoder(embeddings.dropout(tokens + embeddings.position_embeddings))
    states = encoder.layernorm(hidden)[:, 2:]
    index = masked.unsqueeze(-1)
    states = states.gather(1, index.expand(-1, -1, states.shape[-1]))  # (B, M, hidden)
    targets = targets.gather(1, index.expand(-1, -1, targets.shape[-1]))  # (B, M, size*size)
    discriminative, generative = heads
    similarity = discriminative(states) @ targets.transpose(1, 2)  # (B, M, M): each prediction vs each patch
    own = torch.arange(masked.shape[1]).expand(batch, -1)
    nce = F.cross_entropy(similarity.flatten(0, 1), own.flatten())
    mse = F.mse_loss(generative(states), targets)
    accuracy = float((similarity.argmax(-1) == own).float().mean())
    return nce + GENERATIVE_WEIGHT * mse, accuracy


def _head(hidden: int, out: int):
    import torch

    return torch.nn.Sequential(torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out))


def _new_model(recipe, num_labels: int, seed: int):
    import torch

    from ast_audio.model.configuration import ASTConfig
    from ast_audio.model.modeling import ASTForAudioClassification

    torch.manual_seed(seed)
    return ASTForAudioClassification(ASTConfig(
        **recipe.model, max_length=recipe.frames, frequency_stride=recipe.frequency_stride,
        time_stride=recipe.time_stride, num_mel_bins=recipe.num_mel_bins, num_labels=num_labels))


def pretrain(recipe, paths: list[str], stats: dict, out_dir: str, steps: int, mask: int, batch: int,
             seed: int) -> dict:
    """Masked patch pretraining of the recipe's encoder on `paths` (no labels); saves an AST checkpoint with a
    2-label head to `out_dir`. AdamW at the recipe's rate and weight decay, 100 warmup steps, cosine decay per
    step. Returns CPU and wall seconds and the loss and InfoNCE accuracy over the first and last 100 steps."""
    import torch

    from ast_audio.features.extractor import ASTFeatureExtractor
    from ast_audio.training.config import TrainConfig
    from ast_audio.training.data import AugmentConfig, Clip, ClipDataset
    from ast_audio.training.optimization import lr_at

    if recipe.frequency_stride != recipe.model.get("patch_size", 16) or recipe.time_stride != recipe.frequency_stride:
        raise SystemExit(f"{RECIPE}: masked patch pretraining needs non-overlapping patches (strides 16), got "
                         f"{recipe.frequency_stride}x{recipe.time_stride}")
    model = _new_model(recipe, 2, seed).train()
    hidden, size = model.config.hidden_size, model.config.patch_size
    heads = (_head(hidden, size * size), _head(hidden, size * size))
    mask_token = torch.nn.Parameter(torch.zeros(hidden).normal_(0, model.config.initializer_range))
    parameters = [*model.audio_spectrogram_transformer.parameters(), *heads[0].parameters(),
                  *heads[1].parameters(), mask_token]
    optimizer = torch.optim.AdamW(parameters, lr=recipe.lr, betas=(0.95, 0.999), weight_decay=recipe.weight_decay)
    extractor = ASTFeatureExtractor(max_length=recipe.frames, num_mel_bins=recipe.num_mel_bins, mean=stats["mean"],
                                    std=stats["std"])
    data = ClipDataset([Clip(path, []) for path in paths], 1, extractor,
                       AugmentConfig(warp=recipe.warp, shift=recipe.shift), training=True, seed=seed)
    schedule = TrainConfig(train=recipe.train, lr=recipe.lr, warmup_steps=100, lr_schedule="cosine", epochs=1)
    rng = np.random.default_rng(seed)
    patches = model.config.num_patches
    log: list[tuple[float, float]] = []
    wall, cpu = time.perf_counter(), time.process_time()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(schedule, step, 0, steps)
        features = torch.stack([data[(int(i), step)][0] for i in rng.integers(0, len(paths), batch)])
        masked = torch.from_numpy(np.stack([rng.permutation(patches)[:mask] for _ in range(batch)]))
        loss, accuracy = masked_patch_loss(model, heads, mask_token, features, masked)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((float(loss.detach()), accuracy))
        if (step + 1) % 250 == 0:
            print(f"pretraining step {step + 1}: loss {np.mean(log[-250:], 0)[0]:.3f}, masked patch found "
                  f"{np.mean(log[-250:], 0)[1]:.2f}", file=sys.stderr, flush=True)
    result = {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall, "steps": steps,
              "first": np.mean(log[:100], 0).tolist(), "last": np.mean(log[-100:], 0).tolist()}
    model.eval().save_pretrained(out_dir)
    extractor.save_pretrained(out_dir)
    return result


def probe_features(model, recipe, paths: list[str], stats: dict):
    """Each clip's mean over the patch tokens' final states (clips, hidden), no augmentation."""
    import torch

    from ast_audio.audio.decode import load_audio
    from ast_audio.features.extractor import ASTFeatureExtractor

    extractor = ASTFeatureExtractor(max_length=recipe.frames, num_mel_bins=recipe.num_mel_bins, mean=stats["mean"],
                                    std=stats["std"])
    rows = []
    with torch.no_grad():
        for start in range(0, len(paths), 32):
            audio = [load_audio(p, extractor.sampling_rate) for p in paths[start:start + 32]]
            inputs = extractor(audio, sampling_rate=extractor.sampling_rate, return_tensors="pt")["input_values"]
            states = model.eval().audio_spectrogram_transformer.forward_features(inputs)  # (B, tokens, hidden)
            rows.append(states[:, 2:].mean(1).numpy())
    return np.concatenate(rows)


def linear_probe(model, recipe, stats: dict, train: tuple[list, list], test: tuple[list, list]) -> tuple[float, float]:
    """(held-out, training) accuracy of bench_train_small's logistic regression on probe_features."""
    from bench_train_small import logistic_accuracy

    return logistic_accuracy(probe_features(model, recipe, train[0], stats), train[1],
                             probe_features(model, recipe, test[0], stats), test[1])


def validation_curve(run_dir: str, steps: tuple[int, ...] = CURVE_STEPS) -> str:
    """Validation accuracy of the first epoch ending at or after each of `steps` (metrics.csv of a train
    run), as "0.17/0.33/0.67": how soon a run leaves the plateau near chance."""
    import csv

    with open(os.path.join(run_dir, "metrics.csv"), encoding="utf-8") as handle:
        epochs = list(csv.DictReader(handle))
    values = [next((e["val_accuracy"] for e in epochs if int(e["step"]) >= step), "") for step in steps]
    return "/".join(f"{float(value):.2f}" if value else "-" for value in values)


# --------------------------------------------------------------------------------------------------- main
def _prepare(work: str) -> tuple[str, str, str, str]:
    """The keyword set, the recipe's copy and the training set's stats in `work`: (train, test, recipe, stats)."""
    from bench_train_small import make_keywords

    from ast_audio.training.config import resolve_recipe

    train_dir, test_dir = os.path.join(work, "keywords", "train"), os.path.join(work, "keywords", "test")
    if not os.path.isdir(train_dir):
        make_keywords(os.path.join(work, "keywords"))
    recipe_path = os.path.join(work, f"{RECIPE}.yaml")
    if not os.path.isfile(recipe_path):
        shutil.copy(resolve_recipe(RECIPE), recipe_path)
    stats_path = os.path.join(work, "stats.json")
    if not os.path.isfile(stats_path):
        subprocess.run([sys.executable, "-m", "ast_audio", "stats", train_dir, "-o", stats_path, "-q"], check=True)
    return train_dir, test_dir, recipe_path, stats_path


def _pretrain_seed(recipe, seed: int, args, sets: dict, stats: dict) -> tuple[str, list[list]]:
    """Pretrain for one seed; returns the checkpoint and the probe rows (random, pretrained encoder)."""
    checkpoint = os.path.join(args.work, f"pretrained_seed{seed}")
    result = pretrain(recipe, sets["train"][0], stats, checkpoint, args.pretrain_steps, args.mask, args.batch, seed)
    print(f"seed {seed}: pretrained {result['steps']} steps in {result['cpu']:.0f} CPU s ({result['wall']:.0f} s "
          f"wall); loss {result['first'][0]:.3f} -> {result['last'][0]:.3f}, masked patch found among {args.mask} "
          f"{result['first'][1]:.2f} -> {result['last'][1]:.2f}", flush=True)
    from ast_audio.model.modeling import ASTForAudioClassification

    rows = []
    for name, model in (("random", _new_model(recipe, 2, seed)),
                        ("pretrained", ASTForAudioClassification.from_pretrained(checkpoint))):
        held_out, training = linear_probe(model, recipe, stats, sets["train"], sets["test"])
        rows.append([seed, f"linear probe on the {name} encoder (mean of patch states)", held_out, training, "",
                     result["wall"] if name == "pretrained" else 0.0, result["cpu"] if name == "pretrained" else 0.0])
    return checkpoint, rows


def run_all(args, recipe, recipe_path: str, folders: tuple[str, str], sets: dict, stats: dict) -> list[list]:
    """Every seed's pretraining (in this process) and fine-tuning runs (`args.jobs` commands at once, started
    as soon as their start exists: the runs from scratch alongside the pretraining). Returns the table's rows."""
    from bench_train_small import train_recipe

    extra = [item for pair in args.set for item in ("--set", pair)]
    threads = max(1, args.threads // args.jobs)

    def fine_tune(seed: int, name: str, init: str) -> list:
        run_dir = os.path.join(args.work, f"{name}_seed{seed}")
        result = train_recipe(recipe_path, *folders, run_dir, threads,
                              ["--init", init, "--set", f"seed={seed}", *extra])
        row = [seed, f"{RECIPE} from {name} ({result['steps']} steps)", result["test"], result["train"],
               validation_curve(os.path.join(run_dir, "run")), result["wall"],
               result["cpu"] if args.jobs == 1 else float("nan")]  # children's CPU mixes when jobs > 1
        print(row, flush=True)
        return row

    rows, futures = [], []
    with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
        for seed in args.seeds:
            if args.jobs > 1:
                futures.append(pool.submit(fine_tune, seed, "scratch", "scratch"))
            checkpoint, probe_rows = _pretrain_seed(recipe, seed, args, sets, stats)
            rows += probe_rows
            if args.jobs == 1:
                futures.append(pool.submit(fine_tune, seed, "scratch", "scratch"))
            futures.append(pool.submit(fine_tune, seed, "pretrained", checkpoint))
        rows += [future.result() for future in futures]
    return rows


def main() -> None:
    from bench_train_small import _clips
    from table import cpu_name, print_table

    from ast_audio.training.config import load_train_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=1500)
    parser.add_argument("--mask", type=int, default=24, help="masked patches per clip (of 64)")
    parser.add_argument("--batch", type=int, default=32, help="pretraining batch")
    parser.add_argument("--jobs", type=int, default=1, help="fine-tuning commands run at once")
    parser.add_argument("--work", help="folder for the set, checkpoints and runs (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to every ast-audio train (e.g. min_steps=2000 for a quick look)")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed (apt-get install espeak-ng): the keyword set needs it")
    args.work = args.work or tempfile.mkdtemp(prefix="bench_pretrain_small_")
    import torch

    # The pretraining shares the cores with the fine-tuning jobs; two threads per process on a busy machine
    # spent most of their time spinning (0.8 CPU s per pretraining step against 0.09 s with one).
    torch.set_num_threads(max(1, args.threads // args.jobs))
    train_dir, test_dir, recipe_path, stats_path = _prepare(args.work)
    recipe = load_train_config(recipe_path, {"train": train_dir})
    with open(stats_path, encoding="utf-8") as handle:
        stats = json.load(handle)
    sets = {"train": _clips(train_dir), "test": _clips(test_dir)}
    rows = run_all(args, recipe, recipe_path, (train_dir, test_dir), sets, stats)
    print(f"CPU: {cpu_name()}, {args.threads} threads, {args.jobs} fine-tuning job(s) at once; pretraining "
          f"{args.pretrain_steps} steps of {args.batch} clips, {args.mask} of 64 patches masked; "
          f"work folder {args.work}")
    curve = "val. " + "/".join(f"{step // 1000}k" for step in CURVE_STEPS)
    print_table([("seed", 4, "d"), ("start", 64, "s"), ("held-out", 8, ".3f"), ("train", 6, ".3f"), (curve, 14, "s"),
                 ("wall s", 7, ".0f"), ("CPU s", 6, ".0f")], rows)
    by_start = {name: [row[2] for row in rows if row[1].startswith(f"{RECIPE} from {name}")]
                for name in ("scratch", "pretrained")}
    print("mean held-out: " + ", ".join(f"{name} {np.mean(values):.3f}" for name, values in by_start.items()))


if __name__ == "__main__":
    main()
