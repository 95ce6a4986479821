"""Property-based fuzzing of every documented route of a live server: whatever comes in, no 5xx goes out.

The server runs with `--workers 0`, so accepted submissions just wait in its queue and never start a
generation. The synchronous /run/ routes are left out: they wait for a result that never comes without
a worker (their input models and validation are the /queue/ routes', which are fuzzed).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.checks import not_a_server_error

from tests.server.conftest import LiveServer, start_server

MAX_EXAMPLES = 25  # per operation; with about 25 operations the run takes about 30 s


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("fuzz") / "data", workers=0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: LiveServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(fuzz_server.base + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path_regex=r"^/run/")


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, fuzz_server: LiveServer) -> None:
    response = case.call(base_url=fuzz_server.base, timeout=30)
    if case.operation.path in ("/health", "/readyz"):
        assert response.status_code < 500 or response.status_code == 503  # "starting": no worker here
        return
    case.validate_response(response, checks=[not_a_server_error])
