"""Headless Chromium for the page tests: Debian's `chromium` package, driven by playwright (pip) through
`executable_path`, so nothing is downloaded at test time. Installed here with apt-get when missing (CI and
the developers' machines run as root); a machine where that is impossible fails with what to install."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}


def chromium_executable() -> str:
    path = shutil.which("chromium")
    if path is None and shutil.which("apt-get") and os.geteuid() == 0:
        for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "chromium"]):
            subprocess.run(command, env=APT_ENV, capture_output=True, timeout=900, check=False)
            path = shutil.which("chromium")
            if path is not None:
                break
    if path is None:
        pytest.fail("Chromium is needed for the page tests: install Debian's `chromium` package "
                    "(apt-get install chromium)")
    return path
