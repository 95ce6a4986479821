"""Input/output models and the endpoint table, checked against fal's `fal-ai/wan-vace-14b` endpoint page."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, ValidationError

from server.contract.endpoints import APP_ID, ENDPOINTS, Endpoint, parse_app_path, unsupported_reason
from server.contract.fields import DEFAULT_NEGATIVE_PROMPT
from server.contract.inputs import (
    WanVACEDepthRequest,
    WanVACEInpaintingRequest,
    WanVACEInput,
    WanVACEOutpaintingRequest,
    WanVACEPoseRequest,
    WanVACEReframeRequest,
    known_fields,
    task_of,
    unknown_fields,
)
from server.contract.outputs import (
    File,
    WanVACEDepthResponse,
    WanVACEInpaintingResponse,
    WanVACEOutpaintingResponse,
    WanVACEPoseResponse,
    WanVACEReframeResponse,
    WanVACEResponse,
)

# Copied from fal's pages on purpose (not imported), so a typo in the module cannot hide here: the seed
# page's default, and fal's current one (the same with three letterboxing terms in front).
SEED_NEGATIVE_PROMPT = (
    "bright colors, overexposed, static, blurred details, subtitles, style, artwork, painting, picture, "
    "still, overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, "
    "extra fingers, poorly drawn hands, poorly drawn faces, deformed, disfigured, malformed limbs, "
    "fused fingers, still picture, cluttered background, three legs, many people in the background, "
    "walking backwards"
)
FAL_NEGATIVE_PROMPT = "letterboxing, borders, black bars, " + SEED_NEGATIVE_PROMPT

VIDEO = "https://example.com/in.mp4"
MASK = "https://example.com/mask.mp4"

ALL_INPUTS: list[type[BaseModel]] = [
    WanVACEInput,
    WanVACEDepthRequest,
    WanVACEPoseRequest,
    WanVACEInpaintingRequest,
    WanVACEOutpaintingRequest,
    WanVACEReframeRequest,
]
PROMPT_REQUIRED = [m for m in ALL_INPUTS if m is not WanVACEReframeRequest]


def minimal(model: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid body for a model."""
    body: dict[str, Any] = {"prompt": "a horse", "video_url": VIDEO}
    if model is WanVACEInpaintingRequest:
        body["mask_video_url"] = MASK
    return body


def make(model: type[BaseModel], **fields: Any) -> Any:
    return model.model_validate(minimal(model) | fields)


