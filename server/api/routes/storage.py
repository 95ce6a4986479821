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
import json
import mimetypes
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from server.api.responses import error_response
from server.api.urls import public_base
from server.contract.errors import request_error
from server.files.store import FileStore
from server.files.uploads import PendingUpload, Uploads, UploadTooLarge

CDN_TOKEN_TTL_S = 3600


def _declared(request: Request) -> int:
    return int(request.headers.get("content-length") or 0)


def _default_name(content_type: str) -> str:
    ext = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return f"upload{ext}"


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _too_large(limit: int) -> JSONResponse:
    return error_response(request_error(f"Upload is larger than the {limit} byte limit", "file_too_large",
                                        413))


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
        body = await _json_body(request)
        content_type = str(body.get("content_type") or "application/octet-stream")
        file_name = str(body.get("file_name") or _default_name(content_type))
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
        return JSONResponse({"file_url": self._file_url(request, upload.name), "size": size})

    async def put_part(self, request: Request, upload_id: str, part_number: int) -> JSONResponse:
        upload = self.uploads.get(upload_id)
        if upload is None or part_number < 1:
            return _not_found()
        try:
            etag = await self.uploads.write_part(request.stream(), _declared(request), upload, part_number)
        except UploadTooLarge:
            return _too_large(self.uploads.max_bytes)
        # JS reads the JSON body, Python's CDN multipart reads the ETag header: send both.
        return JSONResponse({"partNumber": part_number, "etag": etag}, headers={"ETag": f'"{etag}"'})

    async def complete(self, request: Request, upload_id: str) -> JSONResponse:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return _not_found()
        parts = (await _json_body(request)).get("parts")
        if not isinstance(parts, list):
            return JSONResponse({"detail": "Body must be {\"parts\": [{partNumber, etag}, ...]}"},
                                status_code=400)
        # Joins up to --max-upload-bytes and may upload them to a bucket: off the event loop.
        problem = await asyncio.to_thread(self.uploads.assemble, upload, parts)
        if problem is not None:
            code = 413 if "limit" in problem else 400
            return JSONResponse({"detail": problem}, status_code=code)
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
        try:
            await self.uploads.write_file(request.stream(), _declared(request), upload)
        except UploadTooLarge:
            return _too_large(self.uploads.max_bytes)
        finally:
            self.uploads.discard(upload.upload_id)
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
