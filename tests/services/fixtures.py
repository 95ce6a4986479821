"""Session fixtures for the real services the distributed backends need (a pytest plugin, registered in
tests/conftest.py): one PostgreSQL cluster and one S3-compatible server per test session, started only
when a test asks for them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.postgres import PostgresServer, running_postgres
from tests.services.s3 import S3Server, running_s3


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server
