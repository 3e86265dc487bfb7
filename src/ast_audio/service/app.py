"""The HTTP service: a FastAPI app over the inference core, with dynamic batching, limits, auth and metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import hmac
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import numpy as np
from fastapi import Depends, FastAPI, Query, Request, WebSocket
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError, WebSocketRequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from swagger_ui_bundle import swagger_ui_path

from ast_audio.answers.options import AnswerOptions, Answers
from ast_audio.errors import ASTAudioError, ConfigError
from ast_audio.inference.classifier import AudioClassifier
from ast_audio.inference.results import ClipResult
from ast_audio.inference.prepare import Prepared, WindowPlan, assemble, prepare
from ast_audio.inference.stream import check_pcm_rate
from ast_audio.inference.windows import window_and_hop
from ast_audio.jobs.records import clip_json, embedding_record
from ast_audio.service.batcher import DynamicBatcher, Ticket
from ast_audio.service.errors import HTTPRejection, RequestLimitError, ShuttingDownError, rejection
from ast_audio.service.metrics import RequestMetricsMiddleware, ServiceMetrics
from ast_audio.service.refine import BatchedScorer, refine_upload
from ast_audio.service.stream import (STREAM_FORMATS, StreamRegistry, StreamRequest, first_message_key, refuse,
                                      serve_stream)
from ast_audio.service.uploads import UploadLimitMiddleware, read_upload

logger = logging.getLogger(__name__)

PAGE = os.path.join(os.path.dirname(__file__), "static", "index.html")
LIVE_WORKLET = os.path.join(os.path.dirname(__file__), "static", "live-worklet.js")  # the page's microphone reader
DOCS_ASSETS = "/docs-assets"  # Swagger UI's files, served from the installed package (no network needed)


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """Limits and batching of a running service."""

    max_batch: int = 8
    max_wait_ms: float = 10.0
    max_upload_mb: float = 50.0
    max_duration_s: float = 600.0
    max_queue: int = 256  # windows
    max_windows_per_request: int = 6000  # 600 s at a 0.1 s hop
    decode_workers: int = 2
    api_key: str | None = None
    max_streams: int = 8  # open /v1/stream connections, the whole server
    max_streams_per_client: int = 2  # by client address
    stream_idle_timeout_s: float = 10.0  # a stream without audio that long is ended (also the wait for a key message)
    max_stream_message_mb: float = 1.0  # the largest audio message of a stream

    def __post_init__(self) -> None:
        for name in ("max_batch", "max_queue", "max_windows_per_request", "decode_workers", "max_streams",
                     "max_streams_per_client"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "max_upload_mb", "max_duration_s", "stream_idle_timeout_s",
                     "max_stream_message_mb"):
            if getattr(self, name) < 0 or (name != "max_wait_ms" and getattr(self, name) == 0):
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")


class Service:
    """The loaded model, the batcher, the decoding pool and the metrics of one app."""

    def __init__(self, classifier: AudioClassifier, settings: ServiceSettings, model_source: str | None = None) -> None:
        self.classifier, self.settings, self.model_source = classifier, settings, model_source
        self.runner = classifier.runner
        self.metrics = ServiceMetrics()
        self.batcher = DynamicBatcher(self.runner.infer, max_batch=settings.max_batch,
                                      max_wait_ms=settings.max_wait_ms, max_queue=settings.max_queue,
                                      on_batch=self.metrics.batch_sizes.observe, on_drop=self.metrics.dropped.inc)
        self.pool = ThreadPoolExecutor(settings.decode_workers, thread_name_prefix="ast-audio-decode",
                                       initializer=self.runner.threads.enter_feature_stage)
        self.metrics.queue_depth.set_function(lambda: self.batcher.queued)  # read when scraped
        self.streams = StreamRegistry(settings.max_streams, settings.max_streams_per_client)
        self.metrics.streams_active.set_function(lambda: self.streams.active)
        self.ready = False

    def start(self) -> None:
        self.batcher.start()
        self.ready = True

    def stop(self) -> None:
        """The app's end (lifespan shutdown, after its requests): the model thread and the decoding pool stop."""
        self.ready = False
        self.batcher.stop()
        self.pool.shutdown(wait=True, cancel_futures=True)

    @property
    def stopping(self) -> bool:
        return self.batcher.closed

    def close(self) -> None:
        """The server is stopping (SIGTERM): not ready any more; requests none of whose windows has reached the
        model yet, and any that arrive, get 503; the started ones go on."""
        self.ready = False
        self.batcher.close(ShuttingDownError("the server is stopping and this request had not started"))

    async def end_streams(self) -> None:
        """The server is stopping: each open stream gets {"error": ...} and close 1013 (try again later); waits a
        few seconds at most for them. Call after `close`."""
        await self.streams.stop_all(ShuttingDownError("the server is stopping"))

    def abort(self) -> None:
        """The stop's grace ran out, or a second signal: every request still queued gets 503 at once, and the
        decoding pool takes no more work (its threads end with their current upload)."""
        self.ready = False
        self.batcher.abort(ShuttingDownError("the server stopped before this request finished"))
        self.pool.shutdown(wait=False, cancel_futures=True)

    def prepare(self, ticket: Ticket, upload: Upload, data: bytes, window: float, hop: float) -> None:
        """Open `data` (`inference.prepare.prepare`), keep its window plan in `upload`, queue its windows on
        `ticket` and feed their features a batch at a time (runs in the decoding pool, one task per request).
        Any failure fails the ticket's request: `AudioError` for audio that cannot be used, `RequestLimitError`
        for more audio or windows than the server allows, `QueueFullError`, `ShuttingDownError`."""
        try:
            prepared = prepare(data, self.runner.timing, window=window, hop=hop, name=upload.name)
        except Exception as exc:
            self.batcher.fail(ticket, exc)
            return
        with prepared:
            try:
                upload.plan = prepared.plan
                self.check_limits(upload.name, prepared.plan, window, hop)
                if self.batcher.submit(ticket, len(prepared.plan.windows)):
                    self._feed(ticket, prepared)
            except Exception as exc:
                self.batcher.fail(ticket, exc)

    def check_limits(self, name: str, plan: WindowPlan, window: float, hop: float) -> None:
        """Raise `RequestLimitError` naming the limit and its option for audio longer than `max_duration_s`, or
        more windows than `max_windows_per_request` (checked on the plan, before any window is read)."""
        settings = self.settings
        if plan.duration > settings.max_duration_s:
            raise RequestLimitError(f"{name}: {plan.duration:.1f} s of audio is longer than this server's limit of "
                                    f"{settings.max_duration_s:g} s (--max-duration-s)")
        if len(plan.windows) > settings.max_windows_per_request:
            fitting = plan.duration / settings.max_windows_per_request
            raise RequestLimitError(
                f"{name}: {plan.duration:.1f} s at window {window:g} s, hop {hop:g} s is {len(plan.windows)} windows, "
                f"more than this server's limit of {settings.max_windows_per_request} per request "
                f"(--max-windows-per-request): a hop of {fitting:.3g} s or more fits")

    def _feed(self, ticket: Ticket, prepared: Prepared) -> None:
        """Read and featurise the windows of `prepared` a batch at a time into the batcher, which waits while the
        model is a batch behind: memory follows the batch, not the upload."""
        for features in prepared.features(self.runner.features, self.settings.max_batch):
            if not self.batcher.feed(ticket, features):
                return  # the client went away

    async def score(self, request: Request, data: bytes, name: str, window: float,
                    hop: float) -> tuple[Upload, np.ndarray, np.ndarray]:
        """The opened upload, and the scores (windows, labels) and embeddings (windows, hidden) of its windows
        through the batcher, featurised as the model takes them. Its windows not yet scored are dropped (counted
        in `ast_audio_dropped_windows_total`) when the client leaves or the request is cancelled."""
        if self.stopping:
            raise ShuttingDownError("the server is stopping")
        ticket, upload = self.batcher.ticket(), Upload(name)
        asyncio.get_running_loop().run_in_executor(self.pool, self.prepare, ticket, upload, data, window, hop)
        try:
            await _unless_disconnected(request, ticket.future)
        finally:
            self.batcher.cancel(ticket)  # nothing left to drop when it finished or failed
        return upload, np.stack(ticket.scores), np.stack(ticket.embeddings)

    async def refine(self, request: Request, result: ClipResult, answers: Answers, data: bytes, window: float,
                     hop: float) -> ClipResult:
        """`result` after the finer pass `answers` asks for (`inference.finer.refine_result`, in the decoding
        pool: `service.refine`): upload `data` opened again for the extra windows, which are scored through the
        batcher and count, with the first pass's, against `max_windows_per_request`. Raises `RequestLimitError`
        past that limit, `QueueFullError`, `HTTPRejection` 499 when the client leaves (the pass's windows not
        yet scored dropped), `ShuttingDownError` when the server stops it; any other failure of the pass keeps
        the first pass's events (a warning logged), as the local runner does."""
        if not answers.options.refine or not result.ok or not result.events:
            return result
        loop = asyncio.get_running_loop()
        scorer = BatchedScorer(self.batcher, self.runner.features, loop, name=result.source,
                               first_pass=len(result.windows), limit=self.settings.max_windows_per_request)
        job = loop.run_in_executor(self.pool, functools.partial(
            refine_upload, result, answers, data, self.runner.timing, scorer, window=window, hop=hop,
            batch_size=self.settings.max_batch))
        try:
            refined, error = await _unless_disconnected(request, job)
        finally:
            scorer.stop()  # the client left or the request was cancelled: drop the batch in flight
        if error is not None:
            raise error
        return refined


