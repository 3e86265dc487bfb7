"""Thresholds per class and calibration, measured on held-out clips (issue 22's check).

1. The model of `bench_events.py` (`scratch_small` trained on four synthetic sound classes and a background
   class; trained once under `--work` and reused) scores two fresh labelled sets of 1.28 s clips drawn as its
   training clips are (`--clips` per class each, other seeds): a calibration set and a held-out set.
2. `ast-audio calibrate MODEL calibration/ --precision P --calibration platt` (the command line, as a user
   runs it) writes thresholds.json; in-process, the same functions give the F1 thresholds, the best single
   global threshold, and Platt and isotonic calibrations on the calibration set.
3. On the held-out set, per class: the precision reached at the learned target-precision thresholds
   (within 0.05 of P?), F1 at the learned F1 thresholds against F1 at the best global threshold, and the
   expected calibration error (15 bins) before and after each calibration.

    python benchmarks/bench_thresholds.py [--work DIR] [--clips 60] [--precision 0.9] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(__file__))
from bench_events import BACKGROUND, RATE, SOUNDS, train_model, training_clip  # noqa: E402
from table import cpu_name, print_table  # noqa: E402

CLASSES = (*SOUNDS, BACKGROUND)


def make_set(root: str, clips: int, seed: int) -> None:
    """`clips` labelled clips per class in one folder per class (skipped when already there)."""
    if os.path.isdir(root):
        return
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        os.makedirs(os.path.join(root, kind))
        for i in range(clips):
            sf.write(os.path.join(root, kind, f"{i:03d}.wav"), training_clip(kind, rng), RATE)


def clip_scores(checkpoint: str, root: str, threads: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scores, targets, labels) of a folder-per-class set, scored by the engine as calibrate scores it."""
    from ast_audio.inference.options import InferenceOptions

    classifier = InferenceOptions(model=checkpoint, device="cpu", threads=threads).load()
    labels = list(classifier.labels)
    paths = sorted(os.path.join(root, kind, name) for kind in CLASSES for name in os.listdir(os.path.join(root, kind)))
    results = classifier.classify(paths)
    scores = np.stack([result.scores for result in results])
    targets = np.array([[os.path.basename(os.path.dirname(p)) == label for label in labels] for p in paths])
    return scores, targets, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "ast_audio_bench_events"),
                        help="bench_events.py's folder (its trained model is reused; trained there if missing)")
    parser.add_argument("--clips", type=int, default=60, help="clips per class in each of the two sets")
    parser.add_argument("--precision", type=float, default=0.9, help="the target precision")
    parser.add_argument("--per-class", type=int, default=40, help="training clips per class (if training)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()

    from ast_audio.answers.calibration import expected_calibration_error, fit_calibration
    from ast_audio.answers.thresholds import Thresholds, choose_thresholds, precision_recall_f1

    checkpoint, _ = train_model(args.work, args.per_class, [], args.threads)
    calibration_set = os.path.join(args.work, "thresholds", f"calibration{args.clips}")
    held_out_set = os.path.join(args.work, "thresholds", f"held_out{args.clips}")
    make_set(calibration_set, args.clips, seed=101)
    make_set(held_out_set, args.clips, seed=202)
    written = os.path.join(args.work, "thresholds", "thresholds.json")
    subprocess.run([sys.executable, "-m", "ast_audio", "calibrate", checkpoint, calibration_set, "--precision",
                    str(args.precision), "--calibration", "platt", "--threads", str(args.threads), "-q", "-o",
                    written], check=True)
    target = Thresholds.read(written)
    fit_scores, fit_targets, labels = clip_scores(checkpoint, calibration_set, args.threads)
    scores, targets, _ = clip_scores(checkpoint, held_out_set, args.threads)
    best_f1 = choose_thresholds(fit_scores, fit_targets, labels)
    p_target, r_target, _ = precision_recall_f1(target.decide(scores, labels), targets)
    *_, f1_own = precision_recall_f1(best_f1.decide(scores, labels), targets)
    *_, f1_global = precision_recall_f1(scores >= best_f1.default, targets)
    learned = [i for i, label in enumerate(labels) if label in target.thresholds]
    reached = [i for i in learned if p_target[i] >= args.precision - 0.05]
    rows = [[label, target.classes[label].threshold, p_target[i], r_target[i], best_f1.classes[label].threshold,
             f1_own[i], f1_global[i]] for i, label in enumerate(labels)]
    print(f"model {checkpoint}; {args.clips} clips per class in each set; target precision {args.precision:g}")
    print_table([("class", 10, "s"), ("thr@P", 6, ".3f"), ("P held", 6, ".3f"), ("R held", 6, ".3f"),
                 ("thr@F1", 6, ".3f"), ("F1 own", 6, ".3f"), ("F1 glob", 7, ".3f")], rows)
    ece = {"before": expected_calibration_error(scores, targets)}
    for method in ("platt", "isotonic"):
        fitted = fit_calibration(fit_scores, fit_targets, labels, method=method)
        ece[method] = expected_calibration_error(fitted.apply(scores, labels), targets)
    summary = {
        "cpu": cpu_name(), "classes_learned": len(learned), "reached_within_0.05": len(reached),
        "mean_f1_own": float(np.mean(f1_own)), "mean_f1_global": float(np.mean(f1_global)),
        "global_threshold": best_f1.default, "ece_held_out": ece,
    }
    print(f"target precision {args.precision:g} reached within 0.05 on held-out clips by {len(reached)} of "
          f"{len(learned)} classes with thresholds of their own; mean F1 {summary['mean_f1_own']:.3f} with "
          f"per-class thresholds, {summary['mean_f1_global']:.3f} with the best global one ({best_f1.default:.3f})")
    print("ECE on held-out clips: " + ", ".join(f"{name} {value:.4f}" for name, value in ece.items()))
    print(f"CPU: {cpu_name()} (shared machine)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)


if __name__ == "__main__":
    main()
