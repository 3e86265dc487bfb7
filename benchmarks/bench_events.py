"""Sound events end to end: a small model trained on synthetic sounds, then events found in long recordings.

1. Generates four synthetic sound classes (tone bursts, chirp trains, click trains, noise bursts) and a
   background class, 1.28 s clips at 16 kHz, and trains `ast-audio train scratch_small` on them (as a user
   does: `stats`, then `train`); the model is cached under `--work`, so reruns skip training.
2. Places such sounds at known onsets in minutes-long backgrounds (`--files` x `--minutes`, `--events`
   sounds of 0.5-3 s each, at least 2 s apart), scores them with `AudioClassifier` (window: the model's input,
   1.295 s, hop half of it, unless `--window` / `--hop`), turns the window scores into events
   (`ast_audio.answers.events.events_from_windows`, hysteresis 0.5 / 0.3 on the softmax scores of the four
   sound classes), and reports per class and overall: event F1 with a 1 s collar (offset tolerance max(1 s,
   half the length)) by `ast_audio.answers.metrics` and by sed_eval (the oracle), the matched sounds, the
   sounds reported more than once (two detections of its class overlap it) and missed, the median absolute
   and signed onset and offset errors over matched sounds, and the model windows scored.
3. The same with each finer pass of `--finer` (`ast_audio.answers.refine`): windows of the same length
   around each candidate onset and/or offset, bisecting the hop in rounds, the boundaries rebuilt from all
   the windows; the extra windows each costs.
4. `--variant`: other rules on the same window scores (no more model runs), for the discussion of the
   targets: other thresholds, a class's own threshold, the mean instead of the minimum, shifted boundaries.

    python benchmarks/bench_events.py [--work DIR] [--window S] [--hop S] [--variant V] [--json out.json]

Timings name the CPU; on a shared machine they are contended.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(__file__))
from table import cpu_name, print_table  # noqa: E402

RATE = 16000
CLIP_SECONDS = 1.28
SOUNDS = ("tone", "chirp", "clicks", "noise")
BACKGROUND = "background"


# ---------------------------------------------------------------------------------------------- sounds
def background(rng: np.random.Generator, n: int, level: float) -> np.ndarray:
    """Room noise: white noise through a one-pole low-pass (pink-ish) plus some white, at RMS `level`."""
    from scipy.signal import lfilter

    white = rng.standard_normal(n)
    low = lfilter([0.1], [1.0, -0.9], white)
    x = 0.5 * low / low.std() + 0.5 * white
    return level * x / x.std()


def sound(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """`seconds` of one sound of `kind` (SOUNDS), peak-normalised to 1, with 5 ms fades.

    tone: a steady harmonic tone (f0 300-900 Hz); chirp: rising sweeps (800 -> 3000 Hz) every 0.2-0.35 s;
    clicks: a train of decaying 3 kHz clicks at 6-15 per second; noise: high-passed white noise.
    """
    n = max(1, int(round(seconds * RATE)))
    t = np.arange(n) / RATE
    if kind == "tone":
        f0 = rng.uniform(300, 900)
        x = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in (1, 2, 3))
    elif kind == "chirp":
        period = rng.uniform(0.2, 0.35)
        low, high = rng.uniform(700, 1000), rng.uniform(2500, 3500)
        progress = (t % period) / period
        x = np.sin(2 * np.pi * np.cumsum(low + (high - low) * progress) / RATE) * (progress < 0.8)
    elif kind == "clicks":
        rate = rng.uniform(6, 15)
        x = np.zeros(n)
        click_t = np.arange(int(0.01 * RATE)) / RATE
        click = np.sin(2 * np.pi * 3000 * click_t) * np.exp(-click_t * 500)
        for start in np.arange(rng.uniform(0, 1 / rate), seconds, 1 / rate):
            i = int(start * RATE)
            x[i:i + len(click)] += click[: n - i]
    elif kind == "noise":
        x = np.diff(rng.standard_normal(n + 1))
    else:
        raise ValueError(f"unknown sound {kind!r}: expected one of {SOUNDS}")
    fade = min(int(0.005 * RATE), n // 2)
    if fade:
        ramp = np.linspace(0, 1, fade)
        x[:fade] *= ramp
        x[n - fade:] *= ramp[::-1]
    return x / max(np.abs(x).max(), 1e-9)


def _level(rng: np.random.Generator) -> tuple[float, float]:
    """(sound peak, background RMS) in linear units: the sound at -26..-12 dBFS over noise at -62..-52."""
    return 10 ** (rng.uniform(-26, -12) / 20), 10 ** (rng.uniform(-62, -52) / 20)


def training_clip(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One 1.28 s clip: background, plus (unless `kind` is BACKGROUND) a 0.25-2 s sound of `kind` placed so
    that at least 0.25 s of it is in the clip (it may start before or end after), as a window of a long
    recording hears it."""
    n = int(RATE * CLIP_SECONDS)
    peak, noise = _level(rng)
    x = background(rng, n, noise)
    if kind != BACKGROUND:
        seconds = rng.uniform(0.25, 2.0)
        onset = rng.uniform(0.25 - seconds, CLIP_SECONDS - 0.25)
        s = peak * sound(kind, seconds, rng)
        first = int(round(onset * RATE))
        lo, hi = max(first, 0), min(first + len(s), n)
        x[lo:hi] += s[lo - first:hi - first]
    return x.astype(np.float32)