def error_locs(exc: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [e["loc"] for e in exc.value.errors()]


# --- defaults ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_shared_defaults_match_fal(model: type[BaseModel]) -> None:
    m = make(model)
    is_reframe = model is WanVACEReframeRequest
    assert m.negative_prompt == FAL_NEGATIVE_PROMPT == DEFAULT_NEGATIVE_PROMPT
    assert m.match_input_num_frames is is_reframe
    assert m.num_frames == 81
    assert m.match_input_frames_per_second is is_reframe
    assert m.frames_per_second == 16
    assert m.seed is None
    assert m.resolution == "auto"
    assert m.aspect_ratio == "auto"
    assert m.num_inference_steps == 30
    assert m.guidance_scale == 5.0
    assert m.enable_safety_checker is False
    assert m.enable_prompt_expansion is False
    assert m.sampler == "unipc"
    assert m.shift == 5.0
    assert m.acceleration == "regular"
    assert (m.first_frame_url, m.last_frame_url, m.transparency_mode) == (None, None, "content_aware")
    assert (m.num_interpolated_frames, m.temporal_downsample_factor, m.interpolator_model) == (0, 0, "film")
    assert (m.enable_auto_downsample, m.auto_downsample_min_fps) == (False, 15.0)
    assert (m.video_quality, m.video_write_mode, m.sync_mode, m.return_frames_zip) == (
        "high", "balanced", False, False)


@pytest.mark.parametrize("model", [WanVACEInput, WanVACEDepthRequest, WanVACEPoseRequest,
                                   WanVACEInpaintingRequest])
def test_preprocess_defaults_to_false(model: type[BaseModel]) -> None:
    assert make(model).preprocess is False


def test_root_defaults() -> None:
    m = make(WanVACEInput)
    assert m.task == "depth"
    assert (m.mask_video_url, m.mask_image_url, m.ref_image_urls) == (None, None, None)
    assert (m.expand_left, m.expand_right, m.expand_top, m.expand_bottom) == (False,) * 4
    assert m.expand_ratio == 0.25
    assert (m.zoom_factor, m.temporal_downsample_factor, m.temporal_upsample_factor) == (0.0, 0, 0)
    assert m.trim_borders is True


def test_inpainting_defaults() -> None:
    m = make(WanVACEInpaintingRequest)
    assert (m.mask_video_url, m.mask_image_url, m.ref_image_urls) == (MASK, None, None)


def test_outpainting_defaults() -> None:
    m = make(WanVACEOutpaintingRequest)
    assert (m.expand_left, m.expand_right, m.expand_top, m.expand_bottom) == (False,) * 4
    assert m.expand_ratio == 0.25
    assert m.ref_image_urls is None


def test_reframe_defaults_differ_from_other_tasks() -> None:
    m = WanVACEReframeRequest.model_validate({"video_url": VIDEO})
    assert m.prompt == ""
    assert m.match_input_num_frames is True
    assert m.match_input_frames_per_second is True
    assert (m.zoom_factor, m.temporal_downsample_factor, m.temporal_upsample_factor) == (0.0, 0, 0)
    assert m.trim_borders is True


# Which task-specific fields each model has; the shared ones are checked by the defaults test.
TASK_FIELDS = {
    WanVACEInput: {
        "task", "mask_video_url", "mask_image_url", "ref_image_urls", "preprocess", "expand_left",
        "expand_right", "expand_top", "expand_bottom", "expand_ratio", "zoom_factor", "trim_borders",
        "temporal_upsample_factor", "paste_back",
    },
    WanVACEDepthRequest: {"preprocess", "ref_image_urls"},
    WanVACEPoseRequest: {"preprocess", "ref_image_urls"},
    WanVACEInpaintingRequest: {
        "mask_video_url", "mask_image_url", "ref_image_urls", "preprocess", "paste_back",
    },
    WanVACEOutpaintingRequest: {
        "ref_image_urls", "expand_left", "expand_right", "expand_top", "expand_bottom", "expand_ratio",
        "paste_back",
    },
    WanVACEReframeRequest: {"zoom_factor", "trim_borders", "temporal_upsample_factor", "paste_back"},
}  # fmt: skip
SHARED_FIELDS = set(WanVACEDepthRequest.model_fields) - {"preprocess", "ref_image_urls"}


def test_shared_fields_are_fals_current_ones() -> None:
    # docs/fal-current-schema.md: every field whose E column says "all".
    assert {
        "prompt", "negative_prompt", "num_frames", "frames_per_second", "match_input_num_frames",
        "match_input_frames_per_second", "resolution", "aspect_ratio", "num_inference_steps",
        "guidance_scale", "sampler", "shift", "seed", "video_url", "first_frame_url", "last_frame_url",
        "transparency_mode", "enable_safety_checker", "enable_prompt_expansion", "acceleration",
        "num_interpolated_frames", "temporal_downsample_factor", "enable_auto_downsample",
        "auto_downsample_min_fps", "interpolator_model", "video_quality", "video_write_mode", "sync_mode",
        "return_frames_zip",
    } == SHARED_FIELDS  # fmt: skip


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_each_model_has_exactly_its_fields(model: type[BaseModel]) -> None:
    assert set(model.model_fields) == SHARED_FIELDS | TASK_FIELDS[model]


# --- ranges ------------------------------------------------------------------------------------------------

RANGES = [
    # (model, field, rejected below, lowest, highest, rejected above)
    (WanVACEInput, "num_frames", 16, 17, 241, 242),
    (WanVACEInput, "frames_per_second", 4, 5, 30, 31),
    (WanVACEInput, "num_inference_steps", 1, 2, 50, 51),
    (WanVACEInput, "guidance_scale", 0.99, 1.0, 10.0, 10.01),
    (WanVACEInput, "shift", 0.99, 1.0, 15.0, 15.01),
    (WanVACEOutpaintingRequest, "expand_ratio", -0.01, 0.0, 1.0, 1.01),
    (WanVACEReframeRequest, "zoom_factor", -0.01, 0.0, 1.0, 1.01),
    (WanVACEDepthRequest, "temporal_downsample_factor", -1, 0, 5, 6),
    (WanVACEDepthRequest, "num_interpolated_frames", -1, 0, 5, 6),
    (WanVACEPoseRequest, "auto_downsample_min_fps", 0.99, 1.0, 60.0, 60.01),
    (WanVACEReframeRequest, "temporal_upsample_factor", -1, 0, 5, 6),
]


@pytest.mark.parametrize(
    ("model", "field", "below", "low", "high", "above"), RANGES, ids=[r[1] for r in RANGES]
)
def test_range_boundaries(
    model: type[BaseModel], field: str, below: Any, low: Any, high: Any, above: Any
) -> None:
    assert getattr(make(model, **{field: low}), field) == low
    assert getattr(make(model, **{field: high}), field) == high
    for bad in (below, above):
        with pytest.raises(ValidationError) as exc:
            make(model, **{field: bad})
        assert error_locs(exc) == [(field,)]


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_num_frames_range_applies_to_every_endpoint(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError):
        make(model, num_frames=242)


def test_seed_accepts_an_integer_and_null() -> None:
    assert make(WanVACEInput, seed=1234).seed == 1234
    assert make(WanVACEInput, seed=None).seed is None


# --- enums -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["auto", "240p", "360p", "480p", "580p", "720p"])
def test_resolution_accepts_fal_values_and_later_additions(value: str) -> None:
    assert make(WanVACEDepthRequest, resolution=value).resolution == value


@pytest.mark.parametrize(
    ("field", "bad"),
    [
        ("resolution", "1080p"),
        ("aspect_ratio", "4:3"),
        ("task", "segment"),
        ("interpolator_model", "linear"),
        ("sampler", "ddim"),
        ("acceleration", "warp-speed"),
        ("video_quality", "ultra"),
        ("video_write_mode", "slow"),
        ("transparency_mode", "gray"),
    ],
)
def test_enum_rejects_unknown_values(field: str, bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(WanVACEInput, **{field: bad})
    assert error_locs(exc) == [(field,)]


@pytest.mark.parametrize("value", ["auto", "16:9", "9:16", "1:1"])
def test_aspect_ratio_values(value: str) -> None:
    assert make(WanVACEInput, aspect_ratio=value).aspect_ratio == value


@pytest.mark.parametrize("task", ["depth", "pose", "inpainting", "outpainting", "reframe"])
def test_root_accepts_every_task(task: str) -> None:
    assert make(WanVACEInput, task=task).task == task


@pytest.mark.parametrize(
    ("field", "values"), [("interpolator_model", ["rife", "film"]), ("sampler", ["unipc", "dpm++", "euler"])]
)
def test_other_enum_values(field: str, values: list[str]) -> None:
    for value in values:
        assert getattr(make(WanVACEInput, **{field: value}), field) == value


# --- required fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", PROMPT_REQUIRED, ids=lambda m: m.__name__)
def test_prompt_is_required(model: type[BaseModel]) -> None:
    body = minimal(model)
    del body["prompt"]
    with pytest.raises(ValidationError) as exc:
        model.model_validate(body)
    assert error_locs(exc) == [("prompt",)]


@pytest.mark.parametrize("model", ALL_INPUTS[1:], ids=lambda m: m.__name__)
def test_video_url_is_required(model: type[BaseModel]) -> None:
    body = minimal(model)
    del body["video_url"]
    with pytest.raises(ValidationError) as exc:
        model.model_validate(body)
    assert error_locs(exc) == [("video_url",)]


@pytest.mark.parametrize("model", ALL_INPUTS[1:], ids=lambda m: m.__name__)
def test_null_video_url_is_rejected(model: type[BaseModel]) -> None:
    with pytest.raises(ValidationError):
        make(model, video_url=None)


@pytest.mark.parametrize("absent", [None, "", "  "])
def test_video_url_is_optional_on_the_root_only(absent: str | None) -> None:
    # fal's own example sends video_url "" on the root: reference-to-video there.
    assert make(WanVACEInput, video_url=absent).video_url is None
    assert WanVACEInput.model_validate({"prompt": "p"}).video_url is None


def test_inpainting_takes_either_mask_field() -> None:
    body = minimal(WanVACEInpaintingRequest)
    del body["mask_video_url"]
    assert WanVACEInpaintingRequest.model_validate(body | {"mask_image_url": MASK}).mask_video_url is None
    assert make(WanVACEInput, task="inpainting").mask_video_url is None


# --- URL fields --------------------------------------------------------------------------------------------

GOOD_URLS = [
    "http://example.com/v.mp4",
    "https://example.com/v.mp4?sig=1",
    "HTTPS://EXAMPLE.COM/V.MP4",
    "data:video/mp4;base64,AAAAIGZ0eXA=",
    "data:,hello",
]
BAD_URLS = [
    "",
    "   ",
    "ftp://example.com/v.mp4",
    "file:///etc/passwd",
    "example.com/v.mp4",
    "http://",
    "data:abc",
]


@pytest.mark.parametrize("url", GOOD_URLS)
def test_http_https_and_data_urls_are_accepted(url: str) -> None:
    assert make(WanVACEDepthRequest, video_url=url).video_url == url


def test_surrounding_whitespace_is_stripped() -> None:
    assert make(WanVACEDepthRequest, video_url=f"  {VIDEO}\n").video_url == VIDEO


@pytest.mark.parametrize("url", [u for u in BAD_URLS if u.strip()])  # "" in an optional field: not given
@pytest.mark.parametrize("field", ["video_url", "mask_video_url", "mask_image_url", "first_frame_url",
                                   "last_frame_url"])
def test_bad_urls_are_rejected_with_the_field_named(field: str, url: str) -> None:
    with pytest.raises(ValidationError) as exc:
        make(WanVACEInput, **{field: url})
    (error,) = exc.value.errors()
    assert error["loc"] == (field,)
    assert field in error["msg"]


def test_empty_video_url_message_is_clear() -> None:
    # Where video_url is required, "" is refused with a message that says so.
    with pytest.raises(ValidationError) as exc:
        make(WanVACEDepthRequest, video_url="")
    assert "video_url is empty" in exc.value.errors()[0]["msg"]


def test_bad_reference_image_url_is_located_by_index() -> None:
    with pytest.raises(ValidationError) as exc:
        make(WanVACEInpaintingRequest, ref_image_urls=["https://example.com/a.png", "ftp://b"])
    (error,) = exc.value.errors()
    assert error["loc"] == ("ref_image_urls", 1)
    assert "ref_image_urls" in error["msg"]


def test_reference_images_accept_urls_and_data_uris() -> None:
    urls = ["https://example.com/a.png", "data:image/png;base64,iVBORw0KGgo="]
    assert make(WanVACEOutpaintingRequest, ref_image_urls=urls).ref_image_urls == urls


def test_long_bad_url_is_not_echoed_whole_in_the_message() -> None:
    with pytest.raises(ValidationError) as exc:
        make(WanVACEInput, video_url="gopher://" + "x" * 10_000)
    assert len(exc.value.errors()[0]["msg"]) < 200


# --- extra fields ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_unknown_fields_are_accepted_named_and_never_stored(model: type[BaseModel]) -> None:
    m = make(model, not_a_field=1, another={"x": 1})
    assert unknown_fields(m) == ["another", "not_a_field"]
    assert "not_a_field" not in known_fields(m) and "another" not in known_fields(m)
    assert "additionalProperties" not in model.model_json_schema()


def test_fields_of_other_tasks_are_unknown_on_a_task_endpoint() -> None:
    m = make(WanVACEDepthRequest, task="reframe", zoom_factor=0.5, mask_video_url=MASK)
    assert unknown_fields(m) == ["mask_video_url", "task", "zoom_factor"]
    assert set(known_fields(m)) == set(WanVACEDepthRequest.model_fields)


# --- JSON schema -------------------------------------------------------------------------------------------

# fal's current full example, in its order (docs/fal-current-schema.md).
FAL_EXAMPLE = {
    "prompt": "...", "negative_prompt": FAL_NEGATIVE_PROMPT, "match_input_num_frames": False,
    "num_frames": 81,
    "match_input_frames_per_second": False, "frames_per_second": 16, "resolution": "auto",
    "aspect_ratio": "auto", "num_inference_steps": 30, "guidance_scale": 5, "video_url": "",
    "enable_safety_checker": True, "enable_prompt_expansion": False, "preprocess": False, "sampler": "unipc",
    "shift": 5, "ref_image_urls": [], "acceleration": "regular", "video_quality": "high",
    "video_write_mode": "balanced", "num_interpolated_frames": 0, "temporal_downsample_factor": 0,
    "enable_auto_downsample": False, "auto_downsample_min_fps": 15, "interpolator_model": "film",
    "sync_mode": False, "transparency_mode": "content_aware", "return_frames_zip": False, "task": "depth",
}  # fmt: skip


def test_fals_full_example_validates_on_the_root_with_every_field_known() -> None:
    m = WanVACEInput.model_validate(FAL_EXAMPLE)
    assert unknown_fields(m) == [] and m.video_url is None and m.resolution == "auto"


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_schema_has_fal_order_matching_properties(model: type[BaseModel]) -> None:
    schema = model.model_json_schema()
    order = schema["x-fal-order-properties"]
    assert order == list(schema["properties"])
    assert sorted(order) == sorted(model.model_fields)
    assert order[:2] == ["prompt", "negative_prompt"]


def test_root_order_follows_fals_example_then_additions() -> None:
    order = WanVACEInput.model_json_schema()["x-fal-order-properties"]
    in_example = [name for name in order if name in FAL_EXAMPLE]
    assert in_example == [name for name in FAL_EXAMPLE if name != "task"][:6] + ["task"] + [
        name for name in FAL_EXAMPLE if name != "task"][6:]
    assert order[-1] == "paste_back"  # this server's extension, after all of fal's fields


def test_outpainting_order_ends_with_expand_fields_before_additions() -> None:
    order = WanVACEOutpaintingRequest.model_json_schema()["x-fal-order-properties"]
    assert order[-6:] == ["expand_left", "expand_right", "expand_top", "expand_bottom", "expand_ratio",
                          "paste_back"]


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_schema_example_is_a_valid_request(model: type[BaseModel]) -> None:
    (example,) = model.model_json_schema()["examples"]
    assert set(example) <= set(model.model_fields)
    model.model_validate(example)


def test_root_example_is_fals_example() -> None:
    (example,) = WanVACEInput.model_json_schema()["examples"]
    assert example["prompt"].startswith("The video shows a man riding a horse on a vast grassland.")
    assert example["task"] == "depth" and example["guidance_scale"] == 5 and example["preprocess"] is False
    assert example["negative_prompt"] == FAL_NEGATIVE_PROMPT
    assert {k: v for k, v in example.items() if k not in ("prompt", "video_url")} == {
        k: v for k, v in FAL_EXAMPLE.items() if k not in ("prompt", "video_url")}


def test_schema_required_fields() -> None:
    assert sorted(WanVACEInput.model_json_schema()["required"]) == ["prompt"]
    assert sorted(WanVACEInpaintingRequest.model_json_schema()["required"]) == ["prompt", "video_url"]
    assert WanVACEReframeRequest.model_json_schema()["required"] == ["video_url"]


def test_schema_shows_enums_and_bounds_inline() -> None:
    props = WanVACEInput.model_json_schema()["properties"]
    assert props["task"]["enum"] == ["depth", "pose", "inpainting", "outpainting", "reframe"]
    assert props["task"]["default"] == "depth"
    assert props["resolution"]["enum"] == ["auto", "240p", "360p", "480p", "580p", "720p"]
    assert (props["num_frames"]["minimum"], props["num_frames"]["maximum"]) == (17, 241)
    assert props["negative_prompt"]["default"] == FAL_NEGATIVE_PROMPT
    assert props["prompt"]["description"] == "The text prompt to guide video generation."


def test_fastapi_openapi_keeps_fal_extensions() -> None:
    app = FastAPI()

    @app.post("/depth", response_model=WanVACEDepthResponse)
    def depth(body: WanVACEDepthRequest) -> Any:  # pragma: no cover - never called
        raise NotImplementedError

    schemas = app.openapi()["components"]["schemas"]
    assert schemas["WanVACEDepthRequest"]["x-fal-order-properties"][0] == "prompt"
    order = schemas["WanVACEDepthResponse"]["x-fal-order-properties"]
    assert order == ["video", "prompt", "seed", "frames_zip"]


# --- output models -----------------------------------------------------------------------------------------


def test_file_leaves_out_file_data_when_unset() -> None:
    f = File(url="https://example.com/out.mp4", content_type="video/mp4", file_name="out.mp4", file_size=12)
    assert f.model_dump() == {
        "url": "https://example.com/out.mp4",
        "content_type": "video/mp4",
        "file_name": "out.mp4",
        "file_size": 12,
    }
    assert "file_data" not in f.model_dump_json()
    assert File(url="u", file_data="AAAA").model_dump()["file_data"] == "AAAA"


def test_file_requires_url_only() -> None:
    with pytest.raises(ValidationError):
        File.model_validate({})
    assert File(url="u").content_type is None


RESPONSES = [
    WanVACEResponse,
    WanVACEDepthResponse,
    WanVACEPoseResponse,
    WanVACEInpaintingResponse,
    WanVACEOutpaintingResponse,
    WanVACEReframeResponse,
]


@pytest.mark.parametrize("model", RESPONSES, ids=lambda m: m.__name__)
def test_responses_share_one_shape(model: type[BaseModel]) -> None:
    body = {"video": {"url": "https://example.com/out.mp4"}, "prompt": "a horse", "seed": 42}
    out = model.model_validate(body)
    assert out.model_dump(exclude_none=True) == body
    schema = model.model_json_schema()
    assert sorted(schema["required"]) == ["prompt", "seed", "video"]
    with pytest.raises(ValidationError):
        model.model_validate({"video": body["video"], "prompt": "a horse"})


def test_task_responses_describe_their_video() -> None:
    assert WanVACEDepthResponse.model_fields["video"].description == "The generated depth video file."
    assert WanVACEReframeResponse.model_fields["video"].description == "The generated reframe video file."


# --- task_of -----------------------------------------------------------------------------------------------


def test_task_of_root_uses_the_payload() -> None:
    assert task_of(APP_ID, make(WanVACEInput)) == "depth"
    assert task_of(APP_ID, make(WanVACEInput, task="inpainting")) == "inpainting"


@pytest.mark.parametrize("endpoint_id", [e for e in ENDPOINTS if e != APP_ID])
def test_task_of_sub_path_wins(endpoint_id: str) -> None:
    endpoint = ENDPOINTS[endpoint_id]
    assert task_of(endpoint_id, make(endpoint.input_model)) == endpoint.task
    assert task_of(f"/{endpoint_id}/", make(endpoint.input_model)) == endpoint.task


def test_task_of_without_a_task_raises() -> None:
    with pytest.raises(ValueError, match="cannot tell the task"):
        task_of(APP_ID, make(WanVACEDepthRequest))


# --- endpoint table ----------------------------------------------------------------------------------------


def test_endpoint_table() -> None:
    assert APP_ID == "fal-ai/wan-vace-14b"
    expected = {
        APP_ID: (None, WanVACEInput, WanVACEResponse),
        f"{APP_ID}/depth": ("depth", WanVACEDepthRequest, WanVACEDepthResponse),
        f"{APP_ID}/pose": ("pose", WanVACEPoseRequest, WanVACEPoseResponse),
        f"{APP_ID}/inpainting": ("inpainting", WanVACEInpaintingRequest, WanVACEInpaintingResponse),
        f"{APP_ID}/outpainting": ("outpainting", WanVACEOutpaintingRequest, WanVACEOutpaintingResponse),
        f"{APP_ID}/reframe": ("reframe", WanVACEReframeRequest, WanVACEReframeResponse),
    }
    assert {k: (e.task, e.input_model, e.output_model) for k, e in ENDPOINTS.items()} == expected
    assert all(k == e.id for k, e in ENDPOINTS.items())


def test_endpoint_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ENDPOINTS[APP_ID].task = "depth"  # type: ignore[misc]
    assert isinstance(ENDPOINTS[APP_ID], Endpoint)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("fal-ai/wan-vace-14b", APP_ID),
        ("/fal-ai/wan-vace-14b", APP_ID),
        ("/fal-ai/wan-vace-14b/", APP_ID),
        ("fal-ai/wan-vace-14b/depth", f"{APP_ID}/depth"),
        ("/fal-ai/wan-vace-14b/pose/", f"{APP_ID}/pose"),
        ("fal-ai/wan-vace-14b/inpainting/", f"{APP_ID}/inpainting"),
        ("/fal-ai/wan-vace-14b/outpainting", f"{APP_ID}/outpainting"),
        ("fal-ai/wan-vace-14b/reframe", f"{APP_ID}/reframe"),
        ("", None),
        ("/", None),
        ("fal-ai", None),
        ("fal-ai/wan-vace-1.3b", None),
        ("fal-ai/wan-vace-14b/segment", None),
        ("fal-ai/wan-vace-14b/depth/extra", None),
        ("fal-ai/wan-vace-14b/requests/abc", None),
        ("workflows/fal-ai/wan-vace-14b", None),
        ("Fal-AI/Wan-VACE-14B", None),
        ("fal-ai//wan-vace-14b", None),
    ],
)
def test_parse_app_path(path: str, expected: str | None) -> None:
    assert parse_app_path(path) == expected


