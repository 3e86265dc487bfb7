"""End-to-end `classify` throughput on a folder vs the model alone, in one run.

Writes N ten-second FLAC files, then measures (a) the model's forward on precomputed features in batches
and (b) AudioClassifier.iter_classify on the files (decoding, resampling, features in a background thread
while the model runs). Prints clips/s for both and their ratio; the target is end to end within 10% of
the model alone. Uses a random model of the default geometry (or --small for a quick run).

    python benchmarks/bench_end_to_end.py [--files 16] [--batch-size 8] [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import warnings

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="a 2-layer model of width 64 instead of the base size")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import soundfile as sf

    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, AudioClassifier

    tmp = tempfile.mkdtemp()
    torch.manual_seed(0)
    size = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if args.small else {}
    ASTForAudioClassification(ASTConfig(num_labels=527, **size)).save_pretrained(tmp)
    ASTFeatureExtractor().save_pretrained(tmp)
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.files):
        path = os.path.join(tmp, f"clip{i:03d}.flac")
        t = np.arange(160000) / 16000
        sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 50 * i) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32), 16000)
        files.append(path)

    classifier = AudioClassifier.from_pretrained(tmp, device="cpu", batch_size=args.batch_size)
    extractor = classifier.feature_extractor
    from ast_audio import load_audio

    features = extractor([load_audio(f) for f in files], sampling_rate=16000, return_tensors="pt")["input_values"]
    with torch.inference_mode():
        classifier.runner.infer(features[: args.batch_size])  # warm-up
        start = time.perf_counter()
        for first in range(0, len(files), args.batch_size):
            classifier.runner.infer(features[first : first + args.batch_size])
        model_only = time.perf_counter() - start
    start = time.perf_counter()
    results = list(classifier.iter_classify(files))
    end_to_end = time.perf_counter() - start
    assert all(r.ok for r in results)
    row = dict(files=len(files), batch_size=args.batch_size, model="small" if args.small else "base",
               model_only_clips_per_s=len(files) / model_only, end_to_end_clips_per_s=len(files) / end_to_end,
               ratio=model_only / end_to_end)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(files)} files of 10 s, {row['model']} model")
    print(f"{'model only clips/s':>19s} {'end to end clips/s':>19s} {'end to end / model':>19s}")
    print(f"{row['model_only_clips_per_s']:19.2f} {row['end_to_end_clips_per_s']:19.2f} {100 * row['ratio']:18.1f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(row, handle, indent=2)


if __name__ == "__main__":
    main()
