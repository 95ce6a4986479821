"""`vace run`'s options, display and failures without a job (tests/server/test_ops_e2e.py runs real jobs)."""

from __future__ import annotations

import io

import pytest

from server.contract.endpoints import ENDPOINTS
from server.run_command import EXIT_NO_SERVER, EXIT_REFUSED, TASKS, Display, build_parser, main
from tests.server.conftest import free_port


def test_every_input_field_of_every_endpoint_is_an_option() -> None:
    for task, endpoint in TASKS.items():
        options = {a.dest for a in build_parser(task)._actions}
        assert set(endpoint.input_model.model_fields) <= options, task
    assert set(TASKS) == {"root", "depth", "pose", "inpainting", "outpainting", "reframe"}
    assert len(TASKS) == len(ENDPOINTS)


def test_short_names_repeats_booleans_and_types() -> None:
    args = build_parser("inpainting").parse_args([
        "--video", "in.mp4", "--mask-video", "m.mp4", "--prompt", "p", "--ref-image", "a.png",
        "--ref-image", "b.png", "--num-inference-steps", "12", "--guidance-scale", "4.5",
        "--no-enable-safety-checker", "--resolution", "240p"])
    assert args.video_url == "in.mp4" and args.mask_video_url == "m.mp4"
    assert args.ref_image_urls == ["a.png", "b.png"]
    assert args.num_inference_steps == 12 and args.guidance_scale == 4.5
    assert args.enable_safety_checker is False and args.resolution == "240p"
    assert args.seed is None  # unset fields are left to the server's defaults
    with pytest.raises(SystemExit):
        build_parser("depth").parse_args(["--prompt", "p", "--resolution", "1080p"])  # not a choice


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_redrawn_bar_other_streams_plain_lines() -> None:
    progress = {"phase": "denoise", "phase_label": "Denoising", "fraction": 0.5, "eta_seconds": 30,
                "step": 3, "steps": 6}
    running = {"status": "IN_PROGRESS", "progress": progress}
    for stream, redrawn in ((Terminal(), True), (io.StringIO(), False)):
        display = Display(stream)
        display.update({"status": "IN_QUEUE", "queue_position": 2})
        display.update(running)
        display.update(running)  # unchanged: not written again
        display.done()
        text = stream.getvalue()
        assert "queued, position 2" in text and "Denoising, step 3/6, ETA 30s, 50%" in text
        assert ("\r[" in text) is redrawn and ("#" * 15 in text) is redrawn
        assert text.count("Denoising") == 1


def test_no_server_is_exit_3_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["depth", "--server", f"http://127.0.0.1:{free_port()}", "--prompt", "p",
                 "--video", "https://example.com/v.mp4"])
    assert code == EXIT_NO_SERVER
    assert "cannot reach the server" in capsys.readouterr().err


def test_unknown_task_and_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sharpen"]) == EXIT_REFUSED
    assert "vace run {root,depth" in capsys.readouterr().err
    code = main(["depth", "--server", "http://127.0.0.1:9", "--prompt", "p", "--video", "/no/such.mp4"])
    assert code == EXIT_REFUSED and "no such file" in capsys.readouterr().err


def test_object_and_list_values_are_read_as_json_text_stays_text() -> None:
    from server.run_command import _json_or_text

    assert _json_or_text('{"a": [1, 2]}') == {"a": [1, 2]}
    assert _json_or_text("12") == 12
    assert _json_or_text("a cat") == "a cat"
