"""The annotator benchmark's tests run torch on one thread, as the annotator tests do (shared CPU cores)."""

from tests.annotators.conftest import _few_threads  # noqa: F401  (an autouse fixture, registered by import)