@dataclasses.dataclass
class Upload:
    """An upload being scored: its name, and its window plan once `Service.prepare` has opened it."""

    name: str
    plan: WindowPlan | None = None


async def _disconnected(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(0.05)


async def _unless_disconnected(request: Request, future: asyncio.Future) -> Any:
    """`future`'s value (or its error) once done; `HTTPRejection` 499 if the client disconnects first."""
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({future, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if future not in done:
            raise HTTPRejection(499, "client disconnected")
        return future.result()
    finally:
        watcher.cancel()


def create_app(classifier: AudioClassifier, settings: ServiceSettings | None = None,
               model_source: str | None = None) -> FastAPI:
    """The FastAPI app serving `classifier` (model loaded; the batcher starts with the app). `model_source`: the
    checkpoint folder it came from, where events take the per-class thresholds of a thresholds.json beside it,
    as `classify --events` does."""
    service = Service(classifier, settings or ServiceSettings(), model_source)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        yield
        service.stop()

    app = FastAPI(title="ast-audio", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Audio Spectrogram Transformer: tags, timelines and embeddings of audio uploads.")
    app.state.service = service
    app.add_middleware(UploadLimitMiddleware, max_bytes=int(service.settings.max_upload_mb * 2**20),
                       paths=("/v1/classify", "/v1/embed"))
    app.add_middleware(RequestMetricsMiddleware, metrics=service.metrics)  # outermost: counts the 413s too
    _add_errors(app, service)
    _add_routes(app, service)
    _add_docs(app)
    return app


def _add_docs(app: FastAPI) -> None:
    """/docs: Swagger UI from the files of the swagger-ui-bundle-v2 package, so it renders offline."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{app.title} API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def _version() -> str:
    from ast_audio import __version__

    return __version__


def _authorise(service: Service):
    """The API key check of every /v1 route: `Authorization: Bearer KEY`, or for a WebSocket without that header
    (a browser cannot set one) the first message {"api_key": KEY} within the stream idle timeout."""
    async def check(connection: HTTPConnection) -> None:
        key = service.settings.api_key
        if key is None:
            return
        scheme, _, given = connection.headers.get("authorization", "").partition(" ")
        if not scheme and isinstance(connection, WebSocket):
            given = await first_message_key(connection, service.settings.stream_idle_timeout_s)
            if given is not None and _key_matches(given, key):
                return
            raise HTTPRejection(401, 'missing or wrong API key: send Authorization: Bearer <key>, or {"api_key": '
                                     '"<key>"} as the first message')
        if scheme.lower() != "bearer" or not _key_matches(given.strip(), key):
            raise HTTPRejection(401, "missing or wrong API key: send Authorization: Bearer <key>",
                                {"WWW-Authenticate": "Bearer"})
    return check


def _key_matches(given: str, key: str) -> bool:
    """The one comparison of a key sent with the server's, in constant time."""
    return hmac.compare_digest(given.encode(), key.encode())


def _add_errors(app: FastAPI, service: Service) -> None:
    """Every error answers {"error": "<one line>"}: this package's errors by `service.errors.STATUSES`, FastAPI's
    validation errors (422), Starlette's own (404, 405, a malformed multipart body 400), and anything else
    (a MemoryError, a bug: 500, logged with its traceback). On a WebSocket (/v1/stream, before its stream
    starts: the key, the query) the same message is sent as {"error": ...} and the socket closed with the code
    `service.stream.close_code` gives (1008 for a key or a query)."""

    async def refused(websocket: WebSocket, exc: BaseException) -> None:
        service.metrics.streams.labels(end=str(await refuse(websocket, exc))).inc()

    @app.exception_handler(HTTPRejection)
    async def rejected(connection: HTTPConnection, exc: HTTPRejection) -> JSONResponse | None:
        if isinstance(connection, WebSocket):
            return await refused(connection, exc)
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc), "detail": jsonable_encoder(exc.errors())},
                            status_code=422)

    @app.exception_handler(WebSocketRequestValidationError)
    async def invalid_stream(websocket: WebSocket, exc: WebSocketRequestValidationError) -> None:
        await refused(websocket, HTTPRejection(422, _validation_message(exc)))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else str(jsonable_encoder(exc.detail))
        if exc.status_code == 400:
            message = f"malformed request body: {message}"
        elif exc.status_code == 404:
            message = f"no route {request.url.path} (see /docs)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path} (allowed: {exc.headers.get('Allow')})" \
                if exc.headers else f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ASTAudioError)
    async def failed(connection: HTTPConnection, exc: ASTAudioError) -> JSONResponse | None:
        if isinstance(connection, WebSocket):
            return await refused(connection, exc)
        return await rejected(connection, rejection(exc))

    # Starlette gives this one to its outermost middleware, which sends the answer and then re-raises, so uvicorn
    # logs the traceback.
    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return await rejected(request, rejection(exc))


