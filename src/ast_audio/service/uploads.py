"""Reading uploads: a size limit enforced while the body streams in, and the audio out of a raw body or a
multipart form (whose files Starlette spools to temporary files it removes)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request

from ast_audio.service.errors import HTTPRejection

AUDIO_TYPES = ("audio/", "video/", "application/octet-stream", "application/ogg")


class UploadTooLarge(Exception):
    pass


class UploadLimitMiddleware:
    """ASGI middleware: a request body to `paths` larger than `max_bytes` gets 413 as soon as the limit is
    passed (or at once when Content-Length says so), before the rest is read."""

    def __init__(self, app: Any, max_bytes: int, paths: tuple[str, ...]) -> None:
        self.app, self.max_bytes, self.paths = app, max_bytes, paths

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, send)
            return
        received = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise UploadTooLarge
            return message

        async def tracked_send(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except UploadTooLarge:
            if not started:
                await self._too_large(scope, send)

    async def _too_large(self, scope: dict, send: Any) -> None:
        body = json.dumps({"error": f"upload larger than this server's limit of {self.max_bytes / 2**20:g} MB"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


async def read_upload(request: Request) -> tuple[bytes, str]:
    """The uploaded audio and a name for messages: the multipart field `file`, or the raw body of an audio
    content type (its name from ?filename= or X-Filename)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPRejection(422, "multipart upload needs a file field named 'file'")
        try:
            data, name = await upload.read(), upload.filename or "upload"
        finally:
            await form.close()  # removes the spooled temporary file
    elif content_type.startswith(AUDIO_TYPES) or content_type == "":
        data = await request.body()
        name = request.query_params.get("filename") or request.headers.get("x-filename") or "upload"
    else:
        raise HTTPRejection(415, f"content type {content_type!r} is not audio: send the file as the body with an "
                                 "audio/* content type, or as the field 'file' of a multipart/form-data form")
    if not data:
        raise HTTPRejection(400, f"{name}: empty upload (0 bytes)")
    return data, name
