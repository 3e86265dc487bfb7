"""`classify --engine ray` and `embed --engine ray`: the job on a Ray cluster, written as Parquet or JSON lines."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from typing import Any

from ast_audio.commands._common import Progress, exit_code, input_listing, model_options, say


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (--engine ray needs pip install 'ast-audio[ray]')")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: a Ray Data pipeline on a Ray cluster")
    group.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start one on this machine)")
    group.add_argument("--num-workers", type=int, default=1, help="model replicas (Ray actors; default 1)")
    group.add_argument("--cpus-per-worker", type=float,
                       help="CPUs each model replica reserves (default 1, lowered where the cluster needs CPUs for "
                            "decoding beside the replicas, with a note; a value given is kept, or the job refused "
                            "if it leaves no CPU to decode)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each model replica reserves")
    group.add_argument("--decode-tasks-per-worker", type=int,
                       help="decoding+features tasks at once per model replica (default 1 on CPU, 4 with GPUs)")
    group.add_argument("--chunk-files", type=int, default=256,
                       help="rows per output file: rows are written as each file fills, so a stopped job resumes "
                            "after the last file written (default 256)")
    group.add_argument("--stall-timeout", type=float, default=900, metavar="SECONDS",
                       help="give up when no file has finished for this long (default 900); after a tenth of it "
                            "without a result, what the job waits for is reported on stderr")


def job_options(args: argparse.Namespace, command: str, embeddings: bool) -> dict[str, Any]:
    """The options that decide an output directory's rows (numbers and form): a resumed job must have the same."""
    options = {**model_options(args), "format": args.format, "embeddings": embeddings}
    if command == "classify":
        options.update(top_k=args.top_k, pooling=args.pooling, timeline=args.timeline)
    return options


def ray_options(args: argparse.Namespace, embeddings: bool):
    """The job's `RayOptions`: the command line's `InferenceOptions` and the pipeline's arguments."""
    from ast_audio.distributed.tagging import RayOptions
    from ast_audio.inference.options import InferenceOptions

    return RayOptions.of(
        InferenceOptions.from_args(args), embeddings=embeddings, num_workers=args.num_workers,
        cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        decode_tasks_per_worker=args.decode_tasks_per_worker,
    )


def run_on_ray(args: argparse.Namespace, command: str, output_dir: str | None, embeddings: bool) -> int:
    """Tag the inputs on Ray into `output_dir` (Parquet, or JSON lines with --format jsonl); --resume skips the
    inputs the directory already holds (written with the same options, the answers' selection and events
    included). The rows carry the answers of the command line's options (--events, --include, ...: the local
    engine's records). Progress and errors on stderr as for the local engine."""
    from ast_audio.commands._answers import check_answers
    from ast_audio.jobs.directory import RowFiles, record_options
    from ast_audio.errors import UsageError
    from ast_audio.jobs.output import output_lock

    args.format = getattr(args, "format", None) or "parquet"
    check_answers(args, ())  # the class selection and event options, checked before Ray starts (exit 2)
    if not output_dir:
        raise UsageError("--engine ray writes a directory: pass --output DIR")
    if args.stall_timeout <= 0:
        raise UsageError(f"--stall-timeout must be a positive number of seconds, got {args.stall_timeout:g}")
    files = RowFiles(output_dir, args.format, max(1, args.chunk_files), embeddings)
    ray = require_ray_quietly(getattr(args, "verbose", False))
    listing = input_listing(args)
    options = job_options(args, command, embeddings)
    with output_lock(output_dir):
        done = _resume(args, command, output_dir, options)
        todo = [path for path in listing.files if path not in done]
        if done:
            print(f"ast-audio {command}: resuming: {len(listing.files) - len(todo)} of {len(listing.files)} files "
                  f"already done, {len(todo)} to do", file=sys.stderr)
        started_here = todo and not ray.is_initialized()
        if started_here:
            join_ray(args.address, getattr(args, "verbose", False))
        try:
            config = _fitted(args, command, embeddings) if todo else None
            record_options(output_dir, options)
            progress = _tag_into(args, command, config, todo, listing.problems, files)
        finally:
            if started_here:
                ray.shutdown()
    if progress.failed:
        print(f"ast-audio {command}: {progress.failed} of {progress.files} files failed", file=sys.stderr)
    if not args.quiet:
        print(f"ast-audio {command}: {progress.files - progress.failed} of {progress.files} files written to "
              f"{output_dir}", file=sys.stderr)
    return exit_code(progress.files, progress.failed) if progress.files else 0


