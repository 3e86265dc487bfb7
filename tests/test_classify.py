"""Tagging real files: AudioClassifier, pipeline(), and the classify / embed commands end to end."""

from __future__ import annotations

import csv
import io
import json
import os
import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import torch

from ast_audio import (
    ASTConfig,
    ASTFeatureExtractor,
    ASTForAudioClassification,
    AudioClassifier,
    AudioError,
    pipeline,
)
from ast_audio.cli import main
from ast_audio.inference.results import pool_scores
from ast_audio.inference.windows import plan_windows
from helpers import SMALL, power_cut_after, randomize_

RATE = 16000
WINDOW = (128 - 1) * 0.01 + 0.025  # the test checkpoint's 128 input frames: 1.295 s of audio
LABELS = {0: "Dog", 1: "Rain", 2: "Siren", 3: "Speech"}


def make_checkpoint(path, max_length=128, problem_type=None, seed=0):
    config = ASTConfig(**SMALL, max_length=max_length, id2label=LABELS, problem_type=problem_type)
    randomize_(ASTForAudioClassification(config), seed=seed).save_pretrained(path)
    ASTFeatureExtractor(max_length=max_length).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def classifier(checkpoint):
    return AudioClassifier.from_pretrained(checkpoint, device="cpu", batch_size=4)


