"""Inference speed options agree with float32: ONNX + onnxruntime, int8 dynamic quantisation, torch.compile."""

from __future__ import annotations

import re
from pathlib import Path
import shutil

import numpy as np
import onnx
import pytest
import torch

from ast_audio import ASTAudioError, ASTConfig, ConfigError, ASTFeatureExtractor, ASTForAudioClassification, AudioClassifier
from ast_audio.cli import main
from ast_audio.onnx import export_onnx, onnx_session
from ast_audio.quantize import quantize_int8
from helpers import SMALL, save_small_checkpoint

RATE = 16000


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # 4 layers: the int8 paths keep the first and the last in float32 and quantise the two between.
    return Path(save_small_checkpoint(tmp_path_factory.mktemp("ckpt"), labels=6, seed=1, label_name="class",
                                      num_hidden_layers=4))


def real_signals(count: int = 24) -> list[np.ndarray]:
    """Tones, chirps, noise bursts and silence gaps: inputs with the structure of real sounds."""
    rng = np.random.default_rng(0)
    t = np.arange(int(1.2 * RATE)) / RATE
    out = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t)
        elif kind == 1:
            x = 0.3 * np.sin(2 * np.pi * np.cumsum(np.linspace(rng.uniform(100, 500), rng.uniform(2000, 7000), len(t))) / RATE)
        elif kind == 2:
            x = rng.standard_normal(len(t)) * (t % 0.3 < 0.1) * 0.3
        else:
            x = 0.2 * np.sin(2 * np.pi * 300 * t) * (t > 0.6) + 0.01 * rng.standard_normal(len(t))
        out.append(x.astype(np.float32))
    return out


def test_onnx_export_matches_torch_with_dynamic_batch(checkpoint, tmp_path):
    model = ASTForAudioClassification.from_pretrained(checkpoint)
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    session = onnx_session(tmp_path / "m.onnx")
    x = torch.randn(3, 128, 128)
    logits, pooled = session.run(["logits", "pooler_output"], {"input_values": x.numpy()})
    with torch.no_grad():
        expected = model(x, output_hidden_states=False)
    np.testing.assert_allclose(logits, expected.logits.numpy(), atol=1e-4)
    assert pooled.shape == (3, SMALL["hidden_size"])


def test_classifier_backends_agree(checkpoint, capsys):
    assert main(["export", str(checkpoint), "--onnx"]) == 0
    assert "onnxruntime max |difference|" in capsys.readouterr().out
    signals = real_signals(8)
    reference = [r.scores for r in AudioClassifier.from_pretrained(checkpoint).classify(signals, sampling_rate=RATE)]
    onnx = AudioClassifier.from_pretrained(checkpoint, backend="onnxruntime")
    for mine, expected in zip(onnx.classify(signals, sampling_rate=RATE), reference):
        np.testing.assert_allclose(mine.scores, expected, atol=1e-5)


