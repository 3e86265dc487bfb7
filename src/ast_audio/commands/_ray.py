"""`classify --engine ray` and `embed --engine ray`: the job on a Ray cluster, written as Parquet or JSON lines."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ast_audio.commands._common import exit_code, input_listing


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (--engine ray needs pip install 'ast-audio[ray]')")
    group.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="local: this process (default); ray: a Ray Data pipeline on a Ray cluster")
    group.add_argument("--address", help="Ray cluster to join: 'auto' or HOST:PORT (default: start one on this machine)")
    group.add_argument("--num-workers", type=int, default=1, help="model replicas (Ray actors; default 1)")
    group.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs each model replica reserves")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs each model replica reserves")
    group.add_argument("--decode-tasks-per-worker", type=int,
                       help="decoding+features tasks at once per model replica (default 1 on CPU, 4 with GPUs)")
    group.add_argument("--chunk-files", type=int, default=256,
                       help="rows per output file: rows are written as each file fills, so a stopped job resumes "
                            "after the last file written (default 256)")


def run_on_ray(args: argparse.Namespace, command: str, output_dir: str | None, embeddings: bool) -> int:
    """Tag the inputs on Ray into `output_dir` (Parquet, or JSON lines with --format jsonl); --resume skips the
    inputs the directory already holds."""
    from ast_audio.distributed.tagging import RayOptions, require_ray, tag
    from ast_audio.errors import ConfigError
    from ast_audio.inference.output import output_lock

    fmt = getattr(args, "format", "parquet")
    if fmt not in ("parquet", "jsonl"):
        raise ConfigError(f"--engine ray writes parquet or jsonl, not {fmt!r}")
    if not output_dir:
        raise ConfigError("--engine ray writes a directory: pass --output DIR")
    ray = require_ray()
    listing = input_listing(args)
    with output_lock(output_dir):
        done = written_inputs(output_dir)
        if done and not args.resume:
            raise ConfigError(f"{output_dir} already holds results: pass --resume to add the rest, or another --output")
        todo = [path for path in listing.files if path not in done]
        if done:
            print(f"ast-audio {command}: resuming: {len(listing.files) - len(todo)} of {len(listing.files)} files "
                  f"already done, {len(todo)} to do", file=sys.stderr)
        options = RayOptions(
            model=args.model, window=args.window, hop=args.hop, pooling=getattr(args, "pooling", "mean"),
            top_k=getattr(args, "top_k", 5), timeline=getattr(args, "timeline", True), embeddings=embeddings,
            strict=args.strict, batch_size=args.batch_size, backend=args.backend, int8=args.int8, dtype=args.dtype,
            device=args.device, threads=args.threads, num_workers=args.num_workers,
            cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker, local_files_only=args.offline,
            decode_tasks_per_worker=args.decode_tasks_per_worker,
        )
        started_here = not ray.is_initialized()
        if started_here:
            _quiet_ray(progress=not args.quiet and sys.stderr.isatty())
            ray.init(address=args.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            if todo:
                _write(tag(todo, options), output_dir, fmt, max(1, args.chunk_files))
            _write_problems(listing.problems, output_dir, fmt, embeddings)
        finally:
            if started_here:
                ray.shutdown()
        failed = errors_of(output_dir, set(todo) | {path for path, _ in listing.problems})
    total = len(todo) + len(listing.problems)
    for error in failed:
        print(f"ast-audio {command}: {error}", file=sys.stderr)
    if failed:
        print(f"ast-audio {command}: {len(failed)} of {total} files failed", file=sys.stderr)
    print(f"ast-audio {command}: {total - len(failed)} of {total} files written to {output_dir}", file=sys.stderr)
    return exit_code(total, len(failed)) if total else 0


def _quiet_ray(progress: bool) -> None:
    """Ray's INFO lines stay off the user's terminal; Ray Data's progress bars (rows through each stage) show
    with `progress`."""
    import logging

    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = progress
    logging.getLogger("ray").setLevel(logging.ERROR)


def _write(rows, output_dir: str, fmt: str, rows_per_file: int) -> None:
    """Stream the rows into the output directory, a file per `rows_per_file` rows as they come (new files beside
    the earlier ones)."""
    os.makedirs(output_dir, exist_ok=True)
    if fmt == "parquet":
        rows.write_parquet(output_dir, mode="append", min_rows_per_file=rows_per_file)
    else:
        rows.write_json(output_dir, mode="append", min_rows_per_file=rows_per_file)


def _write_problems(problems: list[tuple[str, str]], output_dir: str, fmt: str, embeddings: bool) -> None:
    """The places that could not be read, as error rows of their own file."""
    from ast_audio.inference.results import ClipResult
    from ast_audio.inference.tabular import clip_record, write_parquet
    from ast_audio.io_utils import atomic_write_text

    if not problems:
        return
    records = [clip_record(ClipResult(source=path, error=f"{path}: {reason}"), embeddings=embeddings)
               for path, reason in problems]
    name = os.path.join(output_dir, f"unreadable-{os.getpid()}.{fmt if fmt == 'parquet' else 'json'}")
    if fmt == "parquet":
        write_parquet(records, name, embeddings)
    else:
        atomic_write_text(name, "".join(json.dumps(r) + "\n" for r in records))


def _rows(output_dir: str) -> list[dict]:
    """Every row of an output directory (Parquet or JSON lines files): path and error. A file a killed job
    left half-written is set aside as .NAME.incomplete, which readers of the directory skip (its inputs are
    then done again)."""
    rows: list[dict] = []
    if not os.path.isdir(output_dir):
        return rows
    for name in sorted(os.listdir(output_dir)):
        path = os.path.join(output_dir, name)
        try:
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                rows += pq.read_table(path, columns=["path", "error"]).to_pylist()
            elif name.endswith(".json"):
                with open(path, encoding="utf-8") as handle:
                    rows += [_path_and_error(json.loads(line)) for line in handle if line.strip()]
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
            os.replace(path, os.path.join(output_dir, f".{name}.incomplete"))
            print(f"ast-audio: {path}: unreadable ({exc}); set aside as .{name}.incomplete, its inputs are done again",
                  file=sys.stderr)
    return rows


def _path_and_error(row: dict) -> dict:
    return {"path": row.get("path"), "error": row.get("error")}


def errors_of(output_dir: str, inputs: set[str]) -> list[str]:
    """The errors the output directory records for `inputs`."""
    return [row["error"] for row in _rows(output_dir) if row["path"] in inputs and row.get("error")]


def written_inputs(output_dir: str) -> set[str]:
    """The inputs whose rows an output directory holds."""
    return {row["path"] for row in _rows(output_dir)}
