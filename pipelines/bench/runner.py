"""Run benchmark phases under a time budget, recording every outcome in one JSON file.

Torch-free, so the budget and failure rules are tested directly (tests/pipelines/test_bench.py).
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OK, SKIPPED, ERROR = "ok", "skipped", "error"


@dataclass(frozen=True)
class Phase:
    name: str
    estimate_s: float  # on an H100 80GB, from benchmarks/results/gpu_check_h100-80gb-hbm3_2026-11-26.json
    run: Callable[[], dict[str, Any]]
    requires: tuple[str, ...] = ()  # phases that must have succeeded first (e.g. the model build)
    unavailable: str | None = None  # a reason known before running (a backend not installed)


@dataclass
class Runner:
    """Runs phases in order; `record` is the whole result, written to `path` after every phase."""

    path: Path
    budget_s: float
    started: float  # time.monotonic() when the process started
    record: dict[str, Any]
    cleanup: Callable[[], None] = lambda: None  # frees GPU memory between phases
    log: Callable[[str], None] = print
    after_phase: Callable[[dict[str, Any]], None] = lambda record: None  # derived figures, before each save
    only: tuple[str, ...] = ()
    skip: tuple[str, ...] = ()
    clock: Callable[[], float] = time.monotonic
    _phases: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self._phases = self.record.setdefault("phases", {})
        self.record["budget_s"] = self.budget_s

    def elapsed(self) -> float:
        return self.clock() - self.started

    def status(self, name: str) -> str | None:
        return self._phases.get(name, {}).get("status")

    def results(self, name: str) -> dict[str, Any]:
        return self._phases.get(name, {}).get("results", {})

    def run(self, phase: Phase) -> None:
        entry: dict[str, Any] = {"estimate_s": phase.estimate_s}
        self._phases[phase.name] = entry
        reason = self._skip_reason(phase)
        if reason:
            entry.update(status=SKIPPED, reason=reason)
            self.log(f"[{self.elapsed():6.1f}s] SKIP {phase.name}: {reason}")
            self.save()
            return
        self.log(f"[{self.elapsed():6.1f}s] --- {phase.name} (estimate {phase.estimate_s:.0f}s)")
        begin = self.clock()
        try:
            entry["results"] = phase.run()
            entry["status"] = OK
        except Exception as exc:  # noqa: BLE001 - one failed phase (OOM included) must not stop the others
            entry.update(status=ERROR, error=f"{type(exc).__name__}: {exc}"[:1000],
                         traceback=traceback.format_exc(limit=4)[-2000:])
            self.log(f"[{self.elapsed():6.1f}s] ERROR {phase.name}: {type(exc).__name__}: {exc}"[:400])
        entry["wall_s"] = round(self.clock() - begin, 2)
        try:
            self.cleanup()
        except Exception as exc:  # noqa: BLE001
            entry["cleanup_error"] = f"{type(exc).__name__}: {exc}"[:300]
        if entry["status"] == OK:
            self.log(f"[{self.elapsed():6.1f}s] {phase.name}: {_short(entry['results'])}")
        self.save()

    def _skip_reason(self, phase: Phase) -> str | None:
        if self.only and not phase.name.startswith(self.only):
            return "not selected (--only)"
        if self.skip and phase.name.startswith(self.skip):
            return "skipped on request (--skip)"
        if phase.unavailable:
            return phase.unavailable
        for needed in phase.requires:
            if self.status(needed) != OK:
                return f"needs phase {needed}, which did not succeed ({self.status(needed) or 'not run'})"
        if self.elapsed() + phase.estimate_s > self.budget_s:
            return (f"budget: {self.elapsed():.0f}s elapsed + {phase.estimate_s:.0f}s estimate > "
                    f"{self.budget_s:.0f}s")
        return None

    def save(self) -> None:
        """Rewrite the JSON atomically, so a run killed mid-phase leaves the last complete record."""
        self.after_phase(self.record)
        self.record["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(_finite(self.record), indent=1, default=str) + "\n")
        os.replace(tmp, self.path)


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such figures are written as null (and never hide as a number)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _short(results: dict[str, Any], limit: int = 400) -> str:
    return json.dumps(results, default=str)[:limit]