def test_onnx_int8_export_and_backend(checkpoint, tmp_path, capsys):
    """export --int8 writes model.int8.onnx beside model.onnx; classify --backend onnxruntime --int8 runs it,
    close to float32 (torch's int8 is checked against float32 in test_int8_agrees_with_float32). Each int8 path
    is compared with float32 alone: which of the two is closer depends on the CPU's int8 kernels (AVX2 or
    AVX-512 VNNI), not on this code."""
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoint, directory)
    with pytest.raises(ASTAudioError, match=r"no model.int8.onnx .* export .* --onnx --int8"):
        AudioClassifier.from_pretrained(directory, backend="onnxruntime", quantize="int8")
    assert main(["export", str(directory), "--onnx", "--int8"]) == 0
    assert "model.int8.onnx, logits at cosine" in capsys.readouterr().out
    assert (directory / "model.onnx").is_file() and (directory / "model.int8.onnx").is_file()
    # The default: the patch embedding, the head and layers 0 and 3 stay float.
    assert integer_nodes(directory / "model.int8.onnx") == {f"/encoder/layer.{i}/{part}" for i in (1, 2)
                                                            for part in LAYER_PARTS}
    signals = real_signals()
    features = ASTFeatureExtractor.from_pretrained(directory)(signals, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        full = ASTForAudioClassification.from_pretrained(directory)(features.input_values).logits
    session = onnx_session(directory / "model.int8.onnx")
    onnx_int8 = torch.from_numpy(session.run(["logits"], {"input_values": features.input_values.numpy()})[0])
    assert torch.nn.functional.cosine_similarity(full, onnx_int8).min() >= 0.98
    assert not torch.allclose(onnx_int8, full, atol=1e-4)  # really quantised
    classifier = AudioClassifier.from_pretrained(directory, backend="onnxruntime", quantize="int8")
    result = classifier.classify(signals[0], sampling_rate=RATE)
    # Activation scales are per batch, so compare with the clip run alone; 6 labels: softmax scores.
    alone = session.run(["logits"], {"input_values": features.input_values[:1].numpy()})[0][0]
    np.testing.assert_allclose(result.scores, torch.softmax(torch.from_numpy(alone), -1).numpy(), atol=1e-5)


def test_int8_keeps_the_chosen_layers_in_float32(checkpoint):
    def quantized_layers(model) -> list[int]:
        layers = model.audio_spectrogram_transformer.encoder.layer
        return [i for i, layer in enumerate(layers) if type(layer.intermediate.dense) is not torch.nn.Linear]

    model = ASTForAudioClassification.from_pretrained(checkpoint)
    assert quantized_layers(quantize_int8(model)) == [1, 2]
    assert quantized_layers(quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint), ())) == [0, 1, 2, 3]
    assert quantized_layers(quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint), (1,))) == [0, 2, 3]
    with pytest.raises(ConfigError, match="float layer 4 is out of range for a model of 4 encoder layers"):
        quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint), (0, 4))


