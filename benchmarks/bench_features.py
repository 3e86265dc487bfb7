"""Feature extraction speed: ast_audio's ASTFeatureExtractor vs transformers' (NumPy path), in one run.

Prints a table (and writes JSON with --json) of clips per second and the ratio, for 8 clips of 10 s of
noise-like and of tonal audio (tonal frames take ast_audio's float64 refinement path).

    python benchmarks/bench_features.py [--clips 8] [--seconds 10] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch


def make_clips(kind: str, count: int, seconds: float, rate: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    clips = []
    for i in range(count):
        if kind == "noise":
            # Pink-ish noise with a slow amplitude envelope: a stand-in for field recordings.
            white = rng.standard_normal(n)
            coloured = np.convolve(white, np.ones(4) / 4, mode="same")
            clip = 0.1 * coloured * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t + i))
        else:
            # Harmonic tones with a vibrato: the hardest case for float32 precision.
            f0 = 220.0 * (1 + i / 8)
            clip = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)) for k in range(1, 5))
        clips.append(clip.astype(np.float32))
    return clips


def best_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    warnings.filterwarnings("ignore")
    import transformers

    from ast_audio.features.extractor import ASTFeatureExtractor

    ours, reference = ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    rows = []
    for kind in ("noise", "tonal"):
        clips = make_clips(kind, args.clips, args.seconds)
        ours_out = ours(clips, sampling_rate=16000, return_tensors="np")["input_values"]
        ref_out = reference(clips, sampling_rate=16000, return_tensors="np")["input_values"]
        max_diff = float(np.abs(ours_out - ref_out).max())
        ref_best, ref_median = best_time(lambda: reference(clips, sampling_rate=16000, return_tensors="np"), args.repeats)
        our_best, our_median = best_time(lambda: ours(clips, sampling_rate=16000, return_tensors="np"), args.repeats)
        rows.append(
            dict(signal=kind, clips=args.clips, seconds=args.seconds, reference_ms=ref_best * 1e3, ours_ms=our_best * 1e3,
                 reference_median_ms=ref_median * 1e3, ours_median_ms=our_median * 1e3,
                 reference_clips_per_s=args.clips / ref_best, ours_clips_per_s=args.clips / our_best,
                 speedup=ref_best / our_best, max_abs_diff_normalised=max_diff)
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} clips of {args.seconds:g} s; best of {args.repeats}")
    header = f"{'signal':8s} {'reference ms':>13s} {'ours ms':>9s} {'ref clips/s':>12s} {'ours clips/s':>13s} {'speedup':>8s} {'max |diff|':>11s}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['signal']:8s} {r['reference_ms']:13.1f} {r['ours_ms']:9.1f} {r['reference_clips_per_s']:12.1f} "
              f"{r['ours_clips_per_s']:13.1f} {r['speedup']:7.1f}x {r['max_abs_diff_normalised']:11.2e}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