def _validation_message(exc: RequestValidationError | WebSocketRequestValidationError) -> str:
    """FastAPI's validation errors in one line: each parameter, what is wrong and the value given."""
    return "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']} (got {e.get('input')!r})"
                     for e in exc.errors())


def _known_query(request: HTTPConnection) -> None:
    """Refuse (422) a query parameter the route does not declare, naming the ones it does: the route's own
    parameters and its dependencies', as FastAPI reads them (`route.dependant`), so the list is never written
    twice."""
    route = request.scope["route"]
    known = _declared_query(route)
    for name in request.query_params:
        if name in known:
            continue
        raise HTTPRejection(422, f"unknown query parameter {name!r} (known: {', '.join(known) or 'none'})")


def _declared_query(route: Any) -> list[str]:
    """The query parameter names `route` (a FastAPI `APIRoute`) declares, itself and through its dependencies,
    in that order (a walk over a few dependants: cheap beside a request)."""
    names: list[str] = []
    dependants = [route.dependant]
    while dependants:
        dependant = dependants.pop(0)
        names += [field.alias for field in dependant.query_params if field.alias not in names]
        dependants += dependant.dependencies
    return names


def _upload_query(filename: str | None = Query(None, description="the upload's name, for a raw body (or the "
                                                                 "X-Filename header)")) -> None:
    """Declares ?filename=, which `service.uploads.read_upload` reads."""


