"""Fine-tuning: convergence, exact resume, torchrun equivalence, initialisation, metrics and bad data."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, CheckpointError, load_audio
from ast_audio.cli import main
from ast_audio.errors import UsageError
from ast_audio.training.config import TrainConfig, load_train_config, parse_overrides
from ast_audio.training.data import (
    AugmentConfig,
    Clip,
    ClipDataset,
    DataError,
    EpochBatchSampler,
    balanced_weights,
    frequency_warp,
)
from ast_audio.checkpoints.adaptation import adapt_position_embeddings, init_from_ast, init_from_timm
from ast_audio.training.metrics import d_prime, evaluate_predictions
from ast_audio.training.optimization import ema_decay_at, lr_at, update_ema
from ast_audio.training.trainer import Trainer
from helpers import SMALL, randomize_

RATE = 16000
TINY = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three classes that a tiny model separates easily: a low tone, a high tone, and noise (0.5 s clips)."""
    root = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    t = np.arange(RATE // 2) / RATE
    for name, freq in (("high", 2500), ("low", 300), ("noise", 0)):
        (root / name).mkdir()
        for i in range(8):
            if freq:
                x = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.1 * rng.random()) * t + rng.random() * 6)
            else:
                x = 0.2 * rng.standard_normal(len(t))
            sf.write(root / name / f"{i}.wav", (x + 0.01 * rng.standard_normal(len(t))).astype(np.float32), RATE)
    return root


def config(dataset, output, **overrides):
    settings = dict(train=str(dataset), validation_fraction=0.25, model=TINY, frames=48, lr=3e-3, epochs=6,
                    batch_size=6, freqm=0, timem=0, lr_schedule="constant", output_dir=str(output), device="cpu")
    settings.update(overrides)
    return TrainConfig.from_dict(settings)


def weights(run_dir):
    return torch.load(os.path.join(run_dir, "last.pt"), weights_only=True)["model"]


def test_small_model_learns_the_classes(dataset, tmp_path):
    trainer = Trainer(config(dataset, tmp_path / "run", epochs=8))
    results = trainer.train()
    import csv

    with open(tmp_path / "run" / "metrics.csv", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    assert list(history[0]) == ["epoch", "step", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                "val_mAP", "val_mAUC", "val_d_prime", "seconds"]
    losses = [float(row["train_loss"]) for row in history]
    assert losses[-1] < losses[0] * 0.7
    assert float(history[-1]["train_accuracy"]) > float(history[0]["train_accuracy"])
    assert float(history[-1]["val_loss"]) < float(history[0]["val_loss"])
    assert results["validation"]["accuracy"] >= 0.9
    for name in ("best", "final"):
        saved = tmp_path / "run" / name
        assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(os.listdir(saved))
    final = ASTForAudioClassification.from_pretrained(tmp_path / "run" / "final")
    assert final.config.id2label == {0: "high", 1: "low", 2: "noise"}
    assert final.config.problem_type == "single_label_classification"
    preprocessor = json.loads((tmp_path / "run" / "final" / "preprocessor_config.json").read_text())
    assert preprocessor["max_length"] == 48 and preprocessor["mean"] == pytest.approx(-4.2677393)


def test_resume_after_a_kill_gives_identical_weights(dataset, tmp_path):
    # Mixup, SpecAugment, noise and gain on, so every random draw has to line up after the restart.
    augment = dict(mixup=0.5, freqm=8, timem=10, noise=True, gain_db=3.0, epochs=3)
    full = Trainer(config(dataset, tmp_path / "full", **augment))
    full.train()
    killed = Trainer(config(dataset, tmp_path / "resumed", max_steps=4, **augment))
    assert killed.train() == {"stopped_at_step": 4}  # mid-epoch 2 (3 steps per epoch)
    resumed = Trainer(config(dataset, tmp_path / "resumed", **augment))
    resumed.train()
    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_torchrun_two_processes_match_one(dataset, tmp_path):
    settings = ["--set", "optimizer=sgd", "--set", "lr=0.01", "--set", "epochs=2", "--device", "cpu",
                "--set", "model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}",
                "--set", "frames=48", "--set", "freqm=0", "--set", "timem=0", "--set", "mixup=0.5",
                "--set", "validation_fraction=0.25", "--batch-size", "6", "--train", str(dataset)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ast_audio.cli",
         "train", "-o", str(tmp_path / "two"), *settings], capture_output=True, text=True, env=env, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, "-m", "ast_audio.cli", "train", "-o", str(tmp_path / "one"), *settings],
                         capture_output=True, text=True, env=env, timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = weights(tmp_path / "two"), weights(tmp_path / "one")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    rows = [(tmp_path / run / "metrics.csv").read_text().splitlines()[1:] for run in ("two", "one")]
    for two_row, one_row in zip(*rows):
        assert float(two_row.split(",")[2]) == pytest.approx(float(one_row.split(",")[2]), rel=1e-5)  # train loss


def test_sampler_shards_each_global_batch():
    single = list(EpochBatchSampler(20, 8, seed=3, epoch=2, drop_last=True))
    ranks = [list(EpochBatchSampler(20, 8, seed=3, epoch=2, rank=r, world_size=2, drop_last=True)) for r in range(2)]
    assert len(single) == 2 and all(len(b) == 4 for r in ranks for b in r)
    for batch, part0, part1 in zip(single, *ranks):
        assert batch == part0 + part1
    resumed = list(EpochBatchSampler(20, 8, seed=3, epoch=2, drop_last=True, skip_batches=1))
    assert resumed == single[1:]
    assert single != list(EpochBatchSampler(20, 8, seed=3, epoch=3, drop_last=True))


def test_balanced_weights_follow_the_release():
    clips = [Clip("a", [0]), Clip("b", [0, 1]), Clip("c", [2])]
    w = balanced_weights(clips, 3)
    np.testing.assert_allclose(w, [1000 / 2.01, 1000 / 2.01 + 1000 / 1.01, 1000 / 1.01])


