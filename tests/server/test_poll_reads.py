"""Issue 11 items 10 and 11: result, status and cancel polls never read a job's input; a lone surrogate is
refused at submit, and a stored one never makes the result a 500."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from server.api.app import create_app
from server.jobs.model import Job
from server.jobs.sqlite import SqliteJobStore
from server.settings import Settings
from tests.server.conftest import ProtocolApp

APP = "fal-ai/wan-vace-14b"
DEPTH = f"/queue/{APP}/depth"
REQUEST = {"prompt": "a cat", "video_url": "https://example.com/v.mp4"}


class FullReadCountingStore(SqliteJobStore):
    """The real SQLite store, counting the reads that load a job's whole row (its input included)."""

    full_reads = 0

    def get(self, job_id: str) -> Job | None:
        self.full_reads += 1
        return super().get(job_id)


@pytest.fixture
def counting(tmp_path: Path) -> Iterator[tuple[TestClient, FullReadCountingStore]]:
    store = FullReadCountingStore(tmp_path / "jobs.sqlite3")
    settings = Settings(data_dir=tmp_path / "data", model="tiny", num_workers=0)
    with TestClient(create_app(settings, run_workers=False, store=store)) as client:
        yield client, store


def test_result_status_and_cancel_polls_never_read_the_input(
        counting: tuple[TestClient, FullReadCountingStore]) -> None:
    """40 clients polling the result of a job with a 60 MiB input took the API to 2.9 GB and 14 s."""
    client, store = counting
    done = client.post(DEPTH, json=REQUEST).json()
    queued = client.post(DEPTH, json=REQUEST).json()
    job = store.claim("w1")
    assert job is not None and job.id == done["request_id"]
    assert store.complete(job.id, "w1", {"video": {"url": "/files/t/out.mp4"}, "seed": 7})
    store.full_reads = 0

    result = client.get(done["response_url"])
    assert result.status_code == 200
    assert result.json() == {"video": {"url": "http://testserver/files/t/out.mp4"}, "seed": 7}
    waiting = client.get(queued["response_url"])
    assert waiting.status_code == 400 and waiting.json() == {"detail": "Request is still in progress"}
    assert client.get(queued["status_url"]).json()["status"] == "IN_QUEUE"
    cancelled = client.put(queued["cancel_url"])
    assert cancelled.status_code == 202 and cancelled.json() == {"status": "OK"}
    again = client.put(done["cancel_url"])
    assert again.status_code == 400 and again.json() == {"status": "ALREADY_COMPLETED"}
    assert client.get(queued["response_url"]).json()["detail"] == "Request cancelled"
    assert client.get(f"/queue/{APP}/requests/nope").status_code == 404
    assert client.put(f"/queue/{APP}/requests/nope/cancel").status_code == 404
    assert store.full_reads == 0, "a poll loaded a whole job row"


@pytest.mark.parametrize(("field", "value", "loc"), [
    ("prompt", "a \ud800 cat", ["body", "prompt"]),
    ("negative_prompt", "\udfff", ["body", "negative_prompt"]),
])
def test_a_lone_surrogate_is_a_422_naming_the_field(protocol_app: ProtocolApp, field: str, value: str,
                                                    loc: list[str]) -> None:
    """`"\\ud800"` is valid JSON but no text: the job ran, then its result answered 500 forever."""
    body = json.dumps({**REQUEST, field: value})  # ensure_ascii: the surrogate travels as \\ud800
    response = protocol_app.client.post(DEPTH, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert [item["loc"] for item in detail] == [loc] and detail[0]["type"] == "string_unicode"
    assert protocol_app.store.count_queued() == 0


def test_a_stored_lone_surrogate_still_gives_a_json_result(protocol_app: ProtocolApp) -> None:
    """Rows stored before submit refused it: the result is written with the surrogate escaped."""
    submitted = protocol_app.client.post(DEPTH, json=REQUEST).json()
    store = protocol_app.store
    job = store.claim("w1")
    assert job is not None and store.complete(job.id, "w1", {"prompt": "a \ud800 cat", "seed": 1})
    response = protocol_app.client.get(submitted["response_url"])
    assert response.status_code == 200
    assert json.loads(response.content) == {"prompt": "a \ud800 cat", "seed": 1}
