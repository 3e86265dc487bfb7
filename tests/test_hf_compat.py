"""Drop-in behaviour of the public implementation's API, checked against `transformers` itself where it runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ast_audio
from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel
from helpers import SMALL, randomize_, save_small_checkpoint, spectrogram

transformers = pytest.importorskip("transformers")


def test_head_count_is_checked_when_the_model_is_built():
    """The config accepts hidden_size=32 with 12 heads, as the reference's does; building the model refuses it
    (transformers 5.x builds it and silently reshapes into 16 heads of 2)."""
    config = ASTConfig(hidden_size=32)
    reference_config = transformers.ASTConfig(hidden_size=32)
    assert config.hidden_size == reference_config.hidden_size == 32
    with pytest.raises(ValueError, match=r"The hidden size \(32\) is not a multiple of the number of attention heads"):
        ASTModel(config)


def test_config_level_output_flags_are_stored_and_honoured(tmp_path):
    config = ASTConfig(**SMALL, max_length=128, num_labels=3, output_attentions=True, output_hidden_states=True,
                       return_dict=False)
    model = randomize_(ASTForAudioClassification(config, attn_implementation="eager")).eval()
    with torch.no_grad():
        outputs = model(spectrogram(1, 128))
    assert isinstance(outputs, tuple) and len(outputs) == 3  # logits, hidden states, attentions
    assert len(outputs[1]) == SMALL["num_hidden_layers"] + 1 and len(outputs[2]) == SMALL["num_hidden_layers"]
    with torch.no_grad():
        assert not isinstance(model(spectrogram(1, 128), return_dict=True), tuple)  # the call wins
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["output_attentions"] is True and saved["return_dict"] is False
    reference = transformers.ASTConfig.from_pretrained(tmp_path)
    assert reference.output_attentions and reference.output_hidden_states and not reference.return_dict
    assert ASTConfig.from_pretrained(tmp_path).return_dict is False
    assert model.get_output_embeddings() is None


def test_json_methods_and_subfolder(tmp_path):
    config = ASTConfig(**SMALL, max_length=128, num_labels=2)
    config.to_json_file(tmp_path / "c.json")
    assert ASTConfig.from_json_file(tmp_path / "c.json") == config
    extractor = ASTFeatureExtractor(max_length=128, mean=-5.0)
    assert json.loads(extractor.to_json_string()) == extractor.to_dict()
    extractor.to_json_file(tmp_path / "e.json")
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "e.json").mean == -5.0
    written = extractor.save_pretrained(tmp_path / "repo" / "feature")
    assert written == [str(tmp_path / "repo" / "feature" / "preprocessor_config.json")]
    randomize_(ASTForAudioClassification(config)).save_pretrained(tmp_path / "repo" / "model")
    model = ASTForAudioClassification.from_pretrained(tmp_path / "repo", subfolder="model")
    assert model.config.max_length == 128
    assert ASTConfig.from_pretrained(tmp_path / "repo", subfolder="model").num_labels == 2
    assert ASTFeatureExtractor.from_pretrained(tmp_path / "repo", subfolder="feature").mean == -5.0


def test_pad_matches_the_reference():
    ours, reference = ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    rng = np.random.default_rng(0)
    features = {"input_values": [rng.standard_normal(n).astype(np.float32) for n in (3000, 5000)]}  # raw audio
    for kwargs in (dict(padding="longest"), dict(padding="max_length", max_length=6400)):
        got = ours.pad(dict(features), return_tensors="np", **kwargs)
        expected = reference.pad(dict(features), return_tensors="np", **kwargs)
        np.testing.assert_array_equal(got["input_values"], expected["input_values"])
    got = ours.pad(dict(features), padding="longest", return_attention_mask=True, return_tensors="pt")
    expected = reference.pad(dict(features), padding="longest", return_attention_mask=True, return_tensors="pt")
    assert torch.equal(got["attention_mask"].long(), expected["attention_mask"].long())


def test_num_parameters_counts_as_the_reference():
    """Every combination of only_trainable / exclude_embeddings, with the encoder frozen (a common fine-tune)."""
    config = dict(**SMALL, max_length=128, num_labels=3)
    ours = ASTForAudioClassification(ASTConfig(**config))
    reference = transformers.ASTForAudioClassification(transformers.ASTConfig(**config))
    for model in (ours, reference):
        model.audio_spectrogram_transformer.requires_grad_(False)
    head = sum(p.numel() for p in ours.classifier.parameters())
    assert ours.num_parameters(only_trainable=True) == head < ours.num_parameters()
    for only_trainable in (False, True):
        for exclude_embeddings in (False, True):
            flags = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
            assert ours.num_parameters(**flags) == reference.num_parameters(**flags), flags


def _same_answers(ours, reference, atol=1e-5):
    assert [item["label"] for item in ours] == [item["label"] for item in reference]
    np.testing.assert_allclose([item["score"] for item in ours], [item["score"] for item in reference], atol=atol)


@pytest.fixture(scope="module")
def clip():
    t = np.arange(16000) / 16000
    return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32) + 0.05 * np.random.default_rng(1).standard_normal(
        16000).astype(np.float32)


@pytest.mark.parametrize("problem_type", [None, "multi_label_classification", "regression"])
def test_pipeline_default_scores_follow_the_problem_type_as_the_reference(tmp_path, clip, problem_type):
    checkpoint = save_small_checkpoint(tmp_path, labels=8, problem_type=problem_type)
    ours = ast_audio.pipeline("audio-classification", model=checkpoint, device=-1, top_k=None)
    reference = transformers.pipeline("audio-classification", model=checkpoint, device=-1)
    _same_answers(ours(clip, sampling_rate=16000), reference(clip))  # the reference's default is every label


def test_pipeline_options_at_construction_and_per_call_as_the_reference(tmp_path, clip):
    checkpoint = save_small_checkpoint(tmp_path, labels=8)
    reference = transformers.pipeline("audio-classification", model=checkpoint, device="cpu")
    ours = ast_audio.pipeline("audio-classification", model=checkpoint, device=torch.device("cpu"))
    assert ours.device == torch.device("cpu") and ours.top_k == 5
    assert len(ours(clip, sampling_rate=16000)) == 5  # the default of the reference's constructor
    for function in ("softmax", "sigmoid", "none"):
        _same_answers(ours(clip, sampling_rate=16000, function_to_apply=function, top_k=None),
                      reference(clip, function_to_apply=function))
    _same_answers(ours(clip, sampling_rate=16000, top_k=3), reference(clip, top_k=3))
    _same_answers(ours(clip, sampling_rate=16000, top_k=100), reference(clip, top_k=100))  # capped: every label

    built = ast_audio.pipeline("audio-classification", model=checkpoint, top_k=3, function_to_apply="sigmoid")
    reference = transformers.pipeline("audio-classification", model=checkpoint, function_to_apply="sigmoid")
    _same_answers(built(clip, sampling_rate=16000), reference(clip, top_k=3))
    _same_answers(built(clip, sampling_rate=16000, function_to_apply="none"),
                  reference(clip, top_k=3, function_to_apply="none"))
    assert len(built(clip, sampling_rate=16000, top_k=None)) == 8
    best = built(clip, sampling_rate=16000)[0]["score"]
    assert built.classify(clip, sampling_rate=16000).scores.max() == pytest.approx(best)  # sigmoid, as calls

    for bad in (dict(function_to_apply="SOFTMAX"), dict(top_k=0), dict(top_k=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ast_audio.pipeline("audio-classification", model=checkpoint, **bad)
        with pytest.raises(ValueError, match=next(iter(bad))):
            built(clip, sampling_rate=16000, **bad)


def test_pipeline_device_as_an_int(tmp_path):
    checkpoint = save_small_checkpoint(tmp_path, labels=2)
    assert ast_audio.pipeline("audio-classification", model=checkpoint, device=-1).device == torch.device("cpu")
    if torch.cuda.is_available():
        assert ast_audio.pipeline("audio-classification", model=checkpoint, device=0).device == torch.device("cuda:0")
    else:
        with pytest.raises(ValueError, match=r"device 'cuda:0': CUDA is not available"):
            ast_audio.pipeline("audio-classification", model=checkpoint, device=0)


def test_pipeline_scores_each_window_before_pooling(tmp_path, clip):
    """A long input: the call's function is applied to every window's logits, then the windows are pooled."""
    checkpoint = save_small_checkpoint(tmp_path, labels=4)
    long_clip = np.concatenate([clip, -clip, clip[::-1]])
    ours = ast_audio.pipeline("audio-classification", model=checkpoint, device="cpu", top_k=None)
    for function, name in (("sigmoid", "sigmoid"), ("none", "identity")):
        classifier = ast_audio.AudioClassifier.from_pretrained(checkpoint, device="cpu", score_function=name)
        expected = classifier.classify(long_clip, sampling_rate=16000)
        assert len(expected.windows) > 1
        _same_answers(ours(long_clip, sampling_rate=16000, function_to_apply=function), expected.top(None))


def test_dict_without_sampling_rate_and_multichannel_arrays_are_refused_with_the_fix(tmp_path, clip):
    checkpoint = save_small_checkpoint(tmp_path, labels=3)
    ours = ast_audio.pipeline("audio-classification", model=checkpoint, device="cpu")
    reference = transformers.pipeline("audio-classification", model=checkpoint, device="cpu")
    with pytest.raises(ValueError, match="sampling_rate"):
        reference({"array": clip, "path": "clip.wav"})
    with pytest.raises(ValueError, match=r"needs 'sampling_rate', the rate of its 'array' in Hz"):
        ours({"array": clip, "path": "clip.wav"})
    at_8k = clip[::2].copy()
    assert ours({"array": at_8k, "path": "clip.wav", "sampling_rate": 8000}) == ours(at_8k, sampling_rate=8000)
    assert ours({"array": at_8k}, sampling_rate=8000) == ours(at_8k, sampling_rate=8000)

    stereo = np.stack([clip, clip], axis=1)  # (samples, channels), as soundfile reads a stereo file
    for call in (lambda: ours(stereo, sampling_rate=16000),
                 lambda: ASTFeatureExtractor()(stereo, sampling_rate=16000)):
        with pytest.raises(ValueError, match=r"looks like \(samples, channels\); mix it to mono first, e\.g\. "
                                             r"samples\.mean\(axis=1\)"):
            call()
    with pytest.raises(ValueError, match=r"looks like \(channels, samples\).*mean\(axis=0\)"):
        ours(stereo.T, sampling_rate=16000)
    assert len(ASTFeatureExtractor()(stereo.T, sampling_rate=16000)["input_values"]) == 2  # a batch of two
