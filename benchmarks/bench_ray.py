"""Files per second: the local engine against Ray with 1 and 2 model replicas on the same folder, in one run.

Writes N ten-second FLAC files, tags them with `classify --format parquet` (local engine), then with
`--engine ray` on a local Ray instance with 1 and 2 workers (their CPUs fitted to the machine by the engine:
1 each, or less where decoding needs room), and
prints files/s, Ray's overhead at 1 worker (target: within 15% of local) and the scaling efficiency at 2
(speed-up / 2; target >= 0.8 where the machine has the cores). Ray's start is not timed.

    python benchmarks/bench_ray.py [--files 24] [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from checkpoints import random_checkpoint  # noqa: E402
from table import print_table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=24)
    parser.add_argument("--small", action="store_true", help="a 2-layer, 64-wide model instead of the base size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import ray
    import soundfile as sf
    import torch

    from ast_audio.cli import main as cli

    tmp = random_checkpoint(args.small)
    folder = os.path.join(tmp, "audio")
    os.makedirs(folder)
    rng = np.random.default_rng(0)
    for i in range(args.files):
        sf.write(os.path.join(folder, f"clip{i:03d}.flac"), (0.1 * rng.standard_normal(160000)).astype(np.float32), 16000)
    cores = len(os.sched_getaffinity(0))
    common = ["classify", folder, "--model", tmp, "--batch-size", str(args.batch_size), "-q"]

    def timed(arguments: list[str], output: str) -> float:
        shutil.rmtree(output, ignore_errors=True)
        started = time.perf_counter()
        cli([*common, *arguments, "-o", output])
        return args.files / (time.perf_counter() - started)

    local = timed(["-f", "parquet"], os.path.join(tmp, "local.parquet"))
    from ast_audio.commands._ray import join_ray, require_ray_quietly

    require_ray_quietly(verbose=False)  # as the command does: Ray's own lines off stderr
    join_ray(None, verbose=False, num_cpus=cores)
    rows = [["local", 1, local, 1.0, None]]
    try:
        timed(["--engine", "ray", "--num-workers", "1"], os.path.join(tmp, "warm"))
        for workers in (1, 2):
            threads = str(max(1, cores // workers))
            speed = timed(["--engine", "ray", "--num-workers", str(workers), "--threads", threads],
                          os.path.join(tmp, f"ray{workers}"))
            rows.append(["ray", workers, speed, speed / local, speed / rows[1][2] / workers if workers > 1 else None])
    finally:
        ray.shutdown()
    print(f"{args.files} files of 10 s, {'small' if args.small else 'base'} model, {cores} cores, torch "
          f"{torch.__version__}, ray {ray.__version__}")
    print_table([("engine", 7, "s"), ("workers", 8, "d"), ("files/s", 8, ".2f"), ("vs local", 9, ".2f"),
                 ("scaling eff.", 13, "s")],
                [[e, w, s, r, "" if eff is None else f"{eff:.2f}"] for e, w, s, r, eff in rows])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"rows": rows, "cores": cores}, handle, indent=2)


if __name__ == "__main__":
    main()