def make_training_set(root: str, per_class: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for kind in (*SOUNDS, BACKGROUND):
        os.makedirs(os.path.join(root, kind), exist_ok=True)
        for i in range(per_class):
            sf.write(os.path.join(root, kind, f"{i:03d}.wav"), training_clip(kind, rng), RATE)


def train_model(work: str, per_class: int, overrides: Sequence[str], threads: int) -> tuple[str, dict]:
    """The trained checkpoint directory under `work` (trained once, then reused) and what training took."""
    run = os.path.join(work, "run")
    best = os.path.join(run, "best")
    info_path = os.path.join(work, "training.json")
    if os.path.isdir(best) and os.path.exists(info_path):
        with open(info_path, encoding="utf-8") as handle:
            return best, json.load(handle)
    data = os.path.join(work, "train")
    if not os.path.isdir(data):
        make_training_set(data, per_class)
    stats = os.path.join(work, "stats.json")
    command = ["nice", "-n", "10", sys.executable, "-m", "ast_audio"]
    started = time.perf_counter()
    subprocess.run([*command, "stats", data, "-o", stats, "-q"], check=True, capture_output=True)
    extra = [item for pair in overrides for item in ("--set", pair)]
    done = subprocess.run([*command, "train", "scratch_small", "--train", data, "--stats", stats, "-o", run,
                           "--device", "cpu", "--threads", str(threads), "--no-resume", "--quiet", *extra],
                          capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"training failed: {done.stderr.strip().splitlines()[-3:]}")
    with open(os.path.join(run, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    info = {"seconds": time.perf_counter() - started, "per_class": per_class, "overrides": list(overrides),
            "results": results}
    with open(info_path, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    return best, info


# ---------------------------------------------------------------------------------------------- recordings
def make_recording(path: str, seconds: float, events: int, rng: np.random.Generator) -> list[Any]:
    """A `seconds`-long background with `events` sounds (0.5-3 s, classes in turn, shuffled) at random
    onsets, at least 2 s apart, never overlapping; writes `path` and returns the inserted `Event`s."""
    from ast_audio.answers.events import Event

    lengths = rng.uniform(0.5, 3.0, events)
    free = seconds - lengths.sum() - 2.0 * (events + 1)
    if free <= 0:
        raise SystemExit(f"{events} events do not fit in {seconds:g} s")
    gaps = 2.0 + free * rng.dirichlet(np.ones(events + 1))
    kinds = [SOUNDS[i % len(SOUNDS)] for i in rng.permutation(events)]
    peak, noise = _level(rng)
    x = background(rng, int(seconds * RATE), noise)
    placed, cursor = [], 0.0
    for kind, length, gap in zip(kinds, lengths, gaps):
        onset = round(float(cursor + gap), 3)
        s = 10 ** (rng.uniform(-6, 0) / 20) * peak * sound(kind, length, rng)
        first = int(round(onset * RATE))
        x[first:first + len(s)] += s
        placed.append(Event(kind, onset, round(onset + len(s) / RATE, 6)))
        cursor = onset + length
    sf.write(path, x.astype(np.float32), RATE)
    return placed


# ---------------------------------------------------------------------------------------------- the model
class Model:
    """The one place the benchmark runs the model (to become `classify --events` once it exists): window
    scores of a file at a window/hop, and scores of arbitrary windows of it, for the sound classes only."""

    def __init__(self, checkpoint: str, window: float, hop: float, threads: int) -> None:
        from ast_audio import AudioClassifier

        self.classifier = AudioClassifier.from_pretrained(checkpoint, window=window, hop=hop, threads=threads)
        self.columns = [self.classifier.labels.index(label) for label in SOUNDS]
        self.window, self.hop = self.classifier.window, self.classifier.hop

    def score_file(self, path: str) -> tuple[np.ndarray, np.ndarray, float]:
        """(windows (n, 2) s, scores (n, len(SOUNDS)), duration s) of the first pass."""
        result = self.classifier.classify(path)
        return np.array(result.windows), result.window_scores[:, self.columns], result.duration

    def score_windows(self, audio: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Scores (len(rows), len(SOUNDS)) of the windows `rows` ((k, 2) s) of `audio` (16 kHz samples)."""
        if not len(rows):
            return np.zeros((0, len(SOUNDS)))
        pieces = [audio[int(round(a * RATE)):int(round(b * RATE))] for a, b in rows]
        results = self.classifier.classify(pieces, sampling_rate=RATE)
        return np.stack([result.window_scores[0] for result in results])[:, self.columns]


# ---------------------------------------------------------------------------------------------- metrics
COLLAR = 1.0


def sed_eval_f1(reference: dict, detected: dict) -> dict[str, float]:
    """{label or "overall": F1} by sed_eval's event-based metrics (the oracle), 1 s collar, offset
    tolerance max(collar, half the reference length)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import dcase_util
        import sed_eval

    metrics = sed_eval.sound_event.EventBasedMetrics(event_label_list=list(SOUNDS), t_collar=COLLAR,
                                                     percentage_of_length=0.5)
    for file in reference:
        def rows(events: list, f: str = file) -> Any:
            return dcase_util.containers.MetaDataContainer(
                [{"filename": f, "event_label": e.label, "onset": e.start, "offset": e.end} for e in events])

        metrics.evaluate(rows(reference[file]), rows(detected.get(file, [])))
    f1 = {label: values["f_measure"]["f_measure"] for label, values in metrics.results_class_wise_metrics().items()}
    f1["overall"] = metrics.results_overall_metrics()["f_measure"]["f_measure"]
    return f1


def evaluate(reference: dict, detected: dict) -> dict[str, dict[str, float]]:
    """Per class and "overall": F1 (ours and sed_eval's), sounds reported more than once and missed
    (detections of its class overlapping it), median absolute and signed onset/offset errors of matched
    pairs (s), detections."""
    from ast_audio.answers.metrics import event_based_metrics, match_events

    ours = event_based_metrics(reference, detected, collar=COLLAR, offset_ratio=0.5, labels=SOUNDS)
    oracle = sed_eval_f1(reference, detected)
    rows: dict[str, dict[str, float]] = {}
    for label in (*SOUNDS, "overall"):
        def keep(events: list, wanted: str = label) -> list:
            return [e for e in events if wanted == "overall" or e.label == wanted]

        onsets, offsets, twice, missed, found = [], [], 0, 0, 0
        for file, ref in reference.items():
            ref, det = keep(ref), keep(detected.get(file, []))
            found += len(det)
            for sound_event in ref:
                hits = sum(e.label == sound_event.label and e.start < sound_event.end and e.end > sound_event.start
                           for e in det)
                twice += int(hits > 1)
                missed += int(hits == 0)
            for r, d in match_events(ref, det, collar=COLLAR, offset_ratio=0.5):
                onsets.append(det[d].start - ref[r].start)
                offsets.append(det[d].end - ref[r].end)
        counts = ours.overall if label == "overall" else ours.per_class[label]
        rows[label] = {
            "f1": counts.f_measure, "f1_sed_eval": oracle[label], "sounds": counts.reference, "detected": found,
            "hits": counts.true_positives,
            "twice": twice, "missed": missed,
            "onset_error": float(np.median(np.abs(onsets))) if onsets else float("nan"),
            "onset_bias": float(np.median(onsets)) if onsets else float("nan"),
            "offset_error": float(np.median(np.abs(offsets))) if offsets else float("nan"),
            "offset_bias": float(np.median(offsets)) if offsets else float("nan"),
        }
    return rows


# ---------------------------------------------------------------------------------------------- passes
def run_passes(model: Model, recordings: dict[str, list], finer: Sequence[tuple[str, int]],
               options: Any) -> dict[str, Any]:
    """Events of every recording from the first pass ("coarse") and from each finer pass (boundaries,
    rounds) in `finer` ({"finer": {name: {path: events}}}), model windows and seconds of each. "scored" keeps
    each file's first-pass windows and scores, and the extra windows and scores of the first finer pass."""
    from ast_audio.answers.events import events_from_windows
    from ast_audio.answers.refine import refine

    out: dict[str, Any] = {"coarse": {}, "finer": {}, "scored": {}, "windows": {}, "seconds": {}}
    for path in recordings:
        started = time.perf_counter()
        windows, scores, duration = model.score_file(path)
        out["seconds"]["first pass"] = out["seconds"].get("first pass", 0.0) + time.perf_counter() - started
        out["windows"]["first pass"] = out["windows"].get("first pass", 0) + len(windows)
        audio, _ = sf.read(path, dtype="float32")
        out["coarse"][path] = events_from_windows(windows, scores, SOUNDS, options)
        for index, (boundaries, rounds) in enumerate(finer):
            name = f"finer: {boundaries}, {rounds} rounds"
            kept: list[np.ndarray] = []

            def score_windows(rows: np.ndarray, audio: np.ndarray = audio, kept: list = kept) -> np.ndarray:
                kept.append(model.score_windows(audio, rows))
                return kept[-1]

            started = time.perf_counter()
            events, extra = refine(windows, scores, SOUNDS, score_windows, window=model.window, hop=model.hop,
                                   duration=duration, rounds=rounds, options=options, boundaries=boundaries)
            out["seconds"][name] = out["seconds"].get(name, 0.0) + time.perf_counter() - started
            out["windows"][name] = out["windows"].get(name, 0) + len(extra)
            out["finer"].setdefault(name, {})[path] = events
            if index == 0:
                out["scored"][path] = (windows, scores, extra,
                                       np.concatenate(kept) if kept else np.zeros((0, len(SOUNDS))))
    return out


COLUMNS = [("pass", 26, "s"), ("class", 8, "s"), ("F1", 5, ".3f"), ("sed_eval", 8, ".3f"), ("sounds", 6, "d"),
           ("found", 5, "d"), ("hits", 4, "d"), ("twice", 5, "d"), ("missed", 6, "d"), ("onset", 6, ".3f"),
           ("bias", 6, "+.3f"), ("offset", 6, ".3f"), ("bias", 6, "+.3f")]


def table_rows(name: str, metrics: dict[str, dict[str, float]]) -> list[list[Any]]:
    return [[name, label, m["f1"], m["f1_sed_eval"], m["sounds"], m["detected"], m["hits"], m["twice"],
             m["missed"], m["onset_error"], m["onset_bias"], m["offset_error"], m["offset_bias"]]
            for label, m in metrics.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=os.path.join(os.path.expanduser("~"), ".cache", "ast_audio_bench_events"),
                        help="folder for the training set, the trained model and the recordings (reused)")
    parser.add_argument("--window", type=float, default=None,
                        help="window in seconds (default: the model's input, 1.295 s for 128 frames; a shorter "
                             "window is zero-padded, which a model trained on full clips has never heard)")
    parser.add_argument("--hop", type=float, default=None, help="hop in seconds (default: half the window)")
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--events", type=int, default=12, help="sounds per recording")
    parser.add_argument("--per-class", type=int, default=40, help="training clips per class")
    parser.add_argument("--finer", nargs="+", default=["both:2", "onset:2", "both:1"], metavar="BOUNDARIES:ROUNDS",
                        help="finer passes to measure: boundaries (both, onset, offset) and bisection rounds")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--threshold-off", type=float, default=0.3)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="training override passed to ast-audio train --set")
    parser.add_argument("--variant", action="append", default=[],
                        help='a local variant to report as well: "mean", "thresholds ON/OFF", "class LABEL=ON,...", '
                             '"shift SECONDS"')
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json")
    args = parser.parse_args()

    from ast_audio.answers.events import EventOptions

    os.makedirs(args.work, exist_ok=True)
    checkpoint, training = train_model(args.work, args.per_class, args.set, args.threads)
    folder = os.path.join(args.work, "recordings")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(1)
    recordings = {}
    for number in range(args.files):
        path = os.path.join(folder, f"recording{number}.wav")
        recordings[path] = make_recording(path, args.minutes * 60, args.events, rng)
    model = Model(checkpoint, args.window, args.hop, args.threads)
    options = EventOptions(args.threshold, args.threshold_off)
    finer = [(item.split(":")[0], int(item.split(":")[1])) for item in args.finer]
    passes = run_passes(model, recordings, finer, options)
    results = {"first pass": evaluate(recordings, passes["coarse"])}
    rows = table_rows("first pass", results["first pass"])
    for name, detected in passes["finer"].items():
        results[name] = evaluate(recordings, detected)
        rows += table_rows(name, results[name])
    for name, detected in local_variants(passes, options, args.variant).items():
        results[name] = evaluate(recordings, detected)
        rows += table_rows(name, results[name])
    test = training["results"].get("validation") or training["results"]
    print(f"model: scratch_small trained on {args.per_class} clips x {len(SOUNDS) + 1} classes in "
          f"{training['seconds']:.0f} s (overrides: {training['overrides'] or 'none'}); results {json.dumps(test)}")
    print(f"{args.files} recordings x {args.minutes:g} min, {args.events} sounds each; window {model.window:g} s, "
          f"hop {model.hop:g} s; thresholds {args.threshold:g} / {args.threshold_off:g}; collar {COLLAR:g} s; "
          f"errors are medians in seconds over matched sounds")
    print_table(COLUMNS, rows)
    first = passes["windows"]["first pass"]
    print(f"model windows: first pass {first} ({passes['seconds']['first pass']:.1f} s); " + "; ".join(
        f"{name} +{count} ({count / first:.1%} more, {passes['seconds'][name]:.1f} s)"
        for name, count in passes["windows"].items() if name != "first pass"))
    print(f"CPU: {cpu_name()} (shared machine: timings contended)")
    if args.json:
        summary = {"cpu": cpu_name(), "window": model.window, "hop": model.hop, "training": training,
                   "windows": passes["windows"], "seconds": passes["seconds"], "metrics": results}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(summary, handle, indent=2)


def mean_track_events(windows: np.ndarray, scores: np.ndarray, options: Any) -> list:
    """Events from a track that averages the covering windows instead of taking their minimum (a local
    variant of `score_track`, as in benchmarks/sim_event_track.py)."""
    from ast_audio.answers.events import ScoreTrack, detect_events, score_track

    ours = score_track(windows, scores, SOUNDS)
    middle = (ours.edges[:-1] + ours.edges[1:]) / 2
    cover = (windows[:, :1] <= middle[None, :]) & (middle[None, :] <= windows[:, 1:])
    mean = (cover.T.astype(float) @ scores) / np.maximum(cover.sum(axis=0), 1)[:, None]
    return detect_events(ScoreTrack(ours.edges, np.where(cover.any(axis=0)[:, None], mean, np.nan), ours.labels),
                         options)


def local_variants(passes: dict, options: Any, variants: Sequence[str]) -> dict[str, dict]:
    """Other rules on the same window scores (no more model runs), for the discussion of the targets:
    "mean track" (first pass, mean instead of minimum), "on/off A/B" (other thresholds, first and finer
    pass on the windows already scored), "class LABEL=ON,..." (a class's own threshold, its off threshold in
    proportion), "shift S" (every boundary moved S s outwards, first and finer)."""
    from ast_audio.answers.events import Event, EventOptions
    from ast_audio.answers.refine import refine_events

    out: dict[str, dict] = {}
    for variant in variants:
        kind, _, value = variant.partition(" ")
        for stage in ("first", "finer"):
            detected = {}
            for path, (windows, scores, extra, extra_scores) in passes["scored"].items():
                if kind == "mean":
                    detected[path] = mean_track_events(windows, scores, options)
                elif kind in ("thresholds", "class"):
                    if kind == "thresholds":
                        on, off = (float(v) for v in value.split("/"))
                        chosen = EventOptions(on, off)
                    else:
                        own = {label: float(v) for label, v in (pair.split("=") for pair in value.split(","))}
                        chosen = EventOptions(options.threshold, options.threshold_off, class_thresholds=own)
                    rows = extra if stage == "finer" else np.zeros((0, 2))
                    detected[path] = refine_events(windows, scores, rows, extra_scores[: len(rows)], SOUNDS, chosen)
                elif kind == "shift":
                    base = (next(iter(passes["finer"].values())) if stage == "finer" else passes["coarse"])[path]
                    shift = float(value)
                    detected[path] = [Event(e.label, max(0.0, e.start - shift), e.end + shift, e.score, e.mean)
                                      for e in base]
            out[f"{variant} ({stage})"] = detected
            if kind == "mean":
                break
    return out


if __name__ == "__main__":
    main()
