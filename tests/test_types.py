"""mypy holds server/ to its strict mode (configuration: [tool.mypy] in pyproject.toml).

A pytest test, so the README's `pytest` (and CI, which runs nothing else) type-checks too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_server_type_checks_clean() -> None:
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"mypy found problems:\n{result.stdout}{result.stderr}"
