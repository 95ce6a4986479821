"""Uploads in the shapes both fal clients speak (docs/fal-protocol.md §4), stored in this server's FileStore.

- JS `fal.storage.upload` and Python's `fal` fallback: `POST /storage/upload/initiate` returns an
  `upload_url` on this server and the final `file_url`; the client then `PUT`s the bytes to `upload_url`.
  Over 90 MB JS uses `initiate-multipart`, `PUT {upload_url}/{n}` and `POST {upload_url}/complete`.
- Python's default `fal_v3` path: `POST /storage/auth/token` for a CDN token, then `POST /files/upload`
  with the raw body (or `/files/upload/multipart` + `PUT {access_url}/multipart/{id}/{n}` over 100 MB).

Every finished upload is a normal `/files/{token}/{name}` file, so it can be passed back as `video_url`
and the worker reads it from the FileStore (server/worker/fetch.py) instead of over HTTP. Slots and
parts are server/files/uploads.py's.
Tokens and upload ids are not checked yet: authentication is a later issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import secrets
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from server.api.responses import error_response
from server.api.urls import public_base
from server.contract.errors import request_error
from server.files.store import FileStore
from server.files.uploads import PendingUpload, UploadBusy, Uploads, UploadTooLarge

CDN_TOKEN_TTL_S = 3600
M = TypeVar("M", bound=BaseModel)


class InitiateBody(BaseModel):
    """`POST /storage/upload/initiate*`; other keys (storage_type...) are accepted and make no difference."""

    content_type: StrictStr | None = None
    file_name: StrictStr | None = None


class CompletedPart(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    part_number: StrictInt = Field(alias="partNumber", ge=1)
    etag: StrictStr


class CompleteBody(BaseModel):
    """`POST .../complete`: `{"parts": [{"partNumber": 1, "etag": "..."}, ...]}` (both clients send this)."""

    parts: list[CompletedPart] = Field(min_length=1)


def _declared(request: Request) -> int:
    try:
        return max(int(request.headers.get("content-length") or 0), 0)
    except ValueError:
        return 0  # uvicorn refuses a malformed Content-Length before a route sees it


def _default_name(content_type: str) -> str:
    ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"upload{ext}"


class _BadJson(Exception):
    pass


async def _json_body(request: Request, model: type[M]) -> M:
    """The body as `model`; an empty body is `{}`. Malformed JSON (deep nesting included) is a 400, a body
    of the wrong shape a 422 naming the field, both in fal's error form (server/api/responses.py)."""
    raw = await request.body()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:
        raise _BadJson() from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors(include_url=False)]
        raise RequestValidationError(errors, body=None) from exc


def _bad_json() -> JSONResponse:
    return error_response(request_error("The request body is not valid JSON", "invalid_json", 400))


def _too_large(limit: int) -> JSONResponse:
    return error_response(request_error(f"Upload is larger than the {limit} byte limit", "file_too_large",
                                        413))


def _busy() -> JSONResponse:
    return error_response(request_error("This upload is being completed by another request", "upload_busy",
                                        409))


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Upload not found"}, status_code=404)


