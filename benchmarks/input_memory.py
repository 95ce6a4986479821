"""Worker peak memory while it prepares a job's inputs (issue 11 item 1): fetch, probe, decode, fit.

Each case runs `server/worker/inputs.py`'s `fit_input` on synthetic media in a fresh process and prints that
process's peak RSS before and after (the baseline is the imports: torch, PyAV, OpenCV...), the time taken, and
what came out. The clips are made here with PyAV, frame by frame.

    python -m benchmarks.input_memory [--cases issue,hd,refs] [--keep DIR]
    # the same script against another checkout (e.g. main before the fix), from that checkout's root:
    cd /work/main && PYTHONPATH=$PWD python /path/to/benchmarks/input_memory.py

Cases:
- issue: the issue's 2 MB clip: 640x360, 600 fps, 3000 frames, `frames_per_second: 5`, 81 frames, 480p.
  600 fps is refused by default now (`--max-input-fps`, 240); the case raises the cap to 600 so the decode
  path itself is measured, and `issue-default` shows the refusal.
- hd: 1920x1080 at 30 fps, 160 frames, `frames_per_second: 16`, 81 frames, 480p (shrunk as decoded).
- refs: eight references to one 4096x4096 PNG, 480p.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CASES = ("issue", "issue-default", "hd", "refs")


def encode_moving_bar(path: Path, rate: Fraction, count: int, width: int, height: int) -> None:
    """`count` distinct frames (a bar moving over a gradient), encoded one at a time: never all in memory."""
    import av
    import numpy as np

    x = np.linspace(0, 200, width, dtype=np.float32)
    base = np.broadcast_to(x[None, :, None], (height, width, 3)).astype(np.uint8)
    bar = max(1, width // 20)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(count):
            rgb = base.copy()
            left = (i * 3) % (width - bar)
            rgb[:, left:left + bar] = 255
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def make_media(folder: Path) -> None:
    from PIL import Image

    if not (folder / "issue.mp4").exists():
        encode_moving_bar(folder / "issue.mp4", Fraction(600), 3000, 640, 360)
    if not (folder / "hd.mp4").exists():
        encode_moving_bar(folder / "hd.mp4", Fraction(30), 160, 1920, 1080)
    if not (folder / "ref.png").exists():
        Image.new("RGB", (4096, 4096), (200, 40, 40)).save(folder / "ref.png")
    if not (folder / "small.mp4").exists():
        encode_moving_bar(folder / "small.mp4", Fraction(16), 81, 640, 360)


def _uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(case: str, folder: Path) -> dict[str, Any]:
    """One case in this process; returns the figures."""
    from server.contract.errors import InputError
    from server.contract.inputs import WanVACEInput
    from server.contract.limits import InputLimits
    from server.files.local import LocalFileStore
    from server.worker.fetch import Fetcher
    from server.worker.inputs import InputReader, fit_input
    from server.worker.tasks import plan_for

    video = {"issue": "issue.mp4", "issue-default": "issue.mp4", "hd": "hd.mp4", "refs": "small.mp4"}[case]
    payload: dict[str, Any] = {"prompt": "x", "video_url": _uri(folder / video, "video/mp4"),
                               "resolution": "480p", "num_frames": 81,
                               "frames_per_second": {"hd": 16, "refs": 16}.get(case, 5)}
    if case == "refs":
        payload["ref_image_urls"] = [_uri(folder / "ref.png", "image/png")] * 8
    request = WanVACEInput.model_validate(payload)
    limit_names = {f.name for f in dataclasses.fields(InputLimits)}
    # The clip is 600 fps: raise the rate cap (where there is one) to measure decoding itself.
    limits = InputLimits(max_fps=600.0) if case == "issue" and "max_fps" in limit_names else InputLimits()
    work = Path(tempfile.mkdtemp(prefix="input-memory-"))
    reader = InputReader(Fetcher(LocalFileStore(work / "files"), work, 2 << 30, 60.0), limits, work / "job")
    baseline = _peak_mib()
    started = time.monotonic()
    try:
        fitted = fit_input(reader, request, plan_for("depth"))
        outcome = f"frames {tuple(fitted.frames.shape)}, references {[r.shape for r in fitted.references]}"
    except InputError as exc:
        outcome = f"422 {exc.error_type} on {exc.field}: {exc.message}"
    took = time.monotonic() - started
    peak = _peak_mib()
    return {"case": case, "baseline_mib": round(baseline), "peak_mib": round(peak),
            "growth_mib": round(peak - baseline), "seconds": round(took, 2), "outcome": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--keep", type=Path, help="make (or reuse) the media in this folder")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.gettempdir()) / "vace-input-memory-media"
    if args.child:
        print(json.dumps(child(args.child, folder)))
        return
    folder.mkdir(parents=True, exist_ok=True)
    make_media(folder)
    print(f"code under test: {_code_root()}")
    print(f"{'case':<14} {'baseline':>9} {'peak':>8} {'growth':>8} {'seconds':>8}  outcome")
    for case in args.cases.split(","):
        out = subprocess.run([sys.executable, __file__, "--child", case, "--keep", str(folder)],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            print(f"{case:<14} failed (exit {out.returncode}): {out.stderr.strip().splitlines()[-1:]}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['case']:<14} {r['baseline_mib']:>6} MiB {r['peak_mib']:>5} MiB {r['growth_mib']:>5} MiB "
              f"{r['seconds']:>8}  {r['outcome'][:150]}")


def _code_root() -> str:
    import server

    return str(Path(server.__file__).resolve().parent.parent)


if __name__ == "__main__":
    main()