def test_int8_and_export_leave_the_callers_model_alone(checkpoint, tmp_path):
    model = ASTForAudioClassification.from_pretrained(checkpoint, dtype="bfloat16").train()
    encoder = model.audio_spectrogram_transformer
    before = {k: v.clone() for k, v in model.state_dict().items()}
    quantize_int8(model)
    export_onnx(model, tmp_path / "model.onnx", verify=False)
    assert model.training and model.dtype == torch.bfloat16 and model.audio_spectrogram_transformer is encoder
    assert all(type(layer.intermediate.dense) is torch.nn.Linear for layer in encoder.encoder.layer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def integer_nodes(path) -> set[str]:
    """The encoder parts an ONNX file computes in int8 (MatMulInteger, ConvInteger), e.g. "/encoder/layer.1/output"."""
    names = [node.name for node in onnx.load(str(path)).graph.node if node.op_type in ("MatMulInteger", "ConvInteger")]
    return {re.sub(r"/(query|key|value|dense)/.*", "", name) for name in names}


LAYER_PARTS = ("attention/attention", "attention/output", "intermediate", "output")


def test_onnx_int8_keeps_the_chosen_layers_in_float32(checkpoint, tmp_path, capsys):
    """--float-layers alone quantises every layer (never the patch embedding or the head); the default (layers 0
    and 3 float) is checked in test_onnx_int8_export_and_backend."""
    directory = tmp_path / "ckpt"
    shutil.copytree(checkpoint, directory)
    assert main(["export", str(directory), "--onnx", "--int8", "--no-verify", "--float-layers"]) == 0
    every_part = {f"/encoder/layer.{i}/{part}" for i in range(4) for part in LAYER_PARTS}
    assert integer_nodes(directory / "model.int8.onnx") == every_part
    assert main(["export", str(directory), "--onnx", "--int8", "--no-verify", "--float-layers", "-5"]) == 1
    assert "float layer -5 is out of range" in capsys.readouterr().err


def test_int8_agrees_with_float32(checkpoint):
    model = ASTForAudioClassification.from_pretrained(checkpoint)
    quantized = quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint))
    features = ASTFeatureExtractor.from_pretrained(checkpoint)(real_signals(), sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        full = model(features.input_values).logits
        small = quantized(features.input_values).logits
    cosine = torch.nn.functional.cosine_similarity(full, small, dim=-1)
    assert cosine.min().item() >= 0.99
    assert not torch.allclose(small, full, atol=1e-4)  # really quantised
    assert (full.argmax(-1) == small.argmax(-1)).float().mean().item() >= 0.95
    classifier = AudioClassifier.from_pretrained(checkpoint, quantize="int8")
    assert classifier.classify(real_signals(1)[0], sampling_rate=RATE).scores.shape == (6,)


def test_int8_keeps_the_decisions_of_a_head_that_separates_classes(checkpoint):
    """Random heads leave near-tied logits that any perturbation flips; with a head fitted to the classes
    (nearest class mean of pooled embeddings, as a linear probe), int8 keeps every float32 top-1 on held-out
    real-signal clips."""
    model = ASTForAudioClassification.from_pretrained(checkpoint).eval()
    signals = real_signals(48)
    labels = torch.arange(48) % 4  # real_signals cycles through 4 kinds of sound
    features = ASTFeatureExtractor.from_pretrained(checkpoint)(signals, sampling_rate=RATE, return_tensors="pt")
    train, test = features.input_values[:24], features.input_values[24:]
    head = model.classifier
    with torch.no_grad():
        normed = model.forward_head(model.forward_features(train), pre_logits=True)
        means = torch.stack([normed[labels[:24] == k].mean(0) for k in range(4)])
        head.dense.weight.zero_()
        head.dense.bias.fill_(-1e3)  # labels 4 and 5 never win
        head.dense.weight[:4] = means
        head.dense.bias[:4] = -0.5 * means.square().sum(1)
        full = model(test).logits
        quantized = quantize_int8(ASTForAudioClassification.from_pretrained(checkpoint))
        quantized.classifier.load_state_dict(head.state_dict())
        small = quantized(test).logits
    assert (full.argmax(1) == labels[24:]).float().mean() >= 0.75  # the head does separate the classes
    assert torch.equal(small.argmax(1), full.argmax(1))
    assert torch.nn.functional.cosine_similarity(full, small).min() >= 0.99


def test_compiled_model_agrees(tmp_path):
    """compile=True really compiles (dynamo captures a graph and inductor builds it), and agrees with eager."""
    from torch._dynamo.utils import counters

    # One encoder layer: inductor's time is its C++ kernel builds, which grow with the layers (from a cold cache,
    # measured: 20 s for one layer, 51 s for the four of the module's checkpoint); one layer runs the same path.
    checkpoint = save_small_checkpoint(tmp_path, labels=6, seed=1, label_name="class", num_hidden_layers=1)
    signals = real_signals(4)
    eager = AudioClassifier.from_pretrained(checkpoint).classify(signals, sampling_rate=RATE)
    counters.clear()
    try:
        compiled = AudioClassifier.from_pretrained(checkpoint, compile=True).classify(signals, sampling_rate=RATE)
    except Exception as exc:  # e.g. no C++ compiler for inductor's CPU kernels on this machine
        pytest.skip(f"torch.compile cannot build kernels here: {type(exc).__name__}: {str(exc)[:200]}")
    assert counters["stats"]["unique_graphs"] >= 1, dict(counters["stats"])
    assert counters["inductor"], "inductor compiled nothing"
    for a, b in zip(eager, compiled):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_backend_errors(checkpoint, tmp_path, capsys):
    bare = tmp_path / "bare"
    ASTForAudioClassification(ASTConfig(**SMALL, max_length=128)).save_pretrained(bare)
    with pytest.raises(ASTAudioError, match="no model.onnx for the onnxruntime backend"):
        AudioClassifier.from_pretrained(bare, backend="onnxruntime")
    with pytest.raises(ValueError, match="backend must be one of"):
        AudioClassifier.from_pretrained(bare, backend="tensorrt")
    assert main(["export", str(bare)]) == 1
    assert "choose an export format" in capsys.readouterr().err
