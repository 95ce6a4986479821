"""The real `fal-client` from PyPI, pointed at a plain-HTTP server as docs/clients.md tells users to."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.api.background.webhook_signing import public_keys, verify
from tests.clients.conftest import (
    APP,
    SUB_PATH_SIZES,
    WebhookReceiver,
    assert_current_example_output,
    assert_video,
    current_full_example,
    failing_input,
    real_input,
    sub_path_example,
)
from tests.server.conftest import LiveServer, Media

fal_client = pytest.importorskip("fal_client", reason="pip install -e '.[test]' installs fal-client")


@pytest.fixture(scope="module")
def fal(client_server: LiveServer) -> Iterator[ModuleType]:
    """docs/clients.md, "Python over plain HTTP": four assignments after import (docs/fal-protocol.md 6.1)."""
    os.environ.setdefault("FAL_KEY", "local-key-id:local-key-secret")  # sent as `Authorization: Key ...`
    import fal_client.client as c

    saved = (c.RUN_URL_FORMAT, c.QUEUE_URL_FORMAT, c.REST_URL, c.CDN_URL)
    c.RUN_URL_FORMAT = f"{client_server.base}/"
    c.QUEUE_URL_FORMAT = f"{client_server.base}/queue/"
    c.REST_URL = c.CDN_URL = client_server.base
    yield fal_client
    c.RUN_URL_FORMAT, c.QUEUE_URL_FORMAT, c.REST_URL, c.CDN_URL = saved


def test_upload_file_then_subscribe_with_logs(fal: ModuleType, client_server: LiveServer, media: Media,
                                              tmp_path: Path) -> None:
    """Real generation #1: the uploaded file is the video_url; a second request is cancelled while queued."""
    url = fal.upload_file(media.control)
    assert url.startswith(f"{client_server.base}/files/")
    assert httpx.get(url).content == media.control.read_bytes()

    updates: list[object] = []
    queued: dict[str, object] = {}

    def on_enqueue(request_id: str) -> None:
        # The worker is busy with the first request from now on, so this one stays queued.
        handle = fal.submit(f"{APP}/depth", arguments=failing_input(media))
        queued["status_before"] = handle.status()
        handle.cancel()
        queued["status_after"] = handle.status()
        with pytest.raises(fal.FalClientHTTPError) as cancelled:
            handle.get()
        queued["result_error"] = cancelled.value
        queued["first"] = request_id

    result = fal.subscribe(f"{APP}/depth", arguments=real_input(url), with_logs=True,
                           on_enqueue=on_enqueue, on_queue_update=updates.append)

    assert_video(result["video"]["url"], tmp_path / "python.mp4")
    assert result["prompt"] == "a bar moving over a gradient"
    progress = [u for u in updates if isinstance(u, fal.InProgress)]
    messages = [entry["message"] for u in progress for entry in (u.logs or [])]
    assert any(m.startswith("Denoising step") for m in messages), messages
    assert isinstance(updates[-1], fal.Completed) and updates[-1].error is None

    assert isinstance(queued["status_before"], fal.Queued)
    after = queued["status_after"]
    assert isinstance(after, fal.Completed) and after.error_type == "client_cancelled"
    assert queued["result_error"].status_code == 499


def test_fals_current_full_example(fal: ModuleType, media: Media, tmp_path: Path) -> None:
    """Real generation (17 frames): every field of fal's current example, as published, on the root."""
    result = fal.subscribe(APP, arguments=current_full_example(fal.upload_file(media.control)))
    assert_current_example_output(result, tmp_path / "python-example.mp4")


@pytest.mark.parametrize("task", ["depth", "pose", "inpainting", "outpainting", "reframe"])
def test_fals_current_full_example_on_every_sub_path(fal: ModuleType, media: Media, task: str,
                                                     tmp_path: Path) -> None:
    """Real generation (17 frames) on each sub-path: every field of the example the sub-path has, through
    the client, none refused and none ignored."""
    example = sub_path_example(task, fal.upload_file(media.control), media)
    handle = fal.submit(f"{APP}/{task}", arguments=example)
    events = list(handle.iter_events(with_logs=True, interval=0.1))
    assert isinstance(events[-1], fal.Completed) and events[-1].error is None, events[-1]
    assert not any("Ignored field" in entry["message"] for entry in events[-1].logs or [])
    assert_current_example_output(handle.get(), tmp_path / f"{task}.mp4", size=SUB_PATH_SIZES[task])


def test_submit_status_result_of_a_failing_request(fal: ModuleType, media: Media) -> None:
    handle = fal.submit(f"{APP}/depth", arguments=failing_input(media))
    events = list(handle.iter_events(with_logs=True, interval=0.1))
    assert isinstance(events[-1], fal.Completed)
    assert events[-1].error_type == "unsupported_video_format"

    # The by-id helpers rebuild URLs from QUEUE_URL_FORMAT without the sub-path (docs/fal-protocol.md §1).
    status = fal.status(APP, handle.request_id, with_logs=True)
    assert isinstance(status, fal.Completed)
    assert status.logs and {"message", "level", "timestamp"} <= set(status.logs[0])
    assert status.metrics["inference_time"] is not None
    for get in (handle.get, lambda: fal.result(APP, handle.request_id)):
        with pytest.raises(fal.FalClientHTTPError) as error:
            get()
        assert error.value.status_code == 422
        assert error.value.response_headers["x-fal-request-id"] == handle.request_id
        assert error.value.message[0]["loc"] == ["body", "video_url"]

    with pytest.raises(fal.FalClientHTTPError) as already:
        fal.cancel(APP, handle.request_id)
    assert already.value.status_code == 400