# --- unsupported_reason ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "task", "fields"),
    [
        (WanVACEDepthRequest, "depth", {}),
        (WanVACEPoseRequest, "pose", {}),
        (WanVACEInpaintingRequest, "inpainting", {}),
        (WanVACEInpaintingRequest, "inpainting", {"mask_image_url": MASK}),
        (WanVACEInput, "depth", {}),
        (WanVACEInput, "inpainting", {"task": "inpainting", "mask_video_url": MASK}),
        (WanVACEInput, "inpainting", {"task": "inpainting", "mask_image_url": MASK}),
        # fal's default is true; the worker runs the checker (or the operator's missing-weights policy).
        (WanVACEDepthRequest, "depth", {"enable_safety_checker": True}),
        (WanVACEDepthRequest, "depth", {"sampler": "unipc", "shift": None}),
        (WanVACEInpaintingRequest, "inpainting", {"ref_image_urls": ["https://example.com/a.png"]}),
        # Fields of other tasks at their defaults are not a request for them.
        (WanVACEInput, "pose", {"task": "pose", "expand_left": True}),
        # Fields of other tasks are ignored (each task reads only its own).
        (WanVACEInput, "depth", {"zoom_factor": 0.2}),
        (WanVACEOutpaintingRequest, "outpainting", {"expand_left": True}),
        (WanVACEInput, "outpainting", {"task": "outpainting", "expand_bottom": True, "expand_ratio": 1.0}),
        (WanVACEReframeRequest, "reframe", {}),
        (WanVACEReframeRequest, "reframe", {"zoom_factor": 1.0, "paste_back": True}),
        (WanVACEInput, "reframe", {"task": "reframe", "aspect_ratio": "9:16", "zoom_factor": 0.3}),
        (WanVACEDepthRequest, "depth", {"sampler": "euler"}),
        (WanVACEDepthRequest, "depth", {"sampler": "dpm++", "shift": 7.5}),
        (WanVACEInpaintingRequest, "inpainting", {"shift": 5.0, "paste_back": True}),
        # Annotators, prompt expansion and frame interpolation run in the worker.
        (WanVACEDepthRequest, "depth", {"preprocess": True}),
        (WanVACEPoseRequest, "pose", {"preprocess": True}),
        (WanVACEInput, "pose", {"task": "pose", "preprocess": True}),
        (WanVACEDepthRequest, "depth", {"enable_prompt_expansion": True}),
        (WanVACEInput, "depth", {"temporal_downsample_factor": 1}),
        (WanVACEReframeRequest, "reframe", {"temporal_downsample_factor": 2, "temporal_upsample_factor": 1,
                                            "interpolator_model": "film"}),
    ],
)
def test_supported_requests(model: type[BaseModel], task: str, fields: dict[str, Any]) -> None:
    assert unsupported_reason(task, make(model, **fields)) is None


