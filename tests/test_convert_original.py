"""The research release's .pth state dicts convert to our layout and give the same logits."""

from __future__ import annotations

import json
import os
import tempfile

import pytest
import torch
from safetensors.torch import load_file

from ast_audio import ASTForAudioClassification, CheckpointError, convert_original
from ast_audio.cli import main
from ast_audio.checkpoints.release import infer_geometry
from helpers import SMALL, randomize_, spectrogram

transformers = pytest.importorskip("transformers")


def release_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's public-layout weights (as saved on disk), renamed and packed the way the release saved them."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        sd = load_file(os.path.join(tmp, "model.safetensors"))
    p = "audio_spectrogram_transformer."
    out = {
        "module.v.cls_token": sd[p + "embeddings.cls_token"],
        "module.v.dist_token": sd[p + "embeddings.distillation_token"],
        "module.v.pos_embed": sd[p + "embeddings.position_embeddings"],
        "module.v.patch_embed.proj.weight": sd[p + "embeddings.patch_embeddings.projection.weight"],
        "module.v.patch_embed.proj.bias": sd[p + "embeddings.patch_embeddings.projection.bias"],
        "module.v.norm.weight": sd[p + "layernorm.weight"],
        "module.v.norm.bias": sd[p + "layernorm.bias"],
        "module.mlp_head.0.weight": sd["classifier.layernorm.weight"],
        "module.mlp_head.0.bias": sd["classifier.layernorm.bias"],
        "module.mlp_head.1.weight": sd["classifier.dense.weight"],
        "module.mlp_head.1.bias": sd["classifier.dense.bias"],
        # DeiT's own heads, unused by AST, present in the release files.
        "module.v.head.weight": torch.randn(1000, model.config.hidden_size),
        "module.v.head.bias": torch.randn(1000),
        "module.v.head_dist.weight": torch.randn(1000, model.config.hidden_size),
        "module.v.head_dist.bias": torch.randn(1000),
    }
    for i in range(model.config.num_hidden_layers):
        layer = f"{p}encoder.layer.{i}."
        block = f"module.v.blocks.{i}."
        for kind in ("weight", "bias"):
            out[block + f"attn.qkv.{kind}"] = torch.cat(
                [sd[layer + f"attention.attention.{name}.{kind}"] for name in ("query", "key", "value")]
            )
            out[block + f"norm1.{kind}"] = sd[layer + f"layernorm_before.{kind}"]
            out[block + f"attn.proj.{kind}"] = sd[layer + f"attention.output.dense.{kind}"]
            out[block + f"norm2.{kind}"] = sd[layer + f"layernorm_after.{kind}"]
            out[block + f"mlp.fc1.{kind}"] = sd[layer + f"intermediate.dense.{kind}"]
            out[block + f"mlp.fc2.{kind}"] = sd[layer + f"output.dense.{kind}"]
    return out


@pytest.fixture
def reference():
    config = transformers.ASTConfig(**SMALL, max_length=512, num_labels=4)
    return randomize_(transformers.ASTForAudioClassification(config), seed=11).eval()


def test_release_pth_converts_to_same_logits(tmp_path):
    # 64-dimensional heads as in every DeiT model, so the head count needs no flag.
    config = transformers.ASTConfig(**{**SMALL, "hidden_size": 128, "num_attention_heads": 2}, max_length=512, num_labels=4)
    reference = randomize_(transformers.ASTForAudioClassification(config), seed=12).eval()
    torch.save(release_state_dict(reference), tmp_path / "esc50.pth")
    csv_path = tmp_path / "class_labels_indices.csv"
    csv_path.write_text("index,mid,display_name\n0,/m/a,Dog\n1,/m/b,Rain\n2,/m/c,\"Crying, sobbing\"\n3,/m/d,Siren\n")
    config = convert_original(tmp_path / "esc50.pth", tmp_path / "out", labels_csv=csv_path)
    assert (config.frequency_stride, config.time_stride, config.max_length) == (10, 10, 512)
    assert config.id2label == {0: "Dog", 1: "Rain", 2: "Crying, sobbing", 3: "Siren"}
    preprocessor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert preprocessor["max_length"] == 512 and preprocessor["mean"] == pytest.approx(-4.2677393)

    ours = ASTForAudioClassification.from_pretrained(tmp_path / "out")
    x = spectrogram(2, 512)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, reference(x).logits, atol=1e-4, rtol=0)
    assert ours.config.label2id["Siren"] == 3