def test_run_returns_the_model_error(fal: ModuleType, media: Media) -> None:
    with pytest.raises(fal.FalClientHTTPError) as error:
        fal.run(f"{APP}/depth", arguments=failing_input(media))
    assert error.value.status_code == 422
    assert error.value.message[0]["type"] == "unsupported_video_format"


def test_upload_fallback_and_multipart(fal: ModuleType, client_server: LiveServer) -> None:
    """The `fal` repository (initiate + PUT upload_url) and the CDN multipart protocol (used over 100 MB)."""
    data = b"fallback upload " * 1000
    url = fal.upload(data, "application/octet-stream", "blob.bin", repository="fal")
    assert url.startswith(f"{client_server.base}/files/") and url.endswith("/blob.bin")
    assert httpx.get(url).content == data

    # Same code path as a >100 MB upload_file(), with 64 KB parts instead of 10 MB ones.
    from fal_client.client import MultipartUpload

    big = os.urandom(300_000)
    client = fal.sync_client._get_cdn_client()
    url = MultipartUpload.save(client=client, token_manager=fal.sync_client._token_manager,
                               file_name="parts.bin", data=big, content_type="application/octet-stream",
                               chunk_size=64 * 1024)
    assert hashlib.sha256(httpx.get(url).content).digest() == hashlib.sha256(big).digest()


def test_webhook_delivered_signed_with_retries(fal: ModuleType, client_server: LiveServer, media: Media,
                                               webhook_receiver: WebhookReceiver, tmp_path: Path) -> None:
    """Real generation #3 (OK payload) and a failing request whose receiver answers 500 once (ERROR)."""
    # What a receiver written for fal does, with this server's JWKS URL instead of fal's.
    jwks = httpx.get(f"{client_server.base}/.well-known/jwks.json").json()
    keys = public_keys(jwks)
    assert len(keys) == 1 and jwks["keys"][0]["alg"] == "EdDSA"
    webhook_receiver.fail_first["/error"] = 1
    failed = fal.submit(f"{APP}/depth", arguments=failing_input(media),
                        webhook_url=f"{webhook_receiver.url}/error")
    ok = fal.submit(f"{APP}/depth", arguments=real_input(fal.upload_file(media.control)),
                    webhook_url=f"{webhook_receiver.url}/ok")

    first, second = webhook_receiver.wait_for("/error", count=2)
    assert (first.answered, second.answered) == (500, 200)
    assert first.body == second.body
    body = second.json()
    assert body["request_id"] == failed.request_id and body["status"] == "ERROR"
    assert body["error"] == "Invalid status code: 422"
    assert body["payload"]["detail"][0]["type"] == "unsupported_video_format"
    assert verify(keys, second.headers, second.body)
    assert second.headers["x-fal-webhook-request-id"] == failed.request_id

    (delivery,) = webhook_receiver.wait_for("/ok")
    body = delivery.json()
    assert body["request_id"] == ok.request_id and body["status"] == "OK" and body["error"] is None
    assert verify(keys, delivery.headers, delivery.body)
    assert not verify([Ed25519PrivateKey.generate().public_key()], delivery.headers, delivery.body)
    assert not verify(keys, delivery.headers, delivery.body + b" ")
    assert body["payload"] == ok.get()
    assert_video(body["payload"]["video"]["url"], tmp_path / "webhook.mp4")



ENDPOINT_EXTRAS: dict[str, dict[str, object]] = {
    "": {"task": "pose"},
    "/depth": {},
    "/pose": {},
    "/inpainting": {"mask_video_url": "data:video/mp4;base64,AAAA"},
    "/outpainting": {"expand_left": True},
    "/reframe": {},
}


@pytest.mark.parametrize("path", list(ENDPOINT_EXTRAS))
def test_each_endpoint_id_through_submit_status_result(fal: ModuleType, media: Media, path: str) -> None:
    """All six endpoint ids the clients know; the input fails fast in the worker, so no GPU time is spent."""
    handle = fal.submit(f"{APP}{path}", arguments=failing_input(media) | ENDPOINT_EXTRAS[path])
    final = list(handle.iter_events(with_logs=True, interval=0.1))[-1]
    assert isinstance(final, fal.Completed) and final.error_type == "unsupported_video_format"
    assert fal.status(APP, handle.request_id).error_type == "unsupported_video_format"
    with pytest.raises(fal.FalClientHTTPError) as failed:
        fal.result(APP, handle.request_id)
    assert failed.value.status_code == 422
