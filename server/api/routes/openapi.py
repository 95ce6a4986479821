"""fal's per-endpoint OpenAPI document: `GET /api/openapi/queue/openapi.json?endpoint_id=<id>`.

fal publishes one document per endpoint id (docs: fal-current-schema.md, "Protocol details"): OpenAPI 3.0,
paths keyed by the full endpoint id (`POST /fal-ai/wan-vace-14b/depth`, `GET .../requests/{request_id}`,
`/status`, `/cancel`), the input and output schemas, a `QueueStatus` schema, `servers` and `apiKeyAuth`.
Tools that generate clients from fal's OpenAPI read exactly that shape. Here `servers` is this server's
public base plus `/queue`, the prefix its queue routes live under, so `server + path` is a working URL.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from server.api.urls import public_base
from server.contract.endpoints import APP_ID, ENDPOINTS, Endpoint

OPENAPI_ROUTE = "/api/openapi/queue/openapi.json"
_REF = "#/components/schemas/{model}"

QUEUE_STATUS: dict[str, Any] = {
    "type": "object",
    "title": "QueueStatus",
    "properties": {
        "status": {"type": "string", "enum": ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]},
        "request_id": {"type": "string", "description": "The request id."},
        "response_url": {"type": "string", "description": "The response url."},
        "status_url": {"type": "string", "description": "The status url."},
        "cancel_url": {"type": "string", "description": "The cancel url."},
        "logs": {"type": "object", "description": "The logs.", "additionalProperties": True},
        "metrics": {"type": "object", "description": "The metrics.", "additionalProperties": True},
        "queue_position": {"type": "integer", "description": "The queue position."},
    },
    "required": ["status", "request_id"],
}


def schema_name(endpoint: Endpoint, kind: str) -> str:
    """fal's schema names: WanVace14bInput, WanVace14bDepthInput, ... (and ...Output)."""
    task = endpoint.id.removeprefix(APP_ID).strip("/")
    return "WanVace14b" + task.capitalize() + kind


def _schemas(endpoint: Endpoint) -> dict[str, Any]:
    """The endpoint's input and output schemas and everything they reference, under fal's names."""
    schemas: dict[str, Any] = {"QueueStatus": QUEUE_STATUS}
    for kind, model, mode in (("Input", endpoint.input_model, "validation"),
                              ("Output", endpoint.output_model, "serialization")):
        schema = _model_schema(model, mode)
        schemas.update(schema.pop("$defs", {}))
        schema["title"] = schema_name(endpoint, kind)
        schemas[schema["title"]] = schema
    return schemas


def _model_schema(model: type[BaseModel], mode: str) -> dict[str, Any]:
    return model.model_json_schema(ref_template=_REF, mode=mode)  # type: ignore[arg-type]


def _request_id() -> dict[str, Any]:
    return {"name": "request_id", "in": "path", "required": True, "description": "Request ID",
            "schema": {"type": "string"}}


def _json(ref: str, description: str = "The request status.") -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}}


def endpoint_document(endpoint: Endpoint, base: str, keys_on: bool) -> dict[str, Any]:
    path = f"/{endpoint.id}"
    requests = f"{path}/requests/{{request_id}}"
    inp, out = schema_name(endpoint, "Input"), schema_name(endpoint, "Output")
    document: dict[str, Any] = {
        "openapi": "3.0.4",
        "info": {
            "title": f"Queue OpenAPI for {endpoint.id}",
            "version": "1.0.0",
            "description": f"The OpenAPI schema for the {endpoint.id} queue, served by this self-hosted "
                           "server.",
            "x-fal-metadata": {"endpointId": endpoint.id, "category": "video-to-video"},
        },
        "components": {
            "securitySchemes": {"apiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization",
                                               "description": 'Fal Key ("Key <key>")'}},
            "schemas": _schemas(endpoint),
        },
        "paths": {
            f"{requests}/status": {"get": {
                "parameters": [_request_id(), {"name": "logs", "in": "query", "required": False,
                                               "description": "Whether to include logs (`1`) in the response "
                                               "or not (`0`).", "schema": {"type": "number"}}],
                "responses": _json("QueueStatus")}},
            f"{requests}/cancel": {"put": {
                "parameters": [_request_id()],
                "responses": {"200": {"description": "The request was cancelled.", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "success": {"type": "boolean", "description": "Whether the request was cancelled "
                                    "successfully."}}}}}}}}},
            path: {"post": {
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": f"#/components/schemas/{inp}"}}}},
                "responses": _json("QueueStatus", "The request status.")}},
            requests: {"get": {
                "parameters": [_request_id()],
                "responses": _json(out, "Result of the request.")}},
        },
        "servers": [{"url": f"{base}/queue"}],
    }
    if keys_on:
        document["security"] = [{"apiKeyAuth": []}]
    return document


def openapi_router(public_url: str | None, keys_on: bool) -> APIRouter:
    router = APIRouter()

    @router.get(OPENAPI_ROUTE, tags=["server"], summary="fal's per-endpoint OpenAPI document")
    def endpoint_openapi(request: Request, endpoint_id: str = Query(..., description="e.g. " + APP_ID)
                         ) -> JSONResponse:
        endpoint = ENDPOINTS.get(endpoint_id.strip("/"))
        if endpoint is None:
            return JSONResponse({"detail": f"Unknown endpoint_id {endpoint_id!r}; this server has: "
                                 + ", ".join(sorted(ENDPOINTS))}, status_code=404)
        return JSONResponse(endpoint_document(endpoint, public_base(request, public_url), keys_on))

    return router