def test_convert_command_line(tmp_path, reference, capsys):
    state = release_state_dict(reference)
    torch.save({k[len("module."):]: v for k, v in state.items()}, tmp_path / "plain.pth")  # saved without DataParallel
    code = main(["convert", str(tmp_path / "plain.pth"), str(tmp_path / "out"), "--heads", "4", "--mean", "-6.6268077", "--std", "5.358466"])
    assert code == 0
    assert "512 frames" in capsys.readouterr().out
    preprocessor = json.loads((tmp_path / "out" / "preprocessor_config.json").read_text())
    assert preprocessor["std"] == pytest.approx(5.358466)
    ours = ASTForAudioClassification.from_pretrained(tmp_path / "out")
    x = spectrogram(1, 512, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x).logits, reference(x).logits, atol=1e-4, rtol=0)


def test_convert_reports_bad_files(tmp_path, reference, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"this is not a pickle")
    assert main(["convert", str(bad), str(tmp_path / "out")]) == 1
    assert "bad.pth" in capsys.readouterr().err
    torch.save({"module.foo": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not an AST research-release state dict"):
        convert_original(tmp_path / "other.pth", tmp_path / "out")
    torch.save(release_state_dict(reference), tmp_path / "ok.pth")
    (tmp_path / "labels.csv").write_text("index,mid,display_name\n0,/m/a,Dog\n")
    with pytest.raises(CheckpointError, match="1 names but the checkpoint's head has 4"):
        convert_original(tmp_path / "ok.pth", tmp_path / "out", labels_csv=tmp_path / "labels.csv")


@pytest.mark.parametrize(
    "patches,expected",
    [
        (1212, (10, 10, 1024)),  # AudioSet 10-10
        (850, (12, 12, 1024)),
        (657, (14, 14, 1024)),
        (512, (16, 16, 1024)),
        (600, (10, 10, 512)),  # ESC-50
        (64, (16, 16, 128)),  # once guessed as stride 15
        (768, (10, 16, 1024)),  # unequal strides
    ],
)
def test_geometry_inferred_from_patch_count(patches, expected):
    g = infer_geometry(patches)
    assert (g.frequency_stride, g.time_stride, g.max_length) == expected


def test_speech_commands_geometry_needs_its_frames():
    with pytest.raises(CheckpointError, match=r"3 geometries give 144 patches .* strides 10/10, 128 frames; "
                                              r"strides 14/16, 256 frames; strides 16/14, 256 frames"):
        infer_geometry(144)
    g = infer_geometry(144, max_length=128)  # what --dataset speechcommands or --frames 128 gives
    assert (g.frequency_stride, g.time_stride, g.max_length) == (10, 10, 128)


def test_geometry_given_values_are_checked():
    g = infer_geometry(12 * 99, frequency_stride=10, time_stride=10, max_length=1000)
    assert g.max_length == 1000
    with pytest.raises(CheckpointError, match="no geometry"):
        infer_geometry(1212, frequency_stride=10, time_stride=10, max_length=512)


def test_class_labels_csv_is_checked_once_for_convert_and_training(tmp_path):
    from ast_audio import ConfigError
    from ast_audio.training.data import LabelSpace

    (tmp_path / "gap.csv").write_text("index,mid,display_name\n0,/m/a,Dog\n2,/m/c,Rain\n")
    (tmp_path / "text.csv").write_text("index,mid,display_name\nzero,/m/a,Dog\n")
    (tmp_path / "ok.csv").write_text("index,mid,display_name\n1,/m/b,Rain\n0,/m/a,Dog\n")
    with pytest.raises(ConfigError, match=r"gap.csv: indices must run 0..1 without gaps"):
        LabelSpace.from_csv(str(tmp_path / "gap.csv"))
    with pytest.raises(ConfigError, match="text.csv: the index column must hold integers"):
        LabelSpace.from_csv(str(tmp_path / "text.csv"))
    labels = LabelSpace.from_csv(str(tmp_path / "ok.csv"))
    assert labels.names == ["Dog", "Rain"] and labels.keys == ["/m/a", "/m/b"]


# ----------------------------------------------------------------------------------- the release's own numbers
from release_model import ReleaseAST, release_checkpoint  # noqa: E402


@pytest.mark.parametrize("frames,dataset", [(1024, "audioset"), (512, "esc50"), (128, "speechcommands")])
def test_match_release_gives_the_original_codes_logits(tmp_path, frames, dataset):
    release = ReleaseAST(labels=5, frames=frames).eval()
    torch.save(release_checkpoint(release), tmp_path / "release.pth")
    x = spectrogram(3, frames, seed=frames)
    with torch.no_grad():
        expected = release(x)
    convert_original(tmp_path / "release.pth", tmp_path / "exact", dataset=dataset, match_release=True)
    exact = ASTForAudioClassification.from_pretrained(tmp_path / "exact")
    convert_original(tmp_path / "release.pth", tmp_path / "hf", dataset=dataset)
    converted = ASTForAudioClassification.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        torch.testing.assert_close(exact(x).logits, expected, atol=1e-5, rtol=0)
        hf_style = (converted(x).logits - expected).abs().max().item()
    assert 1e-6 < hf_style < 5e-3  # 1e-12 epsilons, as the public converted checkpoints: close, not equal
    config = json.loads((tmp_path / "exact" / "config.json").read_text())
    assert config["layer_norm_eps"] == 1e-6 and config["classifier_layer_norm_eps"] == 1e-5
    # The reference reads the same directory (ignoring the head's epsilon).
    reference = transformers.ASTForAudioClassification.from_pretrained(tmp_path / "exact").eval()
    with torch.no_grad():
        assert (reference(x).logits - expected).abs().max().item() < 5e-3


@pytest.mark.parametrize("fstride,tstride,frames,flags,candidates", [
    (10, 10, 128, ["--frames", "128"], "3 geometries"),  # Speech Commands' patch count fits 3 geometries
    (16, 16, 100, ["--fstride", "16", "--tstride", "16", "--frames", "100"], "2 geometries"),
    (10, 10, 200, ["--fstride", "10", "--tstride", "10", "--frames", "200"], "no geometry"),
    (16, 16, 300, ["--fstride", "16", "--tstride", "16", "--frames", "300"], "3 geometries"),
])
def test_ambiguous_geometry_is_refused_and_flags_resolve_it(tmp_path, capsys, fstride, tstride, frames, flags,
                                                             candidates):
    release = ReleaseAST(labels=3, frames=frames, fstride=fstride, tstride=tstride).eval()
    torch.save(release_checkpoint(release), tmp_path / "model.pth")
    assert main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "refused")]) == 1
    err = capsys.readouterr().err
    assert candidates in err and ("--fstride" in err) and not (tmp_path / "refused").exists()
    assert main(["convert", str(tmp_path / "model.pth"), str(tmp_path / "out"), "--match-release", *flags]) == 0
    model = ASTForAudioClassification.from_pretrained(tmp_path / "out")
    assert (model.config.frequency_stride, model.config.time_stride, model.config.max_length) == (fstride, tstride, frames)
    x = spectrogram(2, frames)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, release(x), atol=1e-5, rtol=0)


