"""Import rules of preprocessors/: media modules load no torch; none of it imports pipelines/ or server/."""

from __future__ import annotations

import pkgutil

import preprocessors
from tests.imports import forbidden_imports, loaded_after_importing

# Media code without models (preprocessors/__init__.py); annotators/ and interpolation/ hold the models.
MEDIA_MODULES = ("borders", "canvas", "composite", "conditioning", "keyframes", "masks", "resolution",
                 "sizing", "spatial", "temporal", "video_io")


def test_every_media_module_is_listed() -> None:
    found = {m.name for m in pkgutil.iter_modules(preprocessors.__path__)}
    assert found - {"annotators", "interpolation"} == set(MEDIA_MODULES)


def test_media_modules_load_no_torch() -> None:
    loaded = loaded_after_importing([f"preprocessors.{m}" for m in MEDIA_MODULES])
    assert "torch" not in loaded


def test_no_preprocessors_source_imports_pipelines_or_server() -> None:
    assert not forbidden_imports("preprocessors", ("pipelines", "server"))


def test_importing_every_preprocessors_module_loads_neither_pipelines_nor_server() -> None:
    modules = [m.name for m in pkgutil.walk_packages(preprocessors.__path__, "preprocessors.")]
    assert "preprocessors.annotators.registry" in modules  # the walk reaches the sub-packages
    loaded = loaded_after_importing(modules)
    assert not {m for m in loaded if m.split(".")[0] in ("pipelines", "server")}
