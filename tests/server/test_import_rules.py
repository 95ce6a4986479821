"""The import rules of the layout (issue 10, item 9), checked on the code rather than trusted:

- the API process never loads torch, numpy, OpenCV, PyAV, diffusers, transformers, or worker, pipeline or
  preprocessor code: checked on `vace serve --workers 0`'s own entry point (sys.modules) and on a running
  server's memory map;
- server/contract, server/jobs, server/files and server/worker import no HTTP framework (and the contract
  no torch/numpy);
- preprocessors never imports pipelines or server; pipelines never imports server.

The static rules read every import statement (also those inside functions and under TYPE_CHECKING), so a
lazy import cannot slip past them. No rule has exceptions.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server.conftest import REPO, start_server

HTTP_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")
HEAVY = ("torch", "numpy", "cv2", "av", "diffusers", "transformers")
API_FORBIDDEN = (*HEAVY, "pipelines", "preprocessors", "server.worker")

# (package folder, forbidden module prefixes): no module under the folder may import any of them.
STATIC_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "contract-no-http": ("server/contract", HTTP_FRAMEWORKS),
    "contract-no-heavy-or-process-code": ("server/contract", (*HEAVY, "pipelines", "preprocessors",
                                                              "server.api", "server.worker")),
    "jobs-no-http": ("server/jobs", HTTP_FRAMEWORKS),
    "files-no-http": ("server/files", HTTP_FRAMEWORKS),
    "worker-no-http": ("server/worker", HTTP_FRAMEWORKS),
    "preprocessors-no-pipelines-or-server": ("preprocessors", ("pipelines", "server")),
    "pipelines-no-server": ("pipelines", ("server",)),
}

def _imports(path: Path) -> Iterator[str]:
    """Every absolute module an import statement in `path` names (`from a import b` yields a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def _matches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def violations(rule: str) -> set[tuple[str, str]]:
    """(file, imported module) pairs breaking `rule`, the submodule form dropped when its parent is there."""
    folder, forbidden = STATIC_RULES[rule]
    found = set()
    for path in sorted((REPO / folder).rglob("*.py")):
        relative = path.relative_to(REPO).as_posix()
        names = {m for m in _imports(path) if _matches(m, forbidden)}
        found |= {(relative, m) for m in names if m.rpartition(".")[0] not in names}
    return found


@pytest.mark.parametrize("rule", sorted(STATIC_RULES))
def test_static_import_rule(rule: str) -> None:
    broken = sorted(violations(rule))
    assert broken == [], f"{rule}: {broken}"


def test_rules_see_lazy_imports(tmp_path: Path) -> None:
    """An import inside a function or under TYPE_CHECKING counts: the checker must not miss it."""
    source = tmp_path / "m.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from starlette import types\n"
                      "def f():\n    import torch.nn\n")
    assert {"starlette", "torch.nn"} <= set(_imports(source))


# Every module of the worker, the job store and the contract, with all they import in turn
# (server/outbound.py, server/files/, pipelines/...): the static rules above see direct imports only.
_NO_HTTP_PROCESS = """
import importlib, json, pkgutil, sys
for package in ("server.contract", "server.jobs", "server.worker"):
    for info in pkgutil.walk_packages(importlib.import_module(package).__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
print(json.dumps(sorted(sys.modules)))
"""


def test_worker_job_store_and_contract_load_no_http_framework() -> None:
    out = subprocess.run([sys.executable, "-c", _NO_HTTP_PROCESS], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=300)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "server.worker.runner" in modules
    assert sorted(m for m in modules if _matches(m, HTTP_FRAMEWORKS)) == []


# The API entry point as `vace serve --workers 0` runs it, stopped just before it starts serving: the same
# imports, the app built, then sys.modules reported instead of listening.
_ENTRY_POINT = """
import json, sys
import server.api.server as http_server
from server import cli

def report(app, **kwargs):
    print(json.dumps(sorted(sys.modules)))

http_server.run_server = report
cli.main(["serve", "--model", "tiny", "--workers", "0", "--data-dir", sys.argv[1]])
"""


def test_api_entry_point_loads_no_model_or_worker_code(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", _ENTRY_POINT, str(tmp_path / "data")], cwd=REPO,
                         capture_output=True, text=True, check=True, timeout=120)
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    assert "server.api.app" in modules  # the report came from a built app
    assert sorted(m for m in modules if _matches(m, API_FORBIDDEN)) == []


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_running_api_process_maps_no_torch_numpy_or_opencv(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=0)
    try:
        mapped = {line.split()[-1] for line in Path(f"/proc/{server.proc.pid}/maps").read_text().splitlines()
                  if len(line.split()) >= 6}
    finally:
        server.stop()
    heavy = ("libtorch", "torch/", "numpy", "cv2", "opencv", "libavcodec", "libavformat", "/av/")
    assert sorted(path for path in mapped if any(marker in path for marker in heavy)) == []