def test_augmentations_are_seeded_and_shaped(dataset):
    clips = [Clip(str(dataset / "low" / "0.wav"), [1]), Clip(str(dataset / "high" / "0.wav"), [0])]
    features = ASTFeatureExtractor(max_length=48)
    data = ClipDataset(clips, 3, features, AugmentConfig(mixup=1.0, freqm=10, timem=10), training=True, seed=1)
    x1, y1 = data[(0, 0)]
    x2, y2 = data[(0, 0)]
    x3, _ = data[(0, 1)]
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (48, 128) and y1.sum().item() == pytest.approx(1.0) and y1[2] == 0
    masked = (0.0 - features.mean) / (2 * features.std)
    assert (x1 == masked).any()  # SpecAugment zeros the unnormalised fbank
    clean, target = ClipDataset(clips, 3, features, AugmentConfig(mixup=1.0, freqm=10), training=False)[(0, 0)]
    assert target.tolist() == [0.0, 1.0, 0.0] and not (clean == masked).all(dim=1).any()


def test_frequency_warp_moves_a_tone_by_its_factor(dataset):
    """The speaker augmentation: a 1 kHz tone's fbank peak moves to the bin nearest 1.15 kHz under a warp of
    1.15 (and to 870 Hz under 0.87); a factor of 1 changes nothing; the time shift rolls frames."""
    features = ASTFeatureExtractor(max_length=48)
    t = np.arange(RATE // 2) / RATE
    fbank = features.raw_fbank(torch.from_numpy((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)))
    options = features.fbank_options
    nyquist_mel = 1127 * np.log1p(RATE / 2 / 700)
    low_mel = 1127 * np.log1p(20 / 700)
    delta = (nyquist_mel - low_mel) / 129
    centre = lambda b: 700 * np.expm1((low_mel + (b + 1) * delta) / 1127)
    nearest = lambda hz: int(np.argmin([abs(centre(b) - hz) for b in range(128)]))
    assert int(fbank.mean(0).argmax()) == nearest(1000)
    for factor in (1.15, 0.87):
        warped = frequency_warp(fbank, factor, options)
        assert warped.shape == fbank.shape
        assert abs(int(warped.mean(0).argmax()) - nearest(1000 * factor)) <= 1
        assert abs(int(warped.mean(0).argmax()) - nearest(1000)) >= 3
    assert torch.allclose(frequency_warp(fbank, 1.0, options), fbank, atol=1e-5)
    clips = [Clip(str(dataset / "low" / "0.wav"), [1])]
    clean = ClipDataset(clips, 3, features, AugmentConfig(), training=True)[(0, 0)][0]
    shifted = ClipDataset(clips, 3, features, AugmentConfig(shift=20), training=True, seed=3)[(0, 0)][0]
    rolls = [k for k in range(-20, 21) if torch.equal(torch.roll(clean, k, 0), shifted)]
    assert len(rolls) == 1 and rolls[0] != 0
    with pytest.raises(ValueError):
        frequency_warp(fbank, 0.0, options)


@pytest.mark.parametrize("max_length", [48, 400])  # cut, and padded
def test_evaluation_features_are_the_extractors(dataset, max_length):
    """One feature pipeline: without augmentation a training clip's features are exactly what the extractor
    (and so classify) computes for it."""
    path = str(dataset / "low" / "0.wav")
    extractor = ASTFeatureExtractor(max_length=max_length, mean=-5.0, std=3.0)
    features, _ = ClipDataset([Clip(path, [0])], 2, extractor, training=False)[(0, 0)]
    expected = extractor(load_audio(path), sampling_rate=16000, return_tensors="pt")["input_values"][0]
    assert torch.equal(features, expected)


def test_learning_rate_schedule():
    cfg = TrainConfig(train="x", lr=1.0, warmup_steps=4, lr_decay_start=2, lr_decay_every=1, lr_decay=0.5, epochs=5)
    assert [lr_at(cfg, s, 0, 10) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [lr_at(cfg, 100, e, 10) for e in range(5)] == [1.0, 1.0, 0.5, 0.25, 0.125]
    cosine = TrainConfig(train="x", lr=1.0, lr_schedule="cosine", epochs=2)
    assert lr_at(cosine, 0, 0, 10) == 1.0 and lr_at(cosine, 10, 1, 10) == pytest.approx(0.5)


def test_weight_averaging_and_linear_probe(dataset, tmp_path):
    Trainer(config(dataset, tmp_path / "one", epochs=1)).train()
    trainer = Trainer(config(dataset, tmp_path / "two", epochs=2, average_epochs=[1, 2]))
    results = trainer.train()
    assert results["averaged_epochs"] == 2
    first, second = weights(tmp_path / "one"), weights(tmp_path / "two")
    averaged = load_file(tmp_path / "two" / "averaged" / "model.safetensors")
    for key in first:
        torch.testing.assert_close(averaged[key], (first[key] + second[key]) / 2, atol=1e-6, rtol=0)

    probe = Trainer(config(dataset, tmp_path / "probe", epochs=1, freeze_encoder=True))
    before = {k: v.clone() for k, v in probe.model.audio_spectrogram_transformer.state_dict().items()}
    probe.train()
    after = probe.model.audio_spectrogram_transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_moving_average_of_the_weights():
    """update_ema is decay * average + (1 - decay) * model; its decay warms up as (1 + step) / (10 + step)."""
    torch.manual_seed(0)
    model, average = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    expected = {k: 0.75 * v + 0.25 * model.state_dict()[k] for k, v in average.state_dict().items()}
    update_ema(average, model, 0.75)
    for key, value in average.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=1e-7, rtol=0)
    assert ema_decay_at(0.999, 1) == pytest.approx(2 / 11) and ema_decay_at(0.5, 100) == 0.5
    with pytest.raises(ValueError, match="ema_decay is a decay per optimizer step in"):
        load_train_config(None, {"train": "x", "ema_decay": 1.0})


def test_ema_weights_are_saved_scored_and_resumed(dataset, tmp_path):
    """With ema_decay, final/ holds the moving average (not the last step's weights), trainer_state.json says
    so, and a run stopped mid-epoch resumes to the same average as an uninterrupted one."""
    settings = dict(epochs=3, ema_decay=0.8, freqm=8, timem=10)
    Trainer(config(dataset, tmp_path / "full", **settings)).train()
    killed = Trainer(config(dataset, tmp_path / "resumed", max_steps=4, **settings))
    assert killed.train() == {"stopped_at_step": 4}
    Trainer(config(dataset, tmp_path / "resumed", **settings)).train()
    full, resumed = (torch.load(tmp_path / name / "last.pt", weights_only=True) for name in ("full", "resumed"))
    assert all(torch.equal(full["ema"][k], resumed["ema"][k]) for k in full["ema"])
    final = ASTForAudioClassification.from_pretrained(tmp_path / "full" / "final").state_dict()
    assert all(torch.equal(final[k], full["ema"][k]) for k in final)
    assert any(not torch.equal(final[k], full["model"][k]) for k in final)
    state = json.loads((tmp_path / "full" / "final" / "trainer_state.json").read_text())
    assert state["ema_decay"] == 0.8 and state["step"] == 9


def test_position_embedding_cut_and_interpolate_by_hand():
    grid = torch.arange(3 * 4, dtype=torch.float32).reshape(3, 4)  # frequency x time
    pos = torch.cat([torch.tensor([[-1.0], [-2.0]]), grid.reshape(-1, 1)]).reshape(1, 14, 1)
    cut = adapt_position_embeddings(pos, (3, 4), (1, 2))
    assert cut.flatten().tolist() == [-1.0, -2.0, 5.0, 6.0]  # row 1, columns 1-2: the middle
    grown = adapt_position_embeddings(pos, (3, 4), (3, 8))
    expected = torch.nn.functional.interpolate(grid[None, None], size=(3, 8), mode="bilinear")
    assert torch.equal(grown[0, 2:, 0], expected.flatten())
    assert torch.equal(adapt_position_embeddings(pos, (3, 4), (3, 4)), pos)


def test_init_from_ast_with_shorter_input(tmp_path):
    source = randomize_(ASTForAudioClassification(ASTConfig(**SMALL, max_length=128, num_labels=5)))
    source.save_pretrained(tmp_path / "src")
    target = ASTForAudioClassification(ASTConfig(**SMALL, max_length=64, num_labels=3))
    info = init_from_ast(target, tmp_path / "src")
    assert info["mismatched_keys"] == ["classifier.dense.weight", "classifier.dense.bias"]
    old = source.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:].reshape(12, 12, -1)
    new = target.audio_spectrogram_transformer.embeddings.position_embeddings[0, 2:].reshape(12, 5, -1)
    torch.testing.assert_close(new, old[:, 4:9])  # 12 time columns cut to 5 from the middle
    layer = "audio_spectrogram_transformer.encoder.layer.1.output.dense.weight"
    torch.testing.assert_close(target.state_dict()[layer], source.state_dict()[layer])
    with pytest.raises(CheckpointError, match="cannot initialise a model of"):
        init_from_ast(ASTForAudioClassification(ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                          intermediate_size=64, max_length=64)), tmp_path / "src")


