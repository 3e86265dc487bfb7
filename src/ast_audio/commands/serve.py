"""`ast-audio serve`: the HTTP API and web page (FastAPI + uvicorn), with dynamic batching."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys

HELP = "serve the model over HTTP: a JSON API with dynamic batching, and a web page"
DESCRIPTION = (
    "Serve a checkpoint over HTTP (needs pip install 'ast-audio[serve]'). POST /v1/classify and /v1/embed take an "
    "upload (multipart field 'file', or the raw body with an audio content type); GET /v1/model, /healthz, /readyz, "
    "/metrics (Prometheus), /openapi.json, and /docs (Swagger UI, from files in the package: works offline); "
    "WS /v1/stream tags a live stream (PCM or container audio messages in, a JSON record per window out); / is a "
    "web page (with events on a timeline and a threshold slider). /v1/classify takes classify's events and class "
    "selection options as query parameters (events, threshold, threshold_off, min_duration, min_gap, include, "
    "exclude, group, rollup). Windows of concurrent requests share model calls. "
    "Binds 127.0.0.1 by default. SIGTERM or Ctrl-C: stop accepting, answer 503 to requests the model has not "
    "started on, finish the started ones (at most --shutdown-timeout-s), exit 0; a second signal stops at once."
)

OWN_SIGNALS = True  # uvicorn's handlers and the service's stop (service.server), not the CLI's

# A server's buffers come and go in many threads and sizes: it returns large freed blocks to the system at a
# fixed threshold (allocator.return_freed_memory) instead of keeping them as the batch commands do.
KEEP_FREED_MEMORY = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ast_audio.commands._common import add_model_options

    add_model_options(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=8000,
                        help="TCP port to listen on (default 8000; 0: any free port, printed at start)")
    parser.add_argument("--max-batch", type=int, default=8,
                        help="windows per model call, across concurrent requests (default 8)")
    parser.add_argument("--max-wait-ms", type=float, default=10.0,
                        help="how long a model call waits for more windows after the first (default 10)")
    parser.add_argument("--max-upload-mb", type=float, default=50.0,
                        help="largest upload; larger ones get 413 (default 50 MB)")
    parser.add_argument("--max-duration-s", type=float, default=600.0,
                        help="longest audio; longer uploads get 422 (default 600 s)")
    parser.add_argument("--max-queue", type=int, default=256,
                        help="windows that may wait for the model; beyond, requests get 503 (default 256)")
    parser.add_argument("--max-windows-per-request", type=int, default=6000,
                        help="most windows one request may ask for (its duration, window and hop); more get 422 "
                             "naming the limit, before any work (default 6000: 600 s at a 0.1 s hop)")
    parser.add_argument("--shutdown-timeout-s", type=float, default=30.0,
                        help="on SIGTERM, how long the started requests may take to finish before they get 503 "
                             "(default 30)")
    parser.add_argument("--decode-workers", type=int, default=2,
                        help="threads decoding and featurising uploads (default 2)")
    parser.add_argument("--api-key-file", help="file holding the API key every /v1 request must send as a Bearer token")
    parser.add_argument("--max-streams", type=int, default=8,
                        help="live streams (/v1/stream) open at once, the whole server; more are refused (default 8)")
    parser.add_argument("--max-streams-per-client", type=int, default=2,
                        help="live streams open at once from one client address (default 2)")
    parser.add_argument("--stream-idle-timeout-s", type=float, default=10.0,
                        help="a live stream that sends no audio this long is ended (default 10 s)")
    parser.add_argument("--max-stream-message-mb", type=float, default=1.0,
                        help="the largest audio message of a live stream; larger ones end it (default 1 MB)")


def run(args: argparse.Namespace) -> int:
    try:
        from ast_audio.service.app import ServiceSettings, create_app
        from ast_audio.service.server import serve
    except ImportError as exc:
        from ast_audio.errors import ConfigError

        raise ConfigError(f"serve needs its extra ({exc.name} is missing): pip install 'ast-audio[serve]'") from None
    from ast_audio.inference.options import InferenceOptions

    settings = ServiceSettings(
        max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_upload_mb=args.max_upload_mb,
        max_duration_s=args.max_duration_s, max_queue=args.max_queue,
        max_windows_per_request=args.max_windows_per_request, decode_workers=args.decode_workers,
        api_key=read_api_key(args.api_key_file) if args.api_key_file else None, max_streams=args.max_streams,
        max_streams_per_client=args.max_streams_per_client, stream_idle_timeout_s=args.stream_idle_timeout_s,
        max_stream_message_mb=args.max_stream_message_mb,
    )
    if not args.shutdown_timeout_s >= 0:
        from ast_audio.errors import UsageError

        raise UsageError(f"--shutdown-timeout-s {args.shutdown_timeout_s}: expected a number of seconds >= 0")
    listening = bind(args.host, args.port)  # a taken port fails here, before the model loads
    try:
        if settings.api_key is None and not is_loopback(args.host):
            print(f"ast-audio serve: warning: binding {args.host} without --api-key-file: anyone who can reach this "
                  "address can use the model", file=sys.stderr)
        classifier = InferenceOptions.from_args(args, batch_size=args.max_batch).load()
        from ast_audio.allocator import return_freed_memory

        return_freed_memory()
        app = create_app(classifier, settings, model_source=args.model)
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"ast-audio serve: http://{host}:{listening.getsockname()[1]}/ (API docs at /docs)", file=sys.stderr)
        started = serve(app, listening, args.shutdown_timeout_s)
    finally:
        listening.close()
    return 0 if started else 1


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), not yet listening; `ConfigError` in one line when that fails (the port
    taken, the address not this machine's, a port below 1024 without the right)."""
    from ast_audio.errors import ConfigError, UsageError

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: expected a TCP port from 0 to 65535")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: restart over TIME_WAIT
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        hint = ": another program is listening there (stop it, or pass another --port)" \
            if exc.errno == errno.EADDRINUSE else f" ({exc.strerror or exc})"
        raise ConfigError(f"cannot listen on {host}:{port}{hint}") from None
    listening.set_inheritable(True)
    return listening


def read_api_key(path: str) -> str:
    from ast_audio.errors import ConfigError

    try:
        with open(path, encoding="utf-8") as handle:
            key = handle.read().strip()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the API key file ({exc.strerror})") from None
    if not key:
        raise ConfigError(f"{path}: the API key file is empty")
    return key


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