def test_unsupported_layouts_are_refused_with_what_was_found(tmp_path, capsys):
    base = release_checkpoint(ReleaseAST(labels=3, frames=128))
    layouts = {
        "nokd": ({k: v for k, v in base.items() if k != "module.v.dist_token"}, "one CLS token and no distillation"),
        "avgtok": ({k: v for k, v in base.items() if "_token" not in k}, "no CLS or distillation token"),
        "frame": ({**base, "module.v.patch_embed.proj.weight": torch.zeros(128, 1, 128, 2)}, "patches of 128x2"),
        "ssast": ({**base, "module.cpredlayer.0.weight": torch.zeros(4, 4), "module.mask_embed": torch.zeros(1, 1, 4)},
                  "an SSAST pretraining checkpoint"),
    }
    for name, (state, message) in layouts.items():
        torch.save(state, tmp_path / f"{name}.pth")
        assert main(["convert", str(tmp_path / f"{name}.pth"), str(tmp_path / name), "--frames", "128"]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / name).exists()


def test_dataset_presets_and_warnings(tmp_path, caplog):
    torch.save(release_checkpoint(ReleaseAST(labels=4, frames=512)), tmp_path / "esc.pth")
    with caplog.at_level("WARNING"):
        config = convert_original(tmp_path / "esc.pth", tmp_path / "esc", dataset="esc50")
    preprocessor = json.loads((tmp_path / "esc" / "preprocessor_config.json").read_text())
    assert (preprocessor["mean"], preprocessor["std"], preprocessor["max_length"]) == (-6.6268077, 5.358466, 512)
    assert config.problem_type == "single_label_classification"
    assert "labels are unnamed" in caplog.text and "assuming AudioSet's normalisation" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        config = convert_original(tmp_path / "esc.pth", tmp_path / "plain")
    assert "assuming AudioSet's normalisation" in caplog.text and config.problem_type is None
    with pytest.raises(CheckpointError, match="unknown dataset preset 'esc'"):
        convert_original(tmp_path / "esc.pth", tmp_path / "bad", dataset="esc")