def test_init_from_timm_deit_file(tmp_path):
    torch.manual_seed(0)
    dim, grid = 32, 24
    state = {"cls_token": torch.randn(1, 1, dim), "dist_token": torch.randn(1, 1, dim),
             "pos_embed": torch.randn(1, 2 + grid * grid, dim), "patch_embed.proj.weight": torch.randn(dim, 3, 16, 16),
             "patch_embed.proj.bias": torch.randn(dim), "norm.weight": torch.randn(dim), "norm.bias": torch.randn(dim),
             "head.weight": torch.randn(1000, dim), "head.bias": torch.randn(1000),
             "head_dist.weight": torch.randn(1000, dim), "head_dist.bias": torch.randn(1000)}
    for name, shape in (("norm1", (dim,)), ("attn.qkv", (3 * dim, dim)), ("attn.proj", (dim, dim)), ("norm2", (dim,)),
                        ("mlp.fc1", (64, dim)), ("mlp.fc2", (dim, 64))):
        state[f"blocks.0.{name}.weight"] = torch.randn(shape)
        state[f"blocks.0.{name}.bias"] = torch.randn(shape[0])
    torch.save({"model": state}, tmp_path / "deit.pth")
    model = ASTForAudioClassification(ASTConfig(hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=64, max_length=128, num_labels=4))
    info = init_from_timm(model, tmp_path / "deit.pth")
    assert set(info["missing_keys"]) == {"classifier.layernorm.weight", "classifier.layernorm.bias",
                                         "classifier.dense.weight", "classifier.dense.bias"}
    embeddings = model.audio_spectrogram_transformer.embeddings
    torch.testing.assert_close(embeddings.patch_embeddings.projection.weight, state["patch_embed.proj.weight"].sum(1, keepdim=True))
    positions = state["pos_embed"][0, 2:].reshape(grid, grid, dim)
    # 12 frequency rows cut from the middle of 24; 12 time columns cut likewise.
    torch.testing.assert_close(embeddings.position_embeddings[0, 2:].reshape(12, 12, dim), positions[6:18, 6:18])
    query = model.audio_spectrogram_transformer.encoder.layer[0].attention.attention.key.weight
    torch.testing.assert_close(query, state["blocks.0.attn.qkv.weight"][dim: 2 * dim])


def test_metrics_against_hand_computed_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.3], [0.3, 0.6], [0.2, 0.7]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    metrics = evaluate_predictions(scores, targets, ["a", "b"])
    # class a: positives at ranks 1 and 3 -> AP = (1/1 + 2/3) / 2; AUC = 3/4. class b: ranks 1 and 3 -> same.
    assert metrics["per_class_AP"] == {"a": pytest.approx(5 / 6), "b": pytest.approx(5 / 6)}
    assert metrics["mAP"] == pytest.approx(5 / 6) and metrics["mAUC"] == pytest.approx(0.75)
    assert metrics["accuracy"] == pytest.approx(0.5)  # argmax right on rows 1 and 4
    assert metrics["d_prime"] == pytest.approx(d_prime(0.75)) == pytest.approx(0.9538725524)