class StorageApi:
    """Owns the storage routes."""

    def __init__(self, files: FileStore, uploads: Uploads, public_url: str | None) -> None:
        self.files = files
        self.uploads = uploads
        self.public_url = public_url
        self.router = APIRouter(tags=["storage"])
        add = self.router.add_api_route
        add("/storage/upload/initiate", self.initiate, methods=["POST"])
        add("/storage/upload/initiate-multipart", self.initiate, methods=["POST"])
        add("/storage/upload/{upload_id}", self.put_whole, methods=["PUT"])
        add("/storage/upload/{upload_id}/complete", self.complete, methods=["POST"])
        add("/storage/upload/{upload_id}/{part_number}", self.put_part, methods=["PUT"])
        add("/storage/auth/token", self.cdn_token, methods=["POST"])
        add("/files/upload", self.cdn_upload, methods=["POST"])
        add("/files/upload/multipart", self.cdn_multipart_create, methods=["POST"])
        add("/files/{token}/{name}/multipart/{upload_id}/complete", self.cdn_multipart_complete,
            methods=["POST"])
        add("/files/{token}/{name}/multipart/{upload_id}/{part_number}", self.cdn_multipart_part,
            methods=["PUT"])

    def _base(self, request: Request) -> str:
        return public_base(request, self.public_url)

    def _file_url(self, request: Request, name: str) -> str:
        return self._base(request) + self.files.url(name)

    # -- rest.fal.ai style: initiate, then PUT to the returned upload_url ------------------------------

    async def initiate(self, request: Request) -> JSONResponse:
        """`storage_type` (fal-cdn-v3 or gcs) makes no difference here: both end up in the FileStore."""
        try:
            body = await _json_body(request, InitiateBody)
        except _BadJson:
            return _bad_json()
        content_type = body.content_type or "application/octet-stream"
        file_name = body.file_name or _default_name(content_type)
        upload = self.uploads.create(file_name, content_type)
        return JSONResponse({
            "upload_url": f"{self._base(request)}/storage/upload/{upload.upload_id}",
            "file_url": self._file_url(request, upload.name),
        })

    async def put_whole(self, request: Request, upload_id: str) -> JSONResponse:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return _not_found()
        try:
            size = await self.uploads.write_file(request.stream(), _declared(request), upload)
        except UploadTooLarge:
            return _too_large(self.uploads.max_bytes)
        except UploadBusy:
            return _busy()
        except FileNotFoundError:
            return _not_found()  # finished by another request meanwhile: the URL was single-use
        return JSONResponse({"file_url": self._file_url(request, upload.name), "size": size})

    async def put_part(self, request: Request, upload_id: str, part_number: int) -> JSONResponse:
        upload = self.uploads.get(upload_id)
        if upload is None or part_number < 1:
            return _not_found()
        try:
            etag = await self.uploads.write_part(request.stream(), _declared(request), upload, part_number)
        except UploadTooLarge:
            return _too_large(self.uploads.max_bytes)
        except UploadBusy:
            return _busy()
        except FileNotFoundError:
            return _not_found()  # completed meanwhile
        # JS reads the JSON body, Python's CDN multipart reads the ETag header: send both.
        return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"ETag": f'"{etag}"'})

    async def complete(self, request: Request, upload_id: str) -> JSONResponse:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return _not_found()
        try:
            body = await _json_body(request, CompleteBody)
        except _BadJson:
            return _bad_json()
        try:
            # Joins up to --max-upload-bytes and may upload them to a bucket: off the event loop.
            problem = await asyncio.to_thread(self.uploads.assemble, upload,
                                              [(p.part_number, p.etag) for p in body.parts])
        except UploadBusy:
            return _busy()
        except FileNotFoundError:
            return _not_found()  # completed meanwhile
        if problem is not None:
            if "limit" in problem:
                return _too_large(self.uploads.max_bytes)
            return error_response(request_error(problem, "invalid_parts", 400))
        return JSONResponse({"file_url": self._file_url(request, upload.name)})

    # -- v3.fal.media style (Python's default): token, then POST the raw body ------------------------

    def cdn_token(self, request: Request) -> JSONResponse:
        expires = datetime.now(UTC) + timedelta(seconds=CDN_TOKEN_TTL_S)
        # fal-client sends the token back as `Authorization: Bearer <token>` on /files/upload*. Handing the
        # caller its own (already checked) key keeps uploads working when API keys are on.
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        token = credential.strip() if scheme.lower() in ("key", "bearer") and credential.strip() else None
        return JSONResponse({"token": token or secrets.token_urlsafe(24), "token_type": "Bearer",
                             "base_url": self._base(request), "expires_at": expires.isoformat()})

    def _cdn_name(self, request: Request) -> tuple[str, str]:
        content_type = request.headers.get("content-type") or "application/octet-stream"
        return request.headers.get("x-fal-file-name") or _default_name(content_type), content_type

    async def cdn_upload(self, request: Request) -> JSONResponse:
        name, content_type = self._cdn_name(request)
        upload = self.uploads.create(name, content_type)
        landed = False
        try:
            await self.uploads.write_file(request.stream(), _declared(request), upload)
            landed = True
        except UploadTooLarge:
            return _too_large(self.uploads.max_bytes)
        finally:
            self.uploads.discard(upload.upload_id)
            if not landed:  # refused, cut off or out of space: no empty reserved folder is kept
                with contextlib.suppress(OSError):
                    self.files.delete_folder(upload.name.partition("/")[0])
        return JSONResponse({"access_url": self._file_url(request, upload.name)})

    def cdn_multipart_create(self, request: Request) -> JSONResponse:
        name, content_type = self._cdn_name(request)
        upload = self.uploads.create(name, content_type)
        return JSONResponse({"access_url": self._file_url(request, upload.name),
                             "uploadId": upload.upload_id})

    def _cdn_upload(self, token: str, name: str, upload_id: str) -> PendingUpload | None:
        """The upload id must belong to the file URL it is addressed under."""
        upload = self.uploads.get(upload_id)
        if upload is None or upload.name != f"{token}/{name}":
            return None
        return upload

    async def cdn_multipart_part(self, request: Request, token: str, name: str, upload_id: str,
                                 part_number: int) -> JSONResponse:
        if self._cdn_upload(token, name, upload_id) is None:
            return _not_found()
        return await self.put_part(request, upload_id, part_number)

    async def cdn_multipart_complete(self, request: Request, token: str, name: str,
                                     upload_id: str) -> JSONResponse:
        if self._cdn_upload(token, name, upload_id) is None:
            return _not_found()
        response = await self.complete(request, upload_id)
        if response.status_code != 200:
            return response
        return JSONResponse({"access_url": self._file_url(request, f"{token}/{name}")})