def _add_routes(app: FastAPI, service: Service) -> None:
    authorised = [Depends(_authorise(service)), Depends(_known_query)]
    uploaded = [*authorised, Depends(_upload_query)]

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    @app.get("/live-worklet.js", include_in_schema=False)
    async def live_worklet() -> FileResponse:
        return FileResponse(LIVE_WORKLET, media_type="text/javascript")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = service.ready
        return JSONResponse({"status": "ready" if ready else "loading"}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(service.metrics.render(), media_type=service.metrics.content_type)

    @app.get("/v1/model", dependencies=authorised)
    async def model() -> dict[str, Any]:
        timing, classifier = service.runner.timing, service.classifier
        return {"labels": classifier.labels, "input_frames": timing.input_frames,
                "input_seconds": timing.input_seconds, "sampling_rate": timing.sampling_rate,
                "backend": classifier.backend, "score_function": classifier.score_function,
                "window": classifier.window, "hop": classifier.hop,
                "limits": dataclasses.asdict(dataclasses.replace(service.settings, api_key=None))}

    @app.post("/v1/classify", dependencies=uploaded)
    async def classify(
        request: Request, top_k: int = Query(5, ge=1), window: float | None = Query(None, gt=0),
        hop: float | None = Query(None, gt=0), pooling: Literal["mean", "max"] = "mean", timeline: bool = True,
        spectrogram: bool = False, asked: argparse.Namespace = Depends(_answer_query),
    ) -> dict[str, Any]:
        answers = request_answers(service, asked)
        result, data = await _run(request, service, window, hop, pooling, answers)
        out = clip_json(result, top_k, timeline)
        if spectrogram:
            out["spectrogram"] = await asyncio.get_running_loop().run_in_executor(service.pool, _spectrogram, data)
        return out

    @app.post("/v1/embed", dependencies=uploaded)
    async def embed(request: Request, window: float | None = Query(None, gt=0), hop: float | None = Query(None, gt=0),
                    per_window: bool = False) -> dict[str, Any]:
        result, _ = await _run(request, service, window, hop, "mean")
        return embedding_record(result, result.embedding.tolist(),
                                result.window_embeddings.tolist() if per_window else None)

    @app.websocket("/v1/stream", dependencies=authorised)
    async def stream(
        websocket: WebSocket, sample_format: str = Query("f32le", alias="format"),
        rate: int | None = Query(None), channels: int = Query(1, ge=1, le=MAX_CHANNELS),
        window: float | None = Query(None, gt=0), hop: float | None = Query(None, gt=0),
        top_k: int = Query(5, ge=1), realtime: bool = True, asked: argparse.Namespace = Depends(_answer_query),
    ) -> None:
        """Live tagging: audio messages in, a JSON record per window (and event) out, as `ast-audio listen`."""
        await serve_stream(service, websocket, _stream_request(service, sample_format, rate, channels, window, hop,
                                                               top_k, realtime, asked))


MAX_CHANNELS = 64  # channels of a PCM stream at most


def _stream_request(service: Service, sample_format: str, rate: int | None, channels: int, window: float | None,
                    hop: float | None, top_k: int, realtime: bool, asked: argparse.Namespace) -> StreamRequest:
    """A /v1/stream connection's query, checked as /v1/classify's (the same answers rule, window and hop
    range); raises `HTTPRejection` 422 or `ConfigError` naming the parameter and its value."""
    if sample_format not in STREAM_FORMATS:
        raise HTTPRejection(422, f"query parameter format={sample_format!r}: expected one of "
                                 f"{', '.join(STREAM_FORMATS)}")
    if sample_format != "container" and rate is None:
        raise HTTPRejection(422, f"query parameter rate: format={sample_format} needs the sampling rate in Hz "
                                 "(e.g. rate=16000)")
    if sample_format != "container":
        check_pcm_rate(rate, "query parameter rate")  # listen --rate's range (ConfigError: 422)
    if asked.refine:
        raise HTTPRejection(422, f"query parameter refine={asked.refine}: the finer pass reads the audio again around "
                                 "each event, which a live stream cannot; it is /v1/classify's and the command-line "
                                 "option (classify --refine ROUNDS)")
    options = request_answers(service, asked)
    classifier = service.classifier
    window, hop = window_and_hop(service.runner.timing, window, hop, default=(classifier.window, classifier.hop))
    return StreamRequest(sample_format, rate, channels, window, hop, top_k, realtime,
                         answers=options.build(classifier.labels) if options.active else None,
                         events=options.events is not None)


SPECTROGRAM_RATE = 16000  # Hz: the page's picture shows up to 8 kHz
FREQUENCY_TICKS_HZ = (50, 100, 250, 500, 1000, 2000, 4000, 8000)


def _spectrogram(data: bytes) -> dict[str, Any]:
    """A small log-mel picture for the page: up to 600 columns (time) of 128 mel bins, scaled to 0-255, and
    the frequency axis's ticks as fractional bin indices (0 = the first filter's centre)."""
    from ast_audio.features.kaldi import FbankOptions
    from ast_audio.jobs.plot import display_spectrogram, mel_bin_of_frequency

    values, duration = display_spectrogram(data, rate=SPECTROGRAM_RATE, max_columns=600)
    low, high = float(np.percentile(values, 1)), float(values.max())
    scaled = np.clip((values - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    bins = scaled.shape[1]
    options = FbankOptions(sample_frequency=float(SPECTROGRAM_RATE), num_mel_bins=bins)
    positions = mel_bin_of_frequency(np.array(FREQUENCY_TICKS_HZ, dtype=np.float64), options)
    ticks = [{"hz": hz, "bin": round(float(at), 2)} for hz, at in zip(FREQUENCY_TICKS_HZ, positions)
             if -0.5 <= at <= bins - 0.5]
    return {"duration": round(duration, 3), "columns": scaled.shape[0], "bins": bins,
            "frequency_ticks": ticks, "values": scaled.tolist()}


def _answer_query(
    events: bool | None = Query(None, description="events per class: onset, offset, peak and mean score (off "
                                                   "unless an event setting or refine turns them on; false "
                                                   "with one of those is 422)"),
    threshold: float | None = Query(None, description="an event starts where a score reaches it (default 0.5)"),
    threshold_off: float | None = Query(None, description="and lasts while it stays at or above this "
                                                          "(default 0.6 x threshold)"),
    min_duration: float | None = Query(None, description="seconds: shorter events are dropped"),
    min_gap: float | None = Query(None, description="seconds: shorter gaps between events of a class merge"),
    include: list[str] | None = Query(None, description="label names to keep (repeat the parameter)"),
    exclude: list[str] | None = Query(None, description="label names to drop (repeat the parameter)"),
    group: list[str] | None = Query(None, description="NAME=LABEL,LABEL: a label scoring its members' maximum"),
    rollup: bool = Query(False, description="AudioSet parents score the maximum of their descendants"),
    decide: bool = Query(False, description="the labels at or above their thresholds (the checkpoint's "
                                            "thresholds.json, else threshold, else 0.5), per clip and window"),
    refine: int | None = Query(None, description="rounds of the finer pass (1 to 3, 1 recommended; 0: off): "
                                                 "per round, one extra window scored at each event boundary, "
                                                 "halving the stretch it is known to (turns events on)"),
) -> argparse.Namespace:
    """The class selection, event and decision options of a request, named as `classify`'s options (any of the
    four event settings and refine turn events on, as there, except threshold with decide: then it is the
    decisions'); refine's range is checked by `AnswerOptions`, as the command line's. `events` is None when
    not given, so that an explicit false beside a setting that turns events on can be refused."""
    return argparse.Namespace(events=events, threshold=threshold, threshold_off=threshold_off,
                              min_duration=min_duration, min_gap=min_gap, include=include, exclude=exclude,
                              group=group, rollup=rollup, decide=decide, refine=refine)


def request_answers(service: Service, asked: argparse.Namespace) -> AnswerOptions:
    """The answers (`AnswerOptions`) of one request, by the command line's rule (`AnswerOptions.from_args`), or
    the classifier's own when it asks for none; checked against the model's labels before any work. Raises
    `HTTPRejection` 422 for a label file (@FILE: no route reads a path on the server) or a `group` not of the
    form NAME=LABEL,LABEL (named as the query parameters they are), `ConfigError` (422) for a value that cannot
    work or a label the model lacks."""
    for parameter in ("include", "exclude", "group"):
        for value in getattr(asked, parameter) or ():
            if value.startswith("@") or (parameter == "group" and value.partition("=")[2].startswith("@")):
                raise HTTPRejection(422, f"query parameter {parameter}={value!r}: label files (@FILE) are the "
                                         "command line's; the service takes label names")
    _check_groups(asked.group or ())
    answers = AnswerOptions.from_args(argparse.Namespace(**vars(asked), model=service.model_source))
    if asked.events is False and answers.events is not None:
        raise HTTPRejection(422, f"query parameter events=false contradicts {_event_settings(asked)}, which "
                                 "turn(s) events on: drop one of them")
    if not answers.active:
        return service.classifier.answers
    answers.build(service.classifier.labels)
    return answers


def _event_settings(asked: argparse.Namespace) -> str:
    """The query's settings that can turn events on, as NAME=VALUE (threshold is the decisions' with decide)."""
    names = ["threshold_off", "min_duration", "min_gap", "refine"] + ([] if asked.decide else ["threshold"])
    given = [name for name in names if getattr(asked, name) is not None and (name != "refine" or asked.refine)]
    return ", ".join(f"{name}={getattr(asked, name):g}" for name in given)


def _check_groups(values: Sequence[str]) -> None:
    """Raise `HTTPRejection` 422 for a `group` value that is not NAME=LABEL,LABEL or a group name given twice,
    in the service's words (`AnswerOptions.from_args` would speak of --group)."""
    names: set[str] = set()
    for value in values:
        name, sep, members = value.partition("=")
        if not sep or not name.strip() or not members.strip():
            raise HTTPRejection(422, f"query parameter group={value!r}: expected NAME=LABEL,LABEL,... (a comma "
                                     "inside a label as \\,)")
        if name.strip() in names:
            raise HTTPRejection(422, f"query parameter group: the group {name.strip()!r} is given twice")
        names.add(name.strip())


async def _run(request: Request, service: Service, window: float | None, hop: float | None,
               pooling: str, answers: AnswerOptions | None = None) -> tuple[ClipResult, bytes]:
    """Read, decode and score one upload: a ClipResult (with `answers`: the selected classes and the events,
    refined when they ask for the finer pass); raises `HTTPRejection` or this package's errors (their statuses
    in `service.errors.STATUSES`), each naming the problem."""
    data, name = await read_upload(request)
    classifier = service.classifier
    window, hop = window_and_hop(service.runner.timing, window, hop, default=(classifier.window, classifier.hop))
    upload, scores, embeddings = await service.score(request, data, name, window, hop)
    result = assemble(upload.plan, scores, embeddings, classifier.labels, pooling, answers)
    if answers is not None and answers.refine:
        result = await service.refine(request, result, answers.build(classifier.labels), data, window, hop)
    return result, data
