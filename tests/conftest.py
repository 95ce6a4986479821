"""Shared test setup: no hub access, and one tiny Wan VACE model folder per test session."""

import os

# Set before anything imports huggingface_hub: a test must never try the network.
os.environ["HF_HUB_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny random WanVACEPipeline folder (diffusers layout), built once per session."""
    from pipelines.tiny import ensure_tiny_pipeline  # imported lazily: torch/diffusers are slow to import

    return ensure_tiny_pipeline(tmp_path_factory.mktemp("models"))


# The throwaway PostgreSQL and S3-compatible servers (tests/services/), started on first use.
pytest_plugins = ["tests.services.fixtures"]