@pytest.mark.parametrize(
    ("model", "task", "fields", "expected"),
    [
        (WanVACEInput, "inpainting", {"task": "inpainting"}, "without a mask"),
    ],
)
def test_unsupported_requests_get_a_clear_reason(
    model: type[BaseModel], task: str, fields: dict[str, Any], expected: str
) -> None:
    reason = unsupported_reason(task, make(model, **fields))
    assert reason is not None and expected in reason and "not supported yet" in reason


@pytest.mark.parametrize(
    ("model", "fields"),
    [
        (WanVACEOutpaintingRequest, {}),  # fal's defaults: every side off
        (WanVACEInput, {"task": "outpainting"}),
        (WanVACEOutpaintingRequest, {"expand_top": True, "expand_ratio": 0.0}),
    ],
)
def test_outpainting_with_nothing_to_expand_is_refused(
    model: type[BaseModel], fields: dict[str, Any]
) -> None:
    reason = unsupported_reason("outpainting", make(model, **fields))
    assert reason is not None and "nothing to expand" in reason and "expand_left" in reason


def test_paste_back_is_our_extension_default_off() -> None:
    for model in (WanVACEInput, WanVACEInpaintingRequest, WanVACEOutpaintingRequest, WanVACEReframeRequest):
        assert make(model).paste_back is False
        assert "Extension of this server" in model.model_fields["paste_back"].description
    assert "paste_back" not in WanVACEDepthRequest.model_fields


# --- acceleration (fal's current schema: none | low | regular, default regular, on every endpoint) ---------


@pytest.mark.parametrize("model", ALL_INPUTS, ids=lambda m: m.__name__)
def test_acceleration_defaults_to_regular_and_takes_fals_values(model: type[BaseModel]) -> None:
    assert make(model).acceleration == "regular"
    assert [make(model, acceleration=v).acceleration for v in ("none", "low", "regular")] == [
        "none", "low", "regular"]
    assert model.model_json_schema()["properties"]["acceleration"]["enum"] == ["none", "low", "regular"]
    with pytest.raises(ValidationError) as exc:
        make(model, acceleration="high")
    assert error_locs(exc) == [("acceleration",)]
