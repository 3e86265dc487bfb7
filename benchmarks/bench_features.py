"""Feature extraction speed: ast_audio's ASTFeatureExtractor vs transformers' (NumPy path), in one run.

Prints a table (and writes JSON with --json) of clips per second and the ratio, for 8 clips of 10 s of
noise-like and of tonal audio (tonal frames take ast_audio's float64 refinement path), and of real files
given with --audio. The two extractors run alternately, so a machine whose speed drifts (shared CPUs) slows
both alike; each round times several calls back to back (a steady loop, as a data pipeline runs), after a
pause so that neither runs while the other's idle BLAS threads still spin. The table gives the best round
of each and the median of the per-round ratios.

With --keep-freed-memory the process first calls ast_audio.keep_freed_memory() (the ast-audio command does):
both extractors then reuse freed buffers instead of having the allocator fault fresh pages in per call.

    python benchmarks/bench_features.py [--clips 8] [--seconds 10] [--repeats 10] [--calls 5] [--audio DIR]
        [--keep-freed-memory] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import numpy as np
import torch
from table import print_table


def make_clips(kind: str, count: int, seconds: float, rate: int = 16000) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    clips = []
    for i in range(count):
        if kind == "noise":
            # Low-passed noise (one-pole, no spectral nulls) with a slow amplitude envelope: a stand-in for
            # field recordings.
            from scipy.signal import lfilter

            coloured = lfilter([0.3], [1.0, -0.7], rng.standard_normal(n))
            clip = 0.1 * coloured * (0.6 + 0.4 * np.sin(2 * np.pi * 0.3 * t + i))
        else:
            # Harmonic tones with a vibrato: the hardest case for float32 precision.
            f0 = 220.0 * (1 + i / 8)
            clip = sum(0.3 / k * np.sin(2 * np.pi * k * f0 * t + 3 * np.sin(2 * np.pi * 5 * t)) for k in range(1, 5))
        clips.append(clip.astype(np.float32))
    return clips


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(reference, ours, repeats: int, calls: int = 5, pause: float = 0.3) -> tuple[list[float], list[float]]:
    """Run the two alternately, `repeats` rounds of `calls` back-to-back calls each (after one warm-up each);
    returns both lists of seconds per call, one per round.

    A round measures a steady loop, as a data pipeline calls an extractor, rather than one call landing on
    caches and idle threads left cold by the other extractor. A pause precedes each round: NumPy's OpenBLAS
    worker threads keep spinning for a while after the reference's calls and would otherwise take one of
    the two cores from whatever runs next.
    """
    reference(), ours()
    ref_times, our_times = [], []
    for _ in range(repeats):
        for fn, times in ((reference, ref_times), (ours, our_times)):
            time.sleep(pause)
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times.append((time.perf_counter() - start) / calls)
    return ref_times, our_times


def real_clips(paths: list[str], count: int, seconds: float) -> list[np.ndarray]:
    from ast_audio import find_audio_files, load_audio

    files = find_audio_files(paths)[:count]
    if not files:
        raise SystemExit(f"no audio files in {paths}")
    return [load_audio(path, 16000, duration=seconds) for path in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=10, help="alternating rounds")
    parser.add_argument("--calls", type=int, default=5, help="back-to-back calls timed per round")
    parser.add_argument("--audio", nargs="*", default=[], help="real audio files or folders to benchmark too")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="first call ast_audio.keep_freed_memory() (as the ast-audio command does): the "
                             "process reuses freed buffers instead of faulting fresh pages in, for both extractors")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.keep_freed_memory:
        from ast_audio import keep_freed_memory

        keep_freed_memory()

    warnings.filterwarnings("ignore")
    import transformers

    from ast_audio.features.extractor import ASTFeatureExtractor

    ours, reference = ASTFeatureExtractor(), transformers.ASTFeatureExtractor()
    signals = {kind: make_clips(kind, args.clips, args.seconds) for kind in ("noise", "tonal")}
    if args.audio:
        signals["real"] = real_clips(args.audio, args.clips, args.seconds)
    rows = []
    for kind, clips in signals.items():
        ours_out = ours(clips, sampling_rate=16000, return_tensors="np")["input_values"]
        ref_out = reference(clips, sampling_rate=16000, return_tensors="np")["input_values"]
        ref_times, our_times = alternate(
            lambda: reference(clips, sampling_rate=16000, return_tensors="np"),
            lambda: ours(clips, sampling_rate=16000, return_tensors="np"),
            args.repeats, args.calls,
        )
        ref_best, our_best = min(ref_times), min(our_times)
        rows.append(
            dict(signal=kind, clips=len(clips), seconds=args.seconds, reference_ms=ref_best * 1e3,
                 ours_ms=our_best * 1e3, reference_clips_per_s=len(clips) / ref_best,
                 ours_clips_per_s=len(clips) / our_best, speedup_best=ref_best / our_best,
                 speedup_median=statistics.median(r / o for r, o in zip(ref_times, our_times)),
                 max_abs_diff_normalised=float(np.abs(ours_out - ref_out).max()))
        )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.clips} clips of {args.seconds:g} s; "
          f"{args.repeats} alternating rounds of {args.calls} calls; allocator: "
          f"{'freed memory kept (keep_freed_memory)' if args.keep_freed_memory else 'glibc defaults'}")
    print_table(
        [("signal", 8, "s"), ("reference ms", 13, ".1f"), ("ours ms", 9, ".1f"), ("ref clips/s", 12, ".1f"),
         ("ours clips/s", 13, ".1f"), ("x (best)", 9, ".1x"), ("x (median)", 11, ".1x"), ("max |diff|", 11, ".2e")],
        [[r["signal"], r["reference_ms"], r["ours_ms"], r["reference_clips_per_s"], r["ours_clips_per_s"],
          r["speedup_best"], r["speedup_median"], r["max_abs_diff_normalised"]] for r in rows],
    )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
