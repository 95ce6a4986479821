"""Several machines (issue 16): two API replicas and two `vace worker` boxes with separate data folders,
sharing only PostgreSQL and an S3 bucket; one box is SIGKILLed mid-job (tests/services/multibox.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.services.multibox import LEASE_S, run_scenario
from tests.services.postgres import PostgresServer
from tests.services.s3 import S3Server


# A tiny 240p job takes 20-60 s on a free 2-core machine, minutes on a loaded one; three run in sequence.
@pytest.mark.timeout(1800)
def test_a_lost_box_loses_no_job_and_each_webhook_is_delivered_once(
        tmp_path: Path, postgres_server: PostgresServer, s3_server: S3Server) -> None:
    figures = run_scenario(tmp_path, postgres_server, s3_server, jobs=2, steps=2)
    print(f"multibox figures: {figures}")
    assert figures.kills == 1
    assert figures.completed_once == figures.jobs, "every job completed exactly once"
    assert figures.downloadable == figures.jobs, "every output downloadable through the API"
    assert figures.deliveries == dict.fromkeys(figures.deliveries, 1) and len(figures.deliveries) == 2
    assert figures.duplicate_deliveries == 0
    # The lease runs out 2 to LEASE_S s after the kill (heartbeats every 2 s renew it), and the survivor's
    # next heartbeat (2 s) requeues it: never at once (no process table to ask across boxes), and soon.
    assert 1.5 <= figures.requeued_s <= LEASE_S + 2 * 2.0 + 10.0, figures
    assert figures.restarted_s >= figures.requeued_s
    assert len(figures.health) == 2 and figures.health[figures.lost_node] == "lost", figures.health
    assert set(figures.health.values()) == {"lost", "ready"}, "/health reports every box's worker"
