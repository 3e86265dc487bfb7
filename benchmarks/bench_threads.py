"""Features while the model runs: torch's default threads against the runner's thread budget, in one run.

The server and cluster workers run decoding and features beside the model. This script runs the inference
core (`InferenceRunner.run`: features in a background thread, the model in the caller's) over 10 s clips,
with every core for both stages (the default `ThreadBudget.for_machine()`), then with a single-threaded
feature stage, in alternating repeats. It times every feature batch as it is computed beside the model.
With `--busy`, another process spins on one core the whole time (another job on the machine); it is bounded
in time and stopped by its pid. Prints feature time per clip (median and 90th percentile), end-to-end clips/s,
and the budget's ratios to the default.

    python benchmarks/bench_threads.py [--clips 24] [--busy] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from table import print_table  # noqa: E402


def busy_process(seconds: float) -> subprocess.Popen:
    """A process that keeps one core busy for at most `seconds`."""
    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def measure(runner, clips: list[np.ndarray], budget) -> dict:
    """Run `clips` through `runner` with `budget`; feature time per clip of each batch, and clips/s overall."""
    feature_ms: list[float] = []
    featurise = runner.features

    def timed(batch: list[np.ndarray]):
        start = time.perf_counter()
        features = featurise(batch)
        feature_ms.append((time.perf_counter() - start) * 1000 / len(batch))
        return features

    runner.features, runner.threads = timed, budget
    try:
        start = time.perf_counter()
        results = list(runner.run(clips, window=runner.timing.input_seconds, hop=runner.timing.input_seconds,
                                  sampling_rate=16000))
        elapsed = time.perf_counter() - start
    finally:
        runner.features = featurise
    assert all(result.ok for result in results)
    return {"feature_ms_per_clip": float(np.median(feature_ms)), "feature_ms_p90": float(np.percentile(feature_ms, 90)),
            "clips_per_s": len(clips) / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs of each setting (medians shown)")
    parser.add_argument("--busy", action="store_true", help="keep one core busy with another process")
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from ast_audio import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification
    from ast_audio.features.timing import Timing
    from ast_audio.inference.backends import TorchBackend
    from ast_audio.inference.runner import InferenceRunner
    from ast_audio.runtime import ThreadBudget

    torch.manual_seed(0)
    # A 6-layer, 384-wide encoder over the default input: a model call takes a good fraction of a second.
    config = ASTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536)
    extractor = ASTFeatureExtractor()
    runner = InferenceRunner(
        TorchBackend(ASTForAudioClassification(config), torch.device("cpu")), extractor,
        Timing.for_model(config), [str(i) for i in range(config.num_labels)], "sigmoid", batch_size=args.batch_size,
    )
    rng = np.random.default_rng(0)
    clips = list((0.1 * rng.standard_normal((args.clips, 160000))).astype(np.float32))
    settings = {"all cores": ThreadBudget.for_machine(), "features 1 thread": ThreadBudget.for_machine(feature_threads=1)}
    measure(runner, clips[: args.batch_size], settings["all cores"])  # warm-up

    busy = busy_process(600) if args.busy else None
    runs: dict[str, list[dict]] = {name: [] for name in settings}
    try:
        for _ in range(args.repeats):
            for name, budget in settings.items():
                runs[name].append(measure(runner, clips, budget))
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    results = {name: {key: float(np.median([r[key] for r in rs])) for key in rs[0]} for name, rs in runs.items()}
    base = results["all cores"]
    rows = [
        [name, r["feature_ms_per_clip"], r["feature_ms_p90"], base["feature_ms_per_clip"] / r["feature_ms_per_clip"],
         r["clips_per_s"], r["clips_per_s"] / base["clips_per_s"]]
        for name, r in results.items()
    ]
    print(f"cores {os.cpu_count()}, threads per stage by default {ThreadBudget.for_machine().model}, "
          f"another process busy: {'yes' if args.busy else 'no'}, {args.clips} clips of 10 s")
    print_table(
        [("setting", 18, "s"), ("features ms/clip", 17, ".2f"), ("p90 ms/clip", 12, ".2f"),
         ("features speed-up", 18, ".2x"), ("clips/s", 8, ".3f"), ("vs default", 11, ".2x")],
        rows,
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"busy": args.busy, "results": results}, handle, indent=2)


if __name__ == "__main__":
    main()
