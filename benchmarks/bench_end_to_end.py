"""End-to-end `classify` throughput on a folder of mixed MP3/FLAC/WAV files vs the model alone, in one run.

Writes N ten-second files (a third each MP3 from FFmpeg's LAME encoder through PyAV, FLAC and WAV; 44.1 kHz
for MP3, so decoding resamples), then measures (a) decoding alone (every window read and resampled), (b)
decoding plus features, (c) the model's forward on precomputed features in batches, and (d)
AudioClassifier.iter_classify on the files (decoding and features in a background thread while the model
runs). Prints the real-time factor (audio seconds per wall second) of each, the share of the end-to-end time
that decoding and features would take if they did not overlap the model, and end to end / model alone (target:
within 10%). Uses a random model of the default geometry (or --small for a quick run).

    python benchmarks/bench_end_to_end.py [--files 12] [--batch-size 8] [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from checkpoints import random_checkpoint  # noqa: E402
from table import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--small", action="store_true", help="a 2-layer model of width 64 instead of the base size")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    import soundfile as sf

    from ast_audio import AudioClassifier
    from ast_audio.inference.sources import AudioSource

    tmp = random_checkpoint(args.small)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
    from encoders import encode, reference_signal

    files = []
    for i in range(args.files):
        kind = ("mp3", "flac", "wav")[i % 3]
        path = os.path.join(tmp, f"clip{i:03d}.{kind}")
        if kind == "mp3":
            encode(path, seconds=10.0, rate=44100, bitrate=128000, seed=i)
        else:
            sf.write(path, reference_signal(10.0, 16000, seed=i)[:, 0], 16000)
        files.append(path)
    audio_seconds = 10.0 * len(files)

    classifier = AudioClassifier.from_pretrained(tmp, device="cpu", batch_size=args.batch_size)
    runner = classifier.runner
    window = runner.timing.input_seconds
    start = time.perf_counter()
    clips = [AudioSource(f, i, runner.timing).read(0.0, window) for i, f in enumerate(files)]
    decoding = time.perf_counter() - start
    start = time.perf_counter()
    features = torch.cat([runner.features(clips[i : i + args.batch_size]) for i in range(0, len(clips), args.batch_size)])
    featurising = time.perf_counter() - start
    with torch.inference_mode():
        runner.infer(features[: args.batch_size])  # warm-up
        start = time.perf_counter()
        for first in range(0, len(files), args.batch_size):
            runner.infer(features[first : first + args.batch_size])
        model_only = time.perf_counter() - start
    start = time.perf_counter()
    results = list(classifier.iter_classify(files))
    end_to_end = time.perf_counter() - start
    assert all(r.ok and r.warning is None for r in results)
    row = dict(files=len(files), batch_size=args.batch_size, model="small" if args.small else "base",
               decode_rtf=audio_seconds / decoding, features_rtf=audio_seconds / featurising,
               model_rtf=audio_seconds / model_only, end_to_end_rtf=audio_seconds / end_to_end,
               decode_share=decoding / end_to_end, features_share=featurising / end_to_end,
               ratio=model_only / end_to_end)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(files)} files of 10 s "
          f"(MP3 44.1 kHz, FLAC, WAV), {row['model']} model; real-time factor = audio s per wall s")
    print_table(
        [("stage", 20, "s"), ("real-time factor", 17, ".1f"), ("share of end to end", 20, ".1%")],
        [["decoding", row["decode_rtf"], row["decode_share"]], ["features", row["features_rtf"], row["features_share"]],
         ["model", row["model_rtf"], model_only / end_to_end], ["end to end", row["end_to_end_rtf"], 1.0]],
    )
    print(f"end to end / model alone: {100 * row['ratio']:.1f}%")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(row, handle, indent=2)


if __name__ == "__main__":
    main()
