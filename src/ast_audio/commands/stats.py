"""`ast-audio stats`: mean and std of the fbank over a dataset, for the feature extractor's normalisation."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "compute the fbank mean and std of a folder or manifest of audio files"
DESCRIPTION = (
    "Compute the mean and standard deviation of the unnormalised log-mel fbank over audio files (folders are "
    "searched recursively), to use as mean/std when fine-tuning on a new dataset. Prints JSON. Exit code 0: "
    "all files used; 3: some files could not be decoded (listed under 'failed'); 1: nothing usable; 2: a "
    "usage error (a bad option, or an output path that cannot be written), found before any work."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", help="audio files, directories or glob patterns")
    parser.add_argument("--manifest", action="append", default=[],
                        help="a clip list: release JSON, CSV (path,labels...) or text (one path per line)")
    parser.add_argument("--sampling-rate", type=int, default=16000, help="rate to resample to (default 16000)")
    parser.add_argument("--mel-bins", type=int, default=128, help="mel bins (default 128)")
    parser.add_argument("--frames", "--max-length", dest="max_length", type=int,
                        help="use only each clip's first N frames, as a model of N input frames sees them")
    parser.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    parser.add_argument("--output", "-o",
                        help="also write the JSON to this file (atomically; missing folders are created)")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="no progress bar (there is none off a terminal either)")


def run(args: argparse.Namespace) -> int:
    from ast_audio.errors import AudioError
    from ast_audio.audio.files import InputListing, read_manifest, scan_inputs
    from ast_audio.commands._common import report_skipped
    from ast_audio.io_utils import atomic_write_text
    from ast_audio.features.stats import dataset_statistics
    from ast_audio.jobs.output import check_output_file

    if args.output:
        check_output_file(args.output, example="stats.json")
    listing = scan_inputs(args.inputs) if args.inputs else InputListing()
    files = list(listing.files)
    for manifest in args.manifest:
        files.extend(entry.path for entry in read_manifest(manifest))
    if not files:
        if not args.manifest and args.inputs:
            listing.require_some(args.inputs)  # nothing exists: say which
        raise AudioError("no audio files found in " + (", ".join(args.inputs + args.manifest) or "the arguments"))
    statistics = dataset_statistics(
        files, sampling_rate=args.sampling_rate, num_mel_bins=args.mel_bins, max_length=args.max_length,
        workers=args.workers, progress=False if args.quiet else None,
    )
    # missing inputs and unreadable folders are failed items, as in classify and embed
    statistics.failed[:0] = [{"path": path, "error": f"{path}: {reason}"} for path, reason in listing.problems]
    text = json.dumps(statistics.to_dict(), indent=2) + "\n"
    if args.output:
        atomic_write_text(args.output, text)
    sys.stdout.write(text)
    for failure in statistics.failed:
        print(f"ast-audio stats: skipped {failure['error']}", file=sys.stderr)
    report_skipped("stats", listing.skipped, args.quiet)
    return 3 if statistics.failed else 0
