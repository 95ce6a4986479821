"""The URLs this server hands out, on the host each caller used (routes and webhooks both need them)."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import URL
from starlette.requests import Request
from starlette.types import Scope


def public_base(request: Request, override: str | None) -> str:
    """The scheme://host[:port] the caller used, so every URL we return works for it."""
    return scope_base(request.scope, override)


def scope_base(scope: Scope, override: str | None) -> str:
    if override:
        return override.rstrip("/")
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}"


def absolute_urls(value: Any, base: str) -> Any:
    """Outputs store this server's file links as paths; each caller gets them on the host it used."""
    if isinstance(value, dict):
        return {k: base + v if _is_local_link(k, v) else absolute_urls(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [absolute_urls(v, base) for v in value]
    return value


def _is_local_link(key: str, value: Any) -> bool:
    return key == "url" and isinstance(value, str) and value.startswith("/")