def signal(seconds, rate=RATE, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.2 * np.sin(2 * np.pi * (300 + 100 * seed) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def write(path, seconds, rate=RATE, seed=0, **kwargs):
    sf.write(path, signal(seconds, rate, seed), rate, **kwargs)
    return str(path)


def test_windows_cover_the_file_with_the_hop():
    windows = plan_windows(180.0, 1.28, 0.64)
    assert windows[0] == (0.0, 1.28) and windows[-1][1] == 180.0
    starts = np.array([start for start, _ in windows])
    np.testing.assert_allclose(np.diff(starts[:-1]), 0.64, atol=1e-9)
    assert windows[-2][0] + 1.28 < 180.0  # the last window is the first one to reach the end
    assert windows[-1] == (178.72, 180.0)  # moved back from 179.2 to end at the end, full length
    assert plan_windows(1.0, 1.28, 0.64) == [(0.0, 1.0)]
    assert plan_windows(1.28, 1.28, 0.64) == [(0.0, 1.28)]
    with pytest.raises(ValueError, match="window and hop must be positive"):
        plan_windows(10.0, 1.0, 0.0)


def test_single_window_file_equals_array_and_direct_model(tmp_path, classifier, checkpoint):
    path = write(tmp_path / "one.wav", 1.0, subtype="FLOAT")
    from_file = classifier.classify(path)
    from_array = classifier.classify(signal(1.0), sampling_rate=RATE)
    assert len(from_file.windows) == 1
    np.testing.assert_allclose(from_file.scores, from_array.scores, atol=1e-6)
    model = ASTForAudioClassification.from_pretrained(checkpoint)
    features = ASTFeatureExtractor.from_pretrained(checkpoint)(signal(1.0), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        direct = torch.softmax(model(features.input_values).logits, -1)[0].numpy()
    np.testing.assert_allclose(from_file.scores, direct, atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_clip_scores_pool_the_window_scores(tmp_path, checkpoint, pooling):
    classifier = AudioClassifier.from_pretrained(checkpoint, pooling=pooling, batch_size=3)
    result = classifier.classify(write(tmp_path / "long.flac", 7.3, seed=2))
    assert len(result.windows) == len(plan_windows(7.3, WINDOW, WINDOW / 2)) and result.window_scores.shape == (len(result.windows), 4)
    expected = result.window_scores.mean(0) if pooling == "mean" else result.window_scores.max(0)
    np.testing.assert_allclose(result.scores, expected)
    np.testing.assert_allclose(pool_scores(result.window_scores, pooling), expected)
    # Each window's scores equal classifying that stretch of audio on its own.
    start, end = result.windows[3]
    alone = classifier.classify(signal(7.3, seed=2)[int(start * RATE): int(end * RATE)], sampling_rate=RATE)
    np.testing.assert_allclose(result.window_scores[3], alone.scores, atol=1e-4)


def test_score_functions(tmp_path, classifier):
    result = classifier.classify(signal(1.0), sampling_rate=RATE)
    assert classifier.score_function == "softmax" and result.scores.sum() == pytest.approx(1.0, abs=1e-5)
    multi = AudioClassifier.from_pretrained(make_checkpoint(tmp_path / "multi", problem_type="multi_label_classification"))
    assert multi.score_function == "sigmoid"
    assert multi.classify(signal(1.0), sampling_rate=RATE).scores.sum() != pytest.approx(1.0, abs=1e-3)


def test_pipeline_call_shapes_and_input_kinds(tmp_path, checkpoint):
    classify = pipeline("audio-classification", model=checkpoint, device="cpu")
    path = write(tmp_path / "a.wav", 2.0)
    top = classify(path, top_k=3)
    assert [set(item) for item in top] == [{"label", "score"}] * 3
    assert top[0]["score"] >= top[1]["score"] >= top[2]["score"] and top[0]["label"] in LABELS.values()
    batch = classify([path, open(path, "rb").read(), {"array": signal(2.0, 44100), "sampling_rate": 44100}], top_k=2)
    assert len(batch) == 3 and all(len(item) == 2 for item in batch)
    assert batch[0] == batch[1]  # a path and its bytes
    as_44k = classify(signal(2.0, 44100), sampling_rate=44100, top_k=4)
    assert abs(as_44k[0]["score"] - top[0]["score"]) < 0.05  # resampled to 16 kHz first
    with pytest.raises(ValueError, match="unsupported task"):
        pipeline("text-generation", model=checkpoint)


def test_bad_inputs_are_reported_and_others_go_on(tmp_path, classifier):
    good = write(tmp_path / "good.wav", 1.5)
    (tmp_path / "bad.wav").write_text("not audio")
    results = list(classifier.iter_classify([good, str(tmp_path / "bad.wav"), signal(0.01), good]))
    assert [r.ok for r in results] == [True, False, False, True]
    assert "bad.wav: not an audio file (format not recognised)" in results[1].error
    assert "shorter than one 25 ms frame" in results[2].error
    np.testing.assert_allclose(results[0].scores, results[3].scores)
    with pytest.raises(AudioError, match="bad.wav"):
        classifier([good, str(tmp_path / "bad.wav")])
    with pytest.raises(AudioError, match="expected a path, bytes"):
        classifier(12345)


def test_embeddings_per_clip_and_window(tmp_path, classifier):
    result = classifier.classify(write(tmp_path / "e.wav", 3.0))
    assert result.window_embeddings.shape == (len(result.windows), SMALL["hidden_size"])
    np.testing.assert_allclose(classifier.embed(str(tmp_path / "e.wav")), result.window_embeddings.mean(0), atol=1e-6)


def test_memory_bounded_by_batch_not_file(tmp_path):
    """10 minutes of audio (38 MB as float32, 19 MB as 16-bit samples; its features 30 MB) classified with NumPy
    allocations peaking at a few MB (3.4 MB measured, the same as for 20 minutes): holding the file's audio or
    features in any form exceeds the 16 MB bound."""
    checkpoint = make_checkpoint(tmp_path / "ckpt1024", max_length=1024)
    path = tmp_path / "ten_minutes.wav"
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as handle:
        for minute in range(10):
            handle.write(signal(60.0, seed=minute % 3))
    classifier = AudioClassifier.from_pretrained(checkpoint, batch_size=4)
    tracemalloc.start()
    try:
        result = classifier.classify(str(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.duration == pytest.approx(600.0) and len(result.windows) == len(plan_windows(600.0, 10.255, 5.1275))
    assert peak < 16 * 2**20, f"peak traced memory {peak / 2**20:.1f} MB"


# ------------------------------------------------------------------------------------------ command line
@pytest.fixture
def audio_dir(tmp_path):
    folder = tmp_path / "audio"
    (folder / "nested").mkdir(parents=True)
    write(folder / "a.wav", 2.0, seed=0)
    write(folder / "nested" / "b.flac", 3.0, seed=1)
    write(folder / "c.ogg", 1.5, seed=2)
    write(folder / "d.mp3", 2.5, seed=3)
    write(folder / "e.aiff", 1.0, rate=22050, seed=4)
    return folder


def run_cli(args, capsys):
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_classify_every_format_as_jsonl(audio_dir, checkpoint, capsys):
    code, out, err = run_cli(["classify", str(audio_dir), "--model", checkpoint, "-f", "jsonl", "-k", "2"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in rows) == ["a.wav", "b.flac", "c.ogg", "d.mp3", "e.aiff"]
    durations = {os.path.basename(r["path"]): r["duration"] for r in rows}
    assert durations["a.wav"] == 2.0 and durations["e.aiff"] == 1.0 and abs(durations["d.mp3"] - 2.5) < 0.1
    for row in rows:
        assert len(row["labels"]) == 2 and row["windows"][-1]["end"] == row["duration"]


def test_classify_m4a_via_pyav(tmp_path, checkpoint, capsys):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(signal(2.0)[None, :], format="fltp", layout="mono")
        frame.rate = RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    code, out, err = run_cli(["classify", str(path), "--model", checkpoint, "-f", "json"], capsys)
    assert code == 0, err
    assert abs(json.loads(out)[0]["duration"] - 2.0) < 0.2  # AAC adds encoder delay and padding


def test_three_minute_file_timeline(tmp_path, checkpoint, capsys):
    path = write(tmp_path / "three_minutes.flac", 180.0)
    code, out, err = run_cli(["classify", path, "--model", checkpoint, "-f", "json", "--hop", "0.5", "-q"], capsys)
    assert code == 0, err
    windows = json.loads(out)[0]["windows"]
    assert all(len(w["labels"]) == 4 and w["end"] - w["start"] <= WINDOW + 1e-9 for w in windows)  # 4 labels < top-k 5
    assert len(windows) == len(plan_windows(180.0, WINDOW, 0.5))
    assert [w["start"] for w in windows[:3]] == [0.0, 0.5, 1.0] and windows[-1]["end"] == 180.0
    assert all(b["start"] <= a["end"] for a, b in zip(windows, windows[1:]))  # no gaps


def test_directory_with_corrupt_file_is_partial_failure(audio_dir, checkpoint, capsys):
    (audio_dir / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    code, out, err = run_cli(["classify", str(audio_dir), "--model", checkpoint, "-f", "csv", "--no-timeline"], capsys)
    assert code == 3
    assert "broken.wav" in err and "1 of 6 files failed" in err
    rows = list(csv.DictReader(io.StringIO(out)))
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0]["path"].endswith("broken.wav")
    assert {os.path.basename(r["path"]) for r in rows if not r["error"]} == {"a.wav", "b.flac", "c.ogg", "d.mp3", "e.aiff"}
    assert all(r["level"] == "clip" for r in rows)


def test_empty_directory_and_missing_path(tmp_path, checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(["classify", str(tmp_path / "empty"), "--model", checkpoint], capsys)
    assert code == 1 and "no audio files found" in err
    code, _, err = run_cli(["classify", str(tmp_path / "nope.wav"), "--model", checkpoint], capsys)
    assert code == 1 and "nope.wav: no such file or directory" in err


def test_table_output_and_plot(audio_dir, checkpoint, capsys, tmp_path):
    plot = tmp_path / "plot.png"
    code, out, _ = run_cli(["classify", str(audio_dir / "nested" / "b.flac"), "--model", checkpoint, "--plot", str(plot)], capsys)
    assert code == 0
    assert "b.flac  (3.00 s, 4 windows, mean pooling)" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_output_file_is_written_atomically(audio_dir, checkpoint, capsys, tmp_path, monkeypatch):
    target = tmp_path / "results.jsonl"
    code, out, _ = run_cli(["classify", str(audio_dir), "--model", checkpoint, "-f", "jsonl", "-o", str(target)], capsys)
    assert code == 0 and out == ""
    assert len([json.loads(line) for line in target.read_text().splitlines()]) == 5
    assert not (tmp_path / "results.jsonl.partial").exists()

    # A run that dies half-way leaves the old file untouched and what it had written in .partial.
    power_cut_after(monkeypatch, 2)
    before = target.read_text()
    with pytest.raises(RuntimeError, match="power cut"):
        main(["classify", str(audio_dir), "--model", checkpoint, "-f", "jsonl", "-o", str(target)])
    assert target.read_text() == before
    partial = (tmp_path / "results.jsonl.partial").read_text().splitlines()
    assert len(partial) == 2 and all(json.loads(line)["labels"] for line in partial)


def test_offline_hub_model_fails_fast_with_one_line(audio_dir, capsys):
    code, _, err = run_cli(["classify", str(audio_dir), "--model", "MIT/ast-finetuned-audioset-10-10-0.4593"], capsys)
    assert code == 1
    message = err.strip()
    assert "\n" not in message and "offline" in message and "local checkpoint directory" in message
    assert "ast-audio convert RELEASE.pth DIR" in message and ".save_pretrained(DIR)" in message


def test_embed_command(audio_dir, checkpoint, capsys, tmp_path):
    out_dir = tmp_path / "emb"
    code, _, err = run_cli(["embed", str(audio_dir), "--model", checkpoint, "-o", str(out_dir), "--per-window"], capsys)
    assert code == 0, err
    index = [json.loads(line) for line in (out_dir / "index.jsonl").read_text().splitlines()]
    assert len(index) == 5
    first = index[0]
    clip = np.load(out_dir / first["embedding"])
    windows = np.load(out_dir / first["window_embeddings"])
    assert clip.shape == (SMALL["hidden_size"],) and windows.shape == (len(first["windows"]), SMALL["hidden_size"])
    np.testing.assert_allclose(clip, windows.mean(0), atol=1e-6)


@pytest.mark.parametrize("command", [[], ["classify"], ["embed"], ["stats"], ["convert"]])
def test_help_on_every_level(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    assert "usage: ast-audio" in capsys.readouterr().out


def test_window_settings_are_checked(checkpoint, capsys, tmp_path):
    with pytest.raises(ValueError, match=r"window 5 s is outside 0.175-1.295 s: at least one patch of 16 frames "
                                         r"and at most the model's input of 128 frames"):
        AudioClassifier.from_pretrained(checkpoint, window=5.0)
    path = write(tmp_path / "w.wav", 3.0)
    for flags, message in [(["--hop", "-1"], "hop -1 s must be positive"), (["--hop", "0"], "hop 0 s must be positive"),
                           (["--window", "0.01"], "window 0.01 s is outside 0.175-1.295 s"),
                           (["--window", "0"], "window 0 s is outside 0.175-1.295 s")]:
        code = main(["classify", path, "--model", checkpoint, *flags])
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err, (flags, err)  # a usage error
    short = AudioClassifier.from_pretrained(checkpoint).classify(path, window=0.5, hop=0.25)
    assert len(short.windows) == len(plan_windows(3.0, 0.5, 0.25))
    with pytest.raises(ValueError, match="applies to the torch backend"):
        AudioClassifier.from_pretrained(checkpoint, backend="onnxruntime", compile=True, onnx_path="x.onnx")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for machines without CUDA")
def test_unavailable_device_is_a_clear_error(checkpoint, capsys, tmp_path):
    code = main(["classify", write(tmp_path / "d.wav", 1.0), "--model", checkpoint, "--device", "cuda"])
    assert code == 2 and "CUDA is not available on this machine" in capsys.readouterr().err
    code = main(["classify", str(tmp_path / "d.wav"), "--model", checkpoint, "--device", "gpu0"])
    assert code == 2 and "is not a device name" in capsys.readouterr().err  # usage errors, found before any work


def test_thread_budget_sets_each_stage_once(checkpoint, monkeypatch):
    """The model's thread and the feature thread each get their count once, not once per batch."""
    import threading

    from ast_audio import runtime

    calls = []
    real = torch.set_num_threads

    def spy(count):
        calls.append((threading.current_thread().name, count))
        real(count)

    monkeypatch.setattr(runtime.torch, "set_num_threads", spy)
    previous = torch.get_num_threads()
    worker = threading.Thread(
        target=lambda: calls.append(("result", AudioClassifier.from_pretrained(
            checkpoint, batch_size=2, threads=1).classify(signal(8.0), sampling_rate=RATE))),
        name="model-caller",
    )
    try:
        worker.start()
        worker.join()
    finally:
        real(previous)
    result = calls.pop()[1]
    assert len(result.windows) > 8  # more than four batches of two
    assert sorted(calls) == [("ast-audio-features", 1), ("model-caller", 1)]
    with pytest.raises(ValueError, match="thread counts must be at least 1"):
        AudioClassifier.from_pretrained(checkpoint, threads=-2)


def test_one_options_object_for_every_front_end(capsys):
    """The command line's options become one `InferenceOptions` (classify, serve and the Ray job read the same
    fields), whose `numbers` keep the keys resume state files hold; the parsers' choices are the registries'."""
    import dataclasses

    from ast_audio.cli import build_parser
    from ast_audio.distributed.tagging import RayOptions
    from ast_audio.inference.options import BACKENDS, DTYPES, InferenceOptions
    from ast_audio.inference.results import POOLINGS
    from ast_audio.jobs.writers import FORMATS

    parser = build_parser()
    args = parser.parse_args(["classify", "a.wav", "-m", "ckpt", "--window", "2", "--hop", "0.5", "--pooling", "max",
                              "-k", "3", "--strict", "--batch-size", "4", "--int8", "--dtype", "bfloat16",
                              "--threads", "2", "--device", "cpu", "--offline", "--no-timeline"])
    options = InferenceOptions.from_args(args)
    assert options == InferenceOptions(model="ckpt", window=2.0, hop=0.5, pooling="max", strict=True, batch_size=4,
                                       int8=True, dtype="bfloat16", threads=2, top_k=3, timeline=False,
                                       device="cpu", local_files_only=True)
    assert options.numbers() == {"model": "ckpt", "window": 2.0, "hop": 0.5, "dtype": "bfloat16", "backend": "torch",
                                 "int8": True, "strict": True}
    ray_job = RayOptions.of(options, num_workers=2)
    assert ray_job.num_workers == 2 and ray_job.inference == dataclasses.replace(options, compile=False)
    served = InferenceOptions.from_args(parser.parse_args(["serve", "-m", "ckpt", "--max-batch", "16"]), batch_size=16)
    assert served == InferenceOptions(model="ckpt", batch_size=16)
    for flag, registry in (("--backend", BACKENDS), ("--dtype", DTYPES), ("--pooling", POOLINGS),
                           ("--format", FORMATS)):
        with pytest.raises(SystemExit):
            parser.parse_args(["classify", "a.wav", flag, "nonsense"])
        assert f"(choose from {', '.join(map(repr, registry))})" in capsys.readouterr().err, flag