def _fitted(args: argparse.Namespace, command: str, embeddings: bool):
    """The job's RayOptions, its CPUs per replica fitted to the cluster (a note on stderr where lowered)."""
    from ast_audio.distributed.tagging import fit_to_cluster

    config, note = fit_to_cluster(ray_options(args, embeddings))
    if note and not args.quiet:
        print(f"ast-audio {command}: {note}", file=sys.stderr)
    return config


def _resume(args: argparse.Namespace, command: str, output_dir: str, options: dict[str, Any]) -> set[str]:
    """The inputs an earlier run wrote into `output_dir`, after checking this run may add to it: refused without
    --resume, or with options that differ; with --resume, files a killed run left unreadable are set aside."""
    from ast_audio.jobs import directory
    from ast_audio.errors import UsageError

    contents = directory.read(output_dir)
    if not args.resume:
        if contents.rows or contents.unreadable:
            raise UsageError(f"{output_dir} already holds results: pass --resume to add the rest, or another --output")
        return set()
    directory.check_options(output_dir, options, contents)
    for line in directory.set_aside_unreadable(output_dir, contents):
        print(f"ast-audio {command}: {line}", file=sys.stderr)
    return contents.inputs


def _tag_into(args: argparse.Namespace, command: str, config, todo: list[str], problems: list[tuple[str, str]],
              files) -> Progress:
    """Run the pipeline of `config` over `todo` and write its rows, and the `problems` (places that could not be
    read) as error rows, into `files`, with progress and each error on stderr. Returns the closed Progress."""
    from ast_audio.distributed.resources import waiting_for
    from ast_audio.distributed.stream import stream_rows
    from ast_audio.distributed.tagging import tag
    from ast_audio.jobs.records import clip_record, unreadable

    def report(message: str) -> None:
        print(f"ast-audio {command}: {message}", file=sys.stderr)

    progress = Progress(args, command, len(todo) + len(problems))
    stream = stream_rows(
        tag(todo, config), report_after_s=args.stall_timeout / 10, give_up_after_s=args.stall_timeout, report=report,
        waiting=lambda: waiting_for(config.num_workers, config.cpus_per_worker, config.gpus_per_worker),
    ) if todo else iter(())
    try:
        unreadable_rows = [clip_record(unreadable(path, reason), embeddings=files.embeddings)
                           for path, reason in problems]
        rows = itertools.chain(unreadable_rows, stream)
        for row in rows:
            files.add(row)
            progress(row["duration"] or 0.0)
            progress.input_done(row["path"], row["error"] is None)
            if row["error"] is not None:
                say(command, row["error"])
            elif row["warning"]:
                say(command, f"{row['path']}: warning: {row['warning']}")
    finally:
        getattr(stream, "close", lambda: None)()  # a stopped job's pipeline and stall watch end here, not at exit
        files.flush()  # what came before a stop or an error is kept, for --resume
        progress.close()
    return progress


def require_ray_quietly(verbose: bool):
    """Ray, with its own log lines, warnings and progress bars off stderr unless `verbose` (the job's progress
    is ours, as for the local engine)."""
    import logging
    import warnings

    from ast_audio.distributed.tagging import require_ray

    ray = require_ray()
    if not verbose:
        for name in ("ray", "ray.data", "ray.train", "ray.tune"):
            logging.getLogger(name).setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"ray(\.|$)")
    ray.data.DataContext.get_current().enable_progress_bars = False
    return ray


def join_ray(address: str | None, verbose: bool, **init_options: Any) -> None:
    """Connect to the cluster at `address` (or start one here, with `init_options` for `ray.init`). Unless
    `verbose`, Ray's C++ core logs only fatal errors: it writes to stderr an error-level line at every model
    replica's start (Ray Data keeps its actors' constructor arguments in the object store), and a line saying
    it read that level, silenced here."""
    import ray

    if verbose:
        ray.init(address=address, include_dashboard=False, log_to_driver=True, logging_level="INFO", **init_options)
        return
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="ERROR", **init_options)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
