"""Peak memory and throughput of classifying a long file, read a window at a time.

Writes an N-minute 16 kHz FLAC (default 60), classifies it with a small random model at the default
geometry (1024 frames, 10.24 s windows, 5.12 s hop) in a fresh process, and prints peak RSS before and
after, next to what decoding the whole file would take (N * 60 * 16000 * 4 bytes).

    python benchmarks/bench_long_audio.py [--minutes 60] [--batch-size 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time, torch
from ast_audio import AudioClassifier
checkpoint, path, batch = sys.argv[1], sys.argv[2], int(sys.argv[3])
classifier = AudioClassifier.from_pretrained(checkpoint, batch_size=batch)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
result = classifier.classify(path)
elapsed = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"rss_before_mb": before / 1024, "rss_peak_mb": after / 1024, "seconds": elapsed,
                  "windows": len(result.windows), "duration": result.duration}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()

    import numpy as np
    import soundfile as sf
    import torch

    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = os.path.join(tmp, "ckpt")
        config = ASTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                           num_labels=527)
        ASTForAudioClassification(config).save_pretrained(checkpoint)
        ASTFeatureExtractor().save_pretrained(checkpoint)
        path = os.path.join(tmp, "long.flac")
        rng = np.random.default_rng(0)
        with sf.SoundFile(path, "w", 16000, 1, subtype="PCM_16") as handle:
            for _ in range(int(args.minutes)):
                handle.write((0.1 * rng.standard_normal(60 * 16000)).astype(np.float32))
        child = subprocess.run([sys.executable, "-c", CHILD, checkpoint, path, str(args.batch_size)],
                               capture_output=True, text=True, check=True)
        stats = json.loads(child.stdout.strip().splitlines()[-1])
    whole_file_mb = args.minutes * 60 * 16000 * 4 / 2**20
    stats.update(minutes=args.minutes, whole_file_float32_mb=whole_file_mb,
                 growth_mb=stats["rss_peak_mb"] - stats["rss_before_mb"])
    print(f"{args.minutes:g} min file, {stats['windows']} windows, batch {args.batch_size}, torch {torch.__version__}")
    print(f"{'RSS after load':>16s} {'RSS peak':>10s} {'growth':>8s} {'whole file f32':>15s} {'time':>8s}")
    print(f"{stats['rss_before_mb']:13.0f} MB {stats['rss_peak_mb']:7.0f} MB {stats['growth_mb']:5.0f} MB "
          f"{whole_file_mb:12.0f} MB {stats['seconds']:7.1f} s")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(stats, handle, indent=2)


if __name__ == "__main__":
    main()
