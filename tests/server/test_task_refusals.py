"""Task requests that cannot run are refused at submit (422), before any worker time is spent."""

from __future__ import annotations

from tests.server.conftest import LiveServer

APP = "fal-ai/wan-vace-14b"
VIDEO = "https://example.com/v.mp4"


def test_inpainting_on_root_without_a_mask_is_422(live_server: LiveServer) -> None:
    with live_server.client() as client:
        payload = {"prompt": "x", "task": "inpainting", "video_url": VIDEO}
        response = client.post(f"/queue/{APP}", json=payload)
    assert response.status_code == 422
    detail = response.json()["detail"][0]
    assert "mask_video_url or mask_image_url" in detail["msg"]


def test_inpainting_sub_path_without_mask_video_is_a_schema_error(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(f"/queue/{APP}/inpainting", json={"prompt": "x", "video_url": VIDEO})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "mask_video_url"]


def test_outpainting_with_nothing_to_expand_is_422(live_server: LiveServer) -> None:
    with live_server.client() as client:
        sub_path = client.post(f"/queue/{APP}/outpainting", json={"prompt": "x", "video_url": VIDEO})
        root = client.post(f"/queue/{APP}", json={"prompt": "x", "task": "outpainting", "video_url": VIDEO,
                                                  "expand_top": True, "expand_ratio": 0})
    for response in (sub_path, root):
        assert response.status_code == 422
        assert "nothing to expand" in response.json()["detail"][0]["msg"]


def test_unknown_acceleration_is_422(live_server: LiveServer) -> None:
    with live_server.client() as client:
        response = client.post(f"/queue/{APP}/depth", json={"prompt": "x", "video_url": VIDEO,
                                                            "acceleration": "turbo"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "acceleration"]
