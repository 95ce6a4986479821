"""The annotator catalog: one record per model, agreeing with weights/README.md, loading no model library."""

from __future__ import annotations

import pytest

from preprocessors.annotators import catalog
from preprocessors.annotators.catalog import DEPTH_ANYTHING, DWPOSE, FILM, MIDAS, OPENPOSE, RIFE
from tests.imports import ROOT, loaded_after_importing

WEIGHTS_README = ROOT / "weights" / "README.md"


def test_choices_name_each_backend_once() -> None:
    assert catalog.choices("depth") == {"midas": MIDAS, "depth-anything-v2": DEPTH_ANYTHING}
    assert catalog.choices("pose") == {"dwpose": DWPOSE, "openpose": OPENPOSE}
    assert catalog.choices("interpolator") == {"film": FILM, "rife": RIFE}
    assert catalog.choices("safety") == {} and catalog.choices("prompt") == {}
    assert [catalog.by_folder(m.folder) for m in catalog.ALL] == list(catalog.ALL)
    with pytest.raises(KeyError, match="unknown annotator model 'nope'"):
        catalog.by_folder("nope")


@pytest.mark.parametrize("model", catalog.ALL, ids=lambda m: m.folder)
def test_deferred_builders_and_loaders_name_real_functions(model: catalog.AnnotatorModel) -> None:
    deferred = [f for f in (model.build_tiny, model.load) if isinstance(f, catalog.Deferred)]
    assert deferred  # every record names at least its tiny builder this way
    for function in deferred:
        assert callable(function.resolve())


@pytest.mark.parametrize("model", catalog.ALL, ids=lambda m: m.folder)
def test_weights_readme_lists_each_model_with_its_licence(model: catalog.AnnotatorModel) -> None:
    row_start = f"| `{model.folder}/` |"
    rows = [line for line in WEIGHTS_README.read_text().splitlines() if line.startswith(row_start)]
    assert len(rows) == 1, f"weights/README.md has no single table row for {model.folder}/"
    assert model.licence in rows[0].rsplit("|", 2)[-2]  # the licence column


def test_catalog_and_download_load_no_model_library() -> None:
    """`vace download --annotators` reads the catalog: it must not pay for torch or transformers."""
    loaded = loaded_after_importing(["preprocessors.annotators.catalog", "preprocessors.annotators.download"])
    assert not {"torch", "transformers", "numpy", "cv2", "onnxruntime"} & loaded
