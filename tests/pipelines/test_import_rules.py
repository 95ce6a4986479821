"""Import rule of pipelines/: it never imports server/ (the worker calls pipelines, not the reverse)."""

from __future__ import annotations

from tests.imports import forbidden_imports


def test_no_pipelines_source_imports_server() -> None:
    assert not forbidden_imports("pipelines", ("server",))
