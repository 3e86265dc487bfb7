"""Which rule combines overlapping windows into a score track: the minimum (ours), the mean or the maximum.

A simulation, no model: one sound per file (0.2-3 s, uniformly placed in 120 s), window scores that rise
with the seconds of the sound inside the window (a window "fires" once it holds 0.05-0.4 s of it, drawn per
sound; plus small noise), then events by `ast_audio.answers.events` (hysteresis 0.5 / 0.3 and 0.5 / 0.5) on
the track each rule gives. Prints the median and 90th percentile onset error and the median offset error in
hops, and how many sounds gave more than one event or none. The figures in the module docstring of
`ast_audio.answers.events` come from this script.

    python benchmarks/sim_event_track.py [--sounds 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from table import print_table  # noqa: E402

from ast_audio.answers.events import EventOptions, ScoreTrack, detect_events, score_track  # noqa: E402
from ast_audio.inference.windows import plan_windows  # noqa: E402

GEOMETRIES = [(2.0, 1.0), (3.0, 1.0), (10.255, 5.1275)]  # (window, hop): 50%, 67% and the default 50%
DURATION = 120.0


def tracks(windows: np.ndarray, scores: np.ndarray) -> dict[str, ScoreTrack]:
    """The minimum (the module's), mean and maximum tracks on the same segments."""
    ours = score_track(windows, scores, ["sound"])
    middle = (ours.edges[:-1] + ours.edges[1:]) / 2
    cover = (windows[:, :1] <= middle[None, :]) & (middle[None, :] <= windows[:, 1:])
    masked = np.where(cover, scores, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an uncovered segment: nanmean of nothing
        mean, peak = np.nanmean(masked, axis=0), np.nanmax(masked, axis=0)
    return {
        "min": ours,
        "mean": ScoreTrack(ours.edges, mean[:, None], ours.labels),
        "max": ScoreTrack(ours.edges, peak[:, None], ours.labels),
    }


def simulate(window: float, hop: float, sounds: int, seed: int) -> list[list]:
    rng = np.random.default_rng(seed)
    windows = np.array(plan_windows(DURATION, window, hop))
    options = {"0.5/0.3": EventOptions(0.5, 0.3), "0.5/0.5": EventOptions(0.5, 0.5)}
    errors: dict[tuple[str, str], list] = {}
    for _ in range(sounds):
        length = rng.uniform(0.2, 3.0)
        onset = rng.uniform(1.0, DURATION - 5.0)
        inside = np.clip(np.minimum(windows[:, 1], onset + length) - np.maximum(windows[:, 0], onset), 0, None)
        needed = min(rng.uniform(0.05, 0.4), length / 2)
        scores = (0.9 / (1 + np.exp(-(inside - needed) * 20)) + rng.uniform(0, 0.05, len(windows)))[:, None]
        for rule, track in tracks(windows, scores).items():
            for name, option in options.items():
                events = detect_events(track, option)
                found = errors.setdefault((rule, name), [])
                if not events:
                    found.append(None)
                    continue
                nearest = min(events, key=lambda event: abs(event.start - onset))
                found.append((abs(nearest.start - onset), abs(nearest.end - onset - length), len(events) > 1))
    rows = []
    for (rule, name), found in errors.items():
        hits = [item for item in found if item is not None]
        onset_errors = np.array([item[0] for item in hits]) / hop
        offset_errors = np.array([item[1] for item in hits]) / hop
        rows.append([f"{window:g}/{hop:g}", rule, name, float(np.median(onset_errors)),
                     float(np.quantile(onset_errors, 0.9)), float(np.median(offset_errors)),
                     sum(item[2] for item in hits), len(found) - len(hits)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sounds", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = [row for window, hop in GEOMETRIES for row in simulate(window, hop, args.sounds, args.seed)]
    columns = [("window/hop s", 14, "s"), ("rule", 5, "s"), ("on/off", 8, "s"), ("onset med", 10, ".2f"),
               ("onset p90", 10, ".2f"), ("offset med", 11, ".2f"), ("twice", 6, "d"), ("missed", 7, "d")]
    print(f"errors in hops; {args.sounds} sounds per geometry")
    print_table(columns, rows)


if __name__ == "__main__":
    main()
