"""`bluegreen demo`: the README's main job, end to end, with its own scratch deployment and ports, run as a
user runs it: from the wheel installed with its extra (``pip install 'bluegreen[compose]'``) in a clean
virtual environment, with the system's PATH."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from tests.wheel import Installed


def test_the_demo_tells_the_whole_story_with_no_failed_request_and_no_row_lost(
        installed_with_compose: Installed, tmp_path: Path, docker_client: Any) -> None:
    proc = installed_with_compose.run("demo", "--json", cwd=tmp_path, timeout=600, env={"TMPDIR": str(tmp_path)})
    check_demo(proc, docker_client)


def check_demo(proc: subprocess.CompletedProcess[str], docker_client: Any) -> None:
    """What a successful ``bluegreen demo --json`` prints and leaves behind."""
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-3000:])
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["problems"] == [], doc
    assert (doc["failed_requests"], doc["rows_lost"]) == (0, 0), doc["failures"]
    assert doc["requests"] > 1000 and doc["rows_before"] > 0 and doc["rows_kept"] == doc["rows_before"]
    assert doc["schema_reverted"] is True
    # The compose example: a consumer per colour switched with the traffic; every job done exactly once.
    assert doc["jobs"] > 100 and (doc["jobs_failed"], doc["jobs_lost"], doc["jobs_done_twice"]) == (0, 0, 0), doc
    for key in ("rollback_ms", "failover_ms", "alert_rollback_ms", "drill_rto_ms"):
        assert isinstance(doc[key], float) and doc[key] > 0, key
    assert doc["backups_verified"] == doc["backups_total"] >= 2
    assert [(r["version"], r["status"]) for r in doc["releases"]] == [("v2", "promoted"), ("v3", "rolled_back")]
    assert any(r["kind"] == "rollback" and r["reason"].startswith("alert") for r in doc["rollbacks"])
    assert "a real Alertmanager" in doc["alert_delivery"]
    # Progress went to stderr as it happened; and it cleaned up after itself.
    assert "release v3" in proc.stderr and "killing the live colour" in proc.stderr
    assert not Path(doc["directory"]).exists()
    left = docker_client.containers.list(all=True, filters={"label": f"bluegreen.project={doc['project']}"})
    assert [c.name for c in left] == []