def test_bad_data_fails_before_training(dataset, tmp_path):
    manifest = tmp_path / "train.csv"
    manifest.write_text(f"path,label\n{dataset}/low/0.wav,low\n{tmp_path}/gone.wav,low\n{dataset}/high/0.wav,high\n")
    with pytest.raises(DataError, match=r"1 of 2 files are missing, e.g. .*gone.wav"):
        Trainer(config(dataset, tmp_path / "r", train=str(manifest), validation_fraction=0.3))
    validation = tmp_path / "valid.csv"
    validation.write_text(f"{dataset}/low/1.wav,low\n{dataset}/noise/1.wav,thunder\n")
    with pytest.raises(DataError, match=r"labels are not in the label list \(e.g. thunder\)"):
        Trainer(config(dataset, tmp_path / "r", validation=str(validation)))
    empty = tmp_path / "folders"
    for name in ("cat", "dog"):
        (empty / name).mkdir(parents=True)
    sf.write(empty / "cat" / "a.wav", np.zeros(8000, np.float32), RATE)
    with pytest.raises(DataError, match="class folder 'dog' holds no audio files"):
        Trainer(config(empty, tmp_path / "r"))
    other = ASTForAudioClassification(ASTConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2,
                                                intermediate_size=64, max_length=48))
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(CheckpointError, match="position_embeddings|cannot initialise"):
        Trainer(config(dataset, tmp_path / "r", init=str(tmp_path / "other"), model={"hidden_size": 32,
                "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}))


def test_config_files_recipes_and_overrides(tmp_path):
    for recipe in ("esc50", "speechcommands", "audioset", "audioset_balanced"):
        loaded = load_train_config(recipe, {"train": "data"})
        assert loaded.train == os.path.abspath("data")  # recorded as the absolute path it resolves to
    esc = load_train_config("esc50", {"train": "x"})
    assert (esc.lr, esc.batch_size, esc.frames, esc.freqm, esc.timem) == (1e-5, 48, 512, 24, 96)
    audioset = load_train_config("audioset", {"train": "x"})
    assert audioset.average_epochs == [1, 5] and audioset.balanced_sampling and audioset.warmup_steps == 1000
    (tmp_path / "c.yaml").write_text("train: data\nmodel: {hidden_size: 64, num_hidden_layers: 2}\nlr: 0.1\n")
    merged = load_train_config(str(tmp_path / "c.yaml"), parse_overrides(["model.hidden_size=32", "lr=1e-3"]))
    assert merged.model == {"hidden_size": 32, "num_hidden_layers": 2} and merged.lr == 1e-3
    with pytest.raises(ValueError, match="unknown setting 'learning_rate'"):
        load_train_config(None, {"train": "x", "learning_rate": 1})
    with pytest.raises(ValueError, match=r"unknown setting 'lrr' \(did you mean 'lr'\?\)"):
        load_train_config(None, {"train": "x", "lrr": 1})
    with pytest.raises(ValueError, match=r"unknown setting 'model.hiden_size' \(did you mean 'model.hidden_size'\?\)"):
        load_train_config(None, {"train": "x", "model": {"hiden_size": 192}})
    with pytest.raises(ValueError, match="'model.max_length' is set by the run: use frames"):
        load_train_config(None, {"train": "x", "model": {"max_length": 100}})
    # One name for the input length (frames, as convert --frames and stats --frames); the old one still reads.
    assert load_train_config(None, {"train": "x", "target_length": 256}).frames == 256
    with pytest.raises(ValueError, match="set the input length once"):
        load_train_config(None, {"train": "x", "target_length": 256, "frames": 128})
    with pytest.raises(ValueError, match="no such config file or recipe"):
        load_train_config("nope", {})


def test_train_and_evaluate_commands(dataset, tmp_path, capsys):
    code = main(["train", "--train", str(dataset), "-o", str(tmp_path / "run"), "--epochs", "2", "--batch-size", "6",
                 "--device", "cpu", "--set", "frames=48", "--set", "freqm=0", "--set", "timem=0",
                 "--set", "model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["best_epoch"] in (1, 2) and "accuracy" in summary["validation"]
    code = main(["evaluate", str(tmp_path / "run" / "final"), str(dataset), "-o", str(tmp_path / "eval.json")])
    assert code == 0
    metrics = json.loads((tmp_path / "eval.json").read_text())
    assert metrics["clips"] == 24 and set(metrics["per_class_AP"]) == {"high", "low", "noise"}
    assert json.loads(capsys.readouterr().out) == metrics


def test_gradient_accumulation_matches_the_full_batch(dataset, tmp_path):
    common = dict(optimizer="sgd", lr=0.01, epochs=2)
    Trainer(config(dataset, tmp_path / "whole", **common)).train()
    Trainer(config(dataset, tmp_path / "accumulated", grad_accumulation=2, **common)).train()
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "accumulated")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


def test_early_stopping_clipping_and_bfloat16(dataset, tmp_path):
    # A learning rate too small to change the metric: no improvement after epoch 1, stop after 1 stale epoch.
    trainer = Trainer(config(dataset, tmp_path / "stop", lr=1e-12, epochs=5, early_stopping_patience=1,
                             max_grad_norm=0.5))
    results = trainer.train()
    rows = (tmp_path / "stop" / "metrics.csv").read_text().splitlines()[1:]
    assert len(rows) == 2 and results["best_epoch"] == 1
    half = Trainer(config(dataset, tmp_path / "bf16", epochs=1, precision="bfloat16"))
    assert half.train()["validation"]["clips"] == 6


def test_gradient_clipping_bounds_each_step(dataset, tmp_path):
    def change(run, **extra):
        trainer = Trainer(config(dataset, tmp_path / run, optimizer="sgd", momentum=0.0, lr=1.0, epochs=1, **extra))
        before = [p.detach().clone() for p in trainer.model.parameters()]
        trainer.train()
        after = weights(tmp_path / run)
        names = [name for name, _ in trainer.model.named_parameters()]
        return torch.sqrt(sum(((after[n] - b) ** 2).sum() for n, b in zip(names, before))).item()

    clipped = change("clipped", max_grad_norm=1e-3)
    assert clipped <= 3 * 1e-3 + 1e-6  # three SGD steps of lr 1 with gradients of norm <= 1e-3
    assert change("unclipped") > 10 * clipped


def test_accumulation_all_reduces_once_per_optimizer_step(dataset, tmp_path):
    """Under DDP the micro-batches of an accumulation step but the last skip the gradient all-reduce (no_sync).

    A one-process gloo group stands in for torchrun; the profiler counts the all-reduces that reach it."""
    import torch.distributed as dist
    from torch.profiler import profile

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        trainer = Trainer(config(dataset, tmp_path / "run", optimizer="sgd", lr=0.01, epochs=1, grad_accumulation=4,
                                 batch_size=8))
        with profile() as prof:
            trainer.train()
    finally:
        dist.destroy_process_group()
    steps = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"]
    reduces = sum(event.name == "c10d::allreduce_" for event in prof.events())
    # 4 micro-batches a step; one gradient all-reduce per step (one bucket for this small model), plus two for
    # the epoch's mean loss and training accuracy. Without no_sync it would be 4 per step.
    assert steps >= 2 and reduces == steps + 2


def test_train_logs_a_line_per_epoch_without_a_terminal(dataset, tmp_path):
    """Off a terminal, without -v, train still says how each epoch went (loss, metric, time) on stderr."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "ast_audio", "train", "--train", str(dataset), "-o", str(tmp_path / "run"), "--epochs",
         "2", "--batch-size", "6", "--device", "cpu", "--set", "frames=48", "--set", "freqm=0", "--set",
         "timem=0", "--set", "model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 64}"],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    epochs = [line for line in done.stderr.splitlines() if "epoch " in line and "train loss" in line]
    assert len(epochs) == 2 and "epoch 1/2: train loss" in epochs[0]
    assert "validation loss" in epochs[0] and ", accuracy " in epochs[0] and "; lr " in epochs[0]
    assert epochs[1].rstrip().endswith("ETA 0 s")


def test_resume_refuses_changed_settings_and_allows_more_epochs(dataset, tmp_path):
    Trainer(config(dataset, tmp_path / "run", epochs=2)).train()
    with pytest.raises(UsageError, match=r"other settings \(lr: 0.003 -> 0.01\).*--no-resume"):
        Trainer(config(dataset, tmp_path / "run", epochs=2, lr=0.01)).train()
    results = Trainer(config(dataset, tmp_path / "run", epochs=3)).train()  # more epochs: goes on
    assert json.loads((tmp_path / "run" / "final" / "trainer_state.json").read_text())["epoch"] == 3
    assert results["best_epoch"] in (1, 2, 3)


def test_final_is_the_last_epoch_and_best_says_which(dataset, tmp_path):
    """best/ keeps the selected epoch (with which in trainer_state.json) and final/ the last."""
    trainer = Trainer(config(dataset, tmp_path / "run", epochs=6, lr=1e-2))
    trainer.train()
    best = json.loads((tmp_path / "run" / "best" / "trainer_state.json").read_text())
    final = json.loads((tmp_path / "run" / "final" / "trainer_state.json").read_text())
    assert final["epoch"] == 6 and best["checkpoint"] == "best" and "accuracy" in best
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    saved = ASTForAudioClassification.from_pretrained(tmp_path / "run" / "final").state_dict()
    assert all(torch.equal(saved[k], last[k]) for k in saved)  # final/ = the last epoch's weights
    # The selected epoch has the highest validation accuracy, ties going to the lower validation loss; here
    # that is before the last epoch.
    import csv

    with open(tmp_path / "run" / "metrics.csv", encoding="utf-8") as handle:
        history = list(csv.DictReader(handle))
    ranked = max(history, key=lambda row: (float(row["val_accuracy"]), -float(row["val_loss"])))
    assert best["epoch"] == int(ranked["epoch"]) < 6
    best_weights = ASTForAudioClassification.from_pretrained(tmp_path / "run" / "best").state_dict()
    assert any(not torch.equal(best_weights[k], saved[k]) for k in saved)


def test_missing_init_explains_the_choices(dataset, tmp_path):
    with pytest.raises(DataError, match=r"init timm:deit.pth: no such file; --init takes an AST checkpoint "
                                        r"directory or Hub id .* timm:PATH .* or scratch"):
        Trainer(config(dataset, tmp_path / "run", init="timm:deit.pth"))


def test_sigint_saves_a_resumable_step(dataset, tmp_path):
    """SIGINT mid-epoch stops at the step's end with last.pt saved; rerunning ends with the uninterrupted weights."""
    import subprocess
    import signal as signals
    import sys
    import time

    Trainer(config(dataset, tmp_path / "whole", epochs=3, batch_size=2)).train()
    # The same settings as a config file (without one, the command would start from the scratch_small recipe).
    settings = config(dataset, tmp_path / "cut", epochs=3, batch_size=2, save_every_steps=1).to_dict()
    (tmp_path / "cut.json").write_text(json.dumps(settings))
    arguments = [sys.executable, "-m", "ast_audio", "train", str(tmp_path / "cut.json")]
    process = subprocess.Popen(arguments, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "cut" / "last.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signals.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "rerun the same command to go on" in err, err
    step = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"]
    finished = subprocess.run(arguments, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert step < torch.load(tmp_path / "cut" / "last.pt", weights_only=True)["step"]
    a, b = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=1e-5)


@pytest.fixture(scope="module")
def keywords(tmp_path_factory):
    """Three classes of 1 s broadband sounds, keyword-like in length and bandwidth: rising chirps, pulsing
    low-passed noise, and click trains; 10 clips each with random pitch, rate and level."""
    root = tmp_path_factory.mktemp("keywords")
    rng = np.random.default_rng(1)
    t = np.arange(RATE) / RATE
    for name in ("chirp", "pulse", "clicks"):
        (root / name).mkdir()
        for i in range(10):
            if name == "chirp":
                start = 200 + 300 * rng.random()
                x = np.sin(2 * np.pi * (start * t + (2500 + 1000 * rng.random()) * t**2 / 2))
            elif name == "pulse":
                noise = np.cumsum(rng.standard_normal(len(t)))
                x = (noise - np.convolve(noise, np.ones(200) / 200, "same")) / 20
                x *= 0.5 + 0.5 * np.sin(2 * np.pi * (3 + 3 * rng.random()) * t)
            else:
                x = np.zeros(len(t))
                x[:: int(RATE / (15 + 15 * rng.random()))] = 1.0
                x = np.convolve(x, np.hanning(40), "same") + 0.02 * rng.standard_normal(len(t))
            x = 0.3 * (0.5 + rng.random()) * x / np.abs(x).max()
            sf.write(root / name / f"{i}.wav", x.astype(np.float32), RATE)
    return root


def test_scratch_small_recipe_learns_from_nothing(keywords, tmp_path, capsys):
    """The from-scratch recipe, as shipped but for a shorter run, learns three keyword-like classes: at least 80%
    on its held-out 20%."""
    dataset = keywords
    stats = tmp_path / "stats.json"
    assert main(["stats", str(dataset), "--output", str(stats)]) == 0
    capsys.readouterr()
    code = main(["train", "scratch_small", "--train", str(dataset), "-o", str(tmp_path / "run"), "--epochs", "20",
                 "--batch-size", "8", "--device", "cpu", "--stats", str(stats), "-q"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["validation"]["accuracy"] >= 0.8, summary
    record = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert record["recipe"] == "scratch_small" and record["command_line"][1] == "train"
    assert record["mean"] == pytest.approx(json.loads(stats.read_text())["mean"])
    assert record["train"] == str(dataset) and len(record["validation_clips"]) == 6
    assert all(os.path.isabs(path) for path in record["validation_clips"])


def test_print_config_and_verbose_after_the_command(dataset, capsys):
    assert main(["train", "scratch_small", "--train", str(dataset), "--print-config", "-v"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["init"] == "scratch" and printed["model"]["hidden_size"] == 192 and printed["mixup"] == 0.0


def test_saved_problem_type_makes_classify_score_as_trained(dataset, tmp_path):
    """BCE training saves a multi-label checkpoint, so classify gives sigmoid scores (cross-entropy: softmax)."""
    from ast_audio import AudioClassifier

    clip = str(dataset / "low" / "0.wav")
    for loss, problem_type, to_scores in (("bce", "multi_label_classification", torch.sigmoid),
                                         ("ce", "single_label_classification", lambda x: torch.softmax(x, -1))):
        Trainer(config(dataset, tmp_path / loss, epochs=1, loss=loss)).train()
        model = ASTForAudioClassification.from_pretrained(tmp_path / loss / "final")
        assert model.config.problem_type == problem_type
        classifier = AudioClassifier.from_pretrained(tmp_path / loss / "final")
        result = classifier.classify(clip)
        features = classifier.feature_extractor(load_audio(clip), sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            expected = to_scores(model(features.input_values).logits)[0].numpy()
        # The clip (0.5 s) is a little longer than the model's input (48 frames: 0.495 s): its first window is what
        # the extractor makes of the whole clip.
        np.testing.assert_allclose(result.window_scores[0], expected, atol=1e-5)


def _strict_json(text: str):
    """json.loads that refuses the bare tokens NaN and Infinity, as strict JSON readers do."""
    def refuse(token):
        raise ValueError(f"not valid JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_tiny_model_fits_its_training_clips(dataset, tmp_path):
    """The scratch_small recipe's optimizer and schedule, on a tiny model, fit 18 clips completely (100% training
    accuracy, each clip named by its own folder), and min_steps raises the epochs to make its steps: a broken
    optimizer, schedule or label mapping cannot pass."""
    from ast_audio.training.evaluation import score_clips

    # A model this small takes a larger rate than the recipe's; the rest (AdamW, warmup, cosine per step,
    # clipping) is the recipe's. SpecAugment is off: masking the only bins of a pure tone is no test of fitting.
    overrides = dict(train=str(dataset), validation_fraction=0.25, model=TINY, frames=48, batch_size=6, epochs=1,
                     min_steps=36, lr=3e-3, freqm=0, timem=0, output_dir=str(tmp_path / "run"), device="cpu")
    trainer = Trainer(load_train_config("scratch_small", overrides))
    assert len(trainer.data.train) == 18 and trainer.config.epochs == 12  # 3 steps an epoch: 12 epochs make 36
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # matrices this small go faster on one thread than on two busy ones
    try:
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    model = ASTForAudioClassification.from_pretrained(tmp_path / "run" / "final")
    scores, _ = score_clips(model, trainer.data.train, trainer.extractor, batch_size=32, device=torch.device("cpu"))
    named = [model.config.id2label[int(i)] for i in scores.argmax(1)]
    assert named == [os.path.basename(os.path.dirname(clip.path)) for clip in trainer.data.train]


def test_one_class_is_refused_before_a_model_is_built(dataset, tmp_path, capsys):
    (tmp_path / "one").mkdir()
    os.symlink(dataset / "low", tmp_path / "one" / "low")
    code = main(["train", "--train", str(tmp_path / "one"), "-o", str(tmp_path / "run"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "only the class 'low'" in err and "at least two classes" in err and str(tmp_path / "one") in err
    assert not (tmp_path / "run").exists()


def test_undefined_metrics_are_null_in_every_json(dataset, tmp_path, capsys):
    """A validation or evaluation set of one class has no mAP or AUC: results.json, the train summary and
    evaluate -o say null (valid JSON), never NaN."""
    assert evaluate_predictions(np.array([[0.9, 0.1], [0.8, 0.2]]), np.array([[1, 0], [1, 0]]))["mAP"] is None
    (tmp_path / "one").mkdir()
    os.symlink(dataset / "low", tmp_path / "one" / "low")
    run = tmp_path / "run"
    code = main(["train", "--train", str(dataset), "--validation", str(tmp_path / "one"), "-o", str(run), "--epochs",
                 "1", "--batch-size", "6", "--device", "cpu", "--set", "frames=48", "--set", f"model={json.dumps(TINY)}",
                 "-q"])
    assert code == 0
    summary = _strict_json(capsys.readouterr().out)
    results = _strict_json((run / "results.json").read_text())
    assert results["validation"]["mAP"] is None and results["validation"]["mAUC"] is None
    assert summary["validation"]["mAP"] is None and results["validation"]["clips"] == 8
    assert main(["evaluate", str(run / "final"), str(tmp_path / "one"), "-o", str(tmp_path / "eval.json")]) == 0
    assert _strict_json((tmp_path / "eval.json").read_text())["mAUC"] is None


def test_train_help_lists_every_shipped_recipe(capsys):
    from ast_audio.training.config import RECIPES_DIR

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    shipped = [os.path.splitext(name)[0] for name in os.listdir(RECIPES_DIR) if name.endswith((".yaml", ".json"))]
    assert "scratch_small" in shipped and len(shipped) >= 5
    for name in shipped:
        assert name in text, name


def test_a_training_runs_folder_names_its_checkpoints(dataset, tmp_path, capsys):
    """A run's output folder passed as --model says which checkpoints inside it to pass (every loader: one message)."""
    from helpers import save_small_checkpoint

    from ast_audio.errors import CheckpointNotFoundError

    run = tmp_path / "run"
    save_small_checkpoint(run / "best", labels=3)
    save_small_checkpoint(run / "final", labels=3)
    with pytest.raises(CheckpointNotFoundError, match="is a training run's folder: pass .*best or .*final$"):
        ASTForAudioClassification.from_pretrained(run)
    assert main(["classify", str(dataset / "low" / "0.wav"), "--model", str(run)]) != 0
    assert f"{run} is a training run's folder: pass {run / 'best'} or {run / 'final'}" in capsys.readouterr().err
    with pytest.raises(CheckpointNotFoundError, match="checkpoint directory has no config.json"):
        ASTForAudioClassification.from_pretrained(tmp_path)  # a folder that is no run keeps the plain message


def test_train_arguments_that_cannot_work_are_one_line_usage_errors(dataset, tmp_path, capsys):
    """Exit 2 before any work, one line naming the value and what is expected: an output directory that is a
    file or lies below one, a data source that is an audio file, --threads 0, a setting the patch does not fit
    in (named as the user wrote it), a validation share outside (0, 1), a --stats file that does not exist;
    --print-config checks the settings too."""
    wav = dataset / "low" / "0.wav"
    base = ["train", "--train", str(dataset), "--epochs", "1", "--device", "cpu"]
    cases = [
        (["-o", str(wav)], f"--output-dir {wav}: is a file; expected a folder"),
        (["-o", str(wav / "sub")], f"{wav} is a file, not a folder"),
        (["--threads", "0"], "--threads 0: expected a whole number >= 1"),
        (["--set", "frames=8"], "frames 8 is shorter than one patch (16 frames); expected frames >= 16"),
        (["--set", "frames=8", "--print-config"], "frames 8 is shorter than one patch"),
        (["--set", "validation_fraction=1.5"], "validation_fraction is the share"),
        (["--set", "validation_fraction=1.5", "--print-config"], "in (0, 1), got 1.5"),
        (["--stats", str(tmp_path / "nope.json")], f"--stats {tmp_path / 'nope.json'}: no such file"),
        (["--validation", str(wav)], f"{wav}: expected a folder with one sub-folder per class, a CSV or a JSON "
                                     "manifest"),
    ]
    for extra, expected in cases:
        code = main([*base, *extra, "-q"])
        captured = capsys.readouterr()
        assert code == 2 and expected in captured.err and len(captured.err.strip().splitlines()) == 1, (extra, captured)
        assert captured.out == "" and "Errno" not in captured.err
    assert main(["train", "--train", str(wav), "-q"]) == 2
    assert capsys.readouterr().err.strip() == (f"ast-audio train: error: {wav}: expected a folder with one sub-folder "
                                               "per class, a CSV or a JSON manifest (train data)")


@pytest.mark.parametrize("stop_after_step", [2, 3])  # mid-epoch; after the epoch's last step, before its end
def test_an_interrupted_epoch_logs_all_its_batches(dataset, tmp_path, stop_after_step):
    """Ctrl-C stops a run at a step's end; resumed, the epoch's metrics.csv row is the uninterrupted run's (its
    training loss and accuracy over all its batches, not NaN or those after the resume only)."""
    import csv
    import signal as signals

    from ast_audio.training.trainer import TrainingInterrupted

    class StoppedByCtrlC(Trainer):
        def _optimizer_step(self, run):
            super()._optimizer_step(run)
            if run.state["step"] == stop_after_step:  # 3 steps an epoch: 18 training clips, batches of 6
                signals.raise_signal(signals.SIGINT)

    Trainer(config(dataset, tmp_path / "whole", epochs=2)).train()
    with pytest.raises(TrainingInterrupted):
        StoppedByCtrlC(config(dataset, tmp_path / "cut", epochs=2)).train()
    Trainer(config(dataset, tmp_path / "cut", epochs=2)).train()
    rows = {}
    for name in ("whole", "cut"):
        with open(tmp_path / name / "metrics.csv", encoding="utf-8") as handle:
            rows[name] = list(csv.DictReader(handle))
    assert [row["epoch"] for row in rows["cut"]] == ["1", "2"]
    for whole, cut in zip(rows["whole"], rows["cut"]):
        for key in ("step", "train_loss", "train_accuracy", "val_loss"):
            assert float(cut[key]) == pytest.approx(float(whole[key]), rel=1e-6), (key, whole, cut)


def test_unreadable_clips_are_skipped_up_front_each_named_with_its_reason(dataset, tmp_path, caplog):
    """Random bytes and an empty file among the training and validation clips: each is skipped before a model
    is built, with a warning naming it, its reason and its split (as `stats` skips them); a class left with no
    readable clip is refused."""
    from ast_audio.training.data import prepare_data

    root = tmp_path / "train"
    for name in ("high", "low"):
        (root / name).mkdir(parents=True)
        for i in range(4):
            os.symlink(dataset / name / f"{i}.wav", root / name / f"{i}.wav")
    (root / "high" / "garbage.wav").write_bytes(np.random.default_rng(0).bytes(3000))
    (root / "low" / "empty.wav").write_bytes(b"")
    validation = tmp_path / "valid.csv"
    validation.write_text(f"{dataset}/low/5.wav,low\n{root}/high/garbage.wav,high\n{dataset}/high/5.wav,high\n")
    with caplog.at_level("WARNING", logger="ast_audio.training"):
        data = prepare_data(config(root, tmp_path / "run", validation=str(validation)))
    assert len(data.train) == 8 and len(data.validation) == 2
    warned = [record.getMessage() for record in caplog.records]
    assert len(warned) == 3, warned
    assert any(m.startswith("train data") and "garbage.wav: not an audio file" in m for m in warned), warned
    assert any(m.startswith("train data") and "empty.wav: empty file" in m for m in warned), warned
    assert any(m.startswith(f"validation data ({validation})") and "garbage.wav" in m for m in warned), warned
    for i in range(4):
        os.unlink(root / "low" / f"{i}.wav")
    with pytest.raises(DataError, match=r"no readable clip is left of the class 'low'"):
        prepare_data(config(root, tmp_path / "run", validation=str(validation)))


def test_a_finished_run_rerun_says_complete_and_other_settings_exit_2(dataset, tmp_path, capsys, caplog):
    """Rerunning a finished run says it is complete (one line, not "resuming from epoch 2"); rerunning it with
    other settings is a usage error (exit 2, one line with the --no-resume hint)."""
    run = tmp_path / "run"
    command = ["train", "--train", str(dataset), "-o", str(run), "--epochs", "1", "--batch-size", "6", "--device",
               "cpu", "--set", "frames=48", "--set", f"model={json.dumps(TINY)}"]
    assert main(command) == 0
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level("INFO", logger="ast_audio.training"):
        assert main(command) == 0
    said = [record.getMessage() for record in caplog.records]
    assert any("this run is already complete (1 of 1 epochs)" in line for line in said), said
    assert not any("resuming from" in line for line in said), said
    capsys.readouterr()
    assert main([*command, "--lr", "0.01", "-q"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "other settings" in err and "--no-resume" in err, err


def test_a_warmup_longer_than_the_run_and_audioset_stats_from_scratch_warn_once(dataset, tmp_path, caplog):
    """Settings that run but not as meant get one warning each at the start: a warmup longer than the run (3
    optimizer steps: 18 training clips, batches of 6), and training from scratch on AudioSet's mean and std."""
    caplog.set_level("WARNING", logger="ast_audio.training")
    Trainer(config(dataset, tmp_path / "a", epochs=1, warmup_steps=10))
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert sum("warmup_steps 10 is more than the run's 3 optimizer steps" in w for w in warnings) == 1, warnings
    assert sum("AudioSet's mean -4.26774 and std 4.569" in w and "ast-audio stats" in w for w in warnings) == 1
    caplog.clear()
    Trainer(config(dataset, tmp_path / "b", epochs=1, warmup_steps=3, mean=-6.0, std=5.0))
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_sigterm_stops_training_at_a_step_with_exit_130(dataset, tmp_path, capsys, monkeypatch):
    """SIGTERM during training stops at the step's end like Ctrl-C, exit 130 (what README and train --help
    say), with last.pt saved to go on from."""
    import signal as signals

    from ast_audio.training import trainer as trainer_module

    step = trainer_module.Trainer._optimizer_step

    def step_then_sigterm(self, run):
        step(self, run)
        if run.state["step"] == 1:
            signals.raise_signal(signals.SIGTERM)

    monkeypatch.setattr(trainer_module.Trainer, "_optimizer_step", step_then_sigterm)
    code = main(["train", "--train", str(dataset), "-o", str(tmp_path / "run"), "--epochs", "1", "--batch-size", "6",
                 "--device", "cpu", "--set", "frames=48", "--set", f"model={json.dumps(TINY)}", "-q"])
    assert code == 130 and "rerun the same command to go on" in capsys.readouterr().err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 1


def test_init_from_a_local_checkpoint_keeps_its_input_settings(dataset, tmp_path, capsys, caplog):
    """--init DIR without a recipe trains on the checkpoint's own frames, strides, mel bins and normalisation
    (not the release's 1024 frames, stride 10 and AudioSet's mean and std); a setting given that differs is kept
    and said to adapt the model; the esc50 recipe from its Hub id is unchanged."""
    source = randomize_(ASTForAudioClassification(ASTConfig(**TINY, max_length=48, frequency_stride=16, time_stride=16,
                                                            num_mel_bins=64, num_labels=3)))
    source.save_pretrained(tmp_path / "small")
    ASTFeatureExtractor(num_mel_bins=64, max_length=48, mean=-6.5, std=3.25).save_pretrained(tmp_path / "small")
    command = ["train", "--train", str(dataset), "--init", str(tmp_path / "small"), "--epochs", "1", "-o",
               str(tmp_path / "run"), "--device", "cpu", "--set", "freqm=0", "--set", "timem=0"]
    caplog.set_level("INFO", logger="ast_audio.training")
    assert main(command) == 0
    assert not [r for r in caplog.records if "adapted" in r.getMessage()]
    final = tmp_path / "run" / "final"
    saved = json.loads((final / "config.json").read_text())
    assert [saved[k] for k in ("max_length", "frequency_stride", "time_stride", "num_mel_bins")] == [48, 16, 16, 64]
    normalisation = json.loads((final / "preprocessor_config.json").read_text())
    assert (normalisation["mean"], normalisation["std"]) == (-6.5, 3.25)
    name = "audio_spectrogram_transformer.embeddings.position_embeddings"
    assert load_file(final / "model.safetensors")[name].shape == source.state_dict()[name].shape  # 3 x 2 patches + 2

    capsys.readouterr()
    caplog.clear()
    assert main(command + ["--set", "frames=64", "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert (resolved["frames"], resolved["time_stride"], resolved["mean"]) == (64, 16, -6.5)
    adapted = [r.getMessage() for r in caplog.records if "adapted" in r.getMessage()]
    assert adapted == [f"init {tmp_path / 'small'}: the model is adapted to this run's frames 64 (the checkpoint's 48)"]
    assert main(["train", "esc50", "--train", str(dataset), "--print-config"]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert [resolved[k] for k in ("frames", "frequency_stride", "time_stride", "num_mel_bins", "mean", "std")] == \
        [512, 10, 10, 128, -6.6268077, 5.358466]
