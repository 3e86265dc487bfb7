"""A fine-tuning script written for `transformers.Trainer`, with ast-audio's model swapped in, runs; what it
saves loads back in ast-audio and gives the fine-tuned model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, pipeline
from ast_audio.errors import CheckpointNotFoundError
from helpers import SMALL, randomize_

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # the Trainer needs it

LABELS = 3


def test_trainer_fine_tune_saves_a_model_ast_audio_loads(tmp_path):
    extractor = ASTFeatureExtractor(max_length=128)
    rng = np.random.default_rng(0)
    clips = [rng.standard_normal(8000).astype(np.float32) * (0.05 + 0.05 * i) for i in range(4)]
    features = extractor(clips, sampling_rate=16000, return_tensors="pt")["input_values"]
    dataset = [{"input_values": features[i], "labels": i % LABELS} for i in range(len(clips))]
    config = ASTConfig(**SMALL, max_length=128, id2label={i: f"word {i}" for i in range(LABELS)})
    model = randomize_(ASTForAudioClassification(config))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, max_steps=2, per_device_train_batch_size=2,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no", logging_strategy="no",
        disable_tqdm=True, seed=0,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=dataset, eval_dataset=dataset,
                                   processing_class=extractor)
    trainer.train()
    assert np.isfinite(trainer.evaluate()["eval_loss"])
    trained = tmp_path / "trained"
    trainer.save_model(str(trained))
    assert any(not torch.equal(before[key], value) for key, value in model.state_dict().items())

    model.eval()
    with torch.no_grad():
        expected = model(features).logits
    if not (trained / "config.json").exists():  # the Trainer wrote the weights only: the error names the fix
        with pytest.raises(CheckpointNotFoundError, match=r"no config\.json .* pass config="):
            ASTForAudioClassification.from_pretrained(trained)
    loaded = ASTForAudioClassification.from_pretrained(trained, config=model.config)
    with torch.no_grad():
        torch.testing.assert_close(loaded(features).logits, expected, rtol=0, atol=0)

    # The config taken from another checkpoint (the one fine-tuning started from), then the directory completed
    # with save_pretrained: the whole of ast-audio (here the pipeline) reads it.
    model.save_pretrained(tmp_path / "base")
    loaded = ASTForAudioClassification.from_pretrained(trained, config=tmp_path / "base")
    loaded.save_pretrained(trained)
    with torch.no_grad():
        torch.testing.assert_close(ASTForAudioClassification.from_pretrained(trained)(features).logits, expected,
                                   rtol=0, atol=0)
    labels = pipeline("audio-classification", model=str(trained), device="cpu")(clips[0], sampling_rate=16000)
    assert {item["label"] for item in labels} == {"word 0", "word 1", "word 2"}
