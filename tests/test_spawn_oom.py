"""A managed server that allocates without bound under ``limits.memory``: the daemon sees the OOM.

A real daemon, a real cgroup, a real kernel OOM kill: ``status`` says out of memory with the
limit, the failure class is ``oom``, the record (history and report) counts it as such and the
server is restarted with backoff like any crash. The host is untouched: only the hog dies.
"""

from __future__ import annotations

import json
import os

import pytest

from mcp_supervisor.spawn import cgroups
from tests.live_daemon import api, wait_for
from tests.servers.fixtures import RUN_AS, free_port
from tests.test_lifecycle_e2e import Run, header, run  # noqa: F401  # the fixture

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(os.geteuid() != 0, reason="making cgroups needs a root daemon")]

HOG = "import time\nheap = []\nwhile True:\n    heap.append(bytearray(4 << 20))\n    time.sleep(0.01)\n"


def test_an_oom_kill_is_seen_counted_and_restarted_with_backoff(run: Run) -> None:  # noqa: F811
    if cgroups.support().hierarchy is None:
        pytest.skip(f"no usable cgroups here: {cgroups.support().problem}")
    script = run.dir / "hog.py"
    script.write_text(HOG)
    port = free_port()
    run.config.write_text(header(run) + f"""
[[servers]]
name = "hog"
transport = "http"
url = "http://127.0.0.1:{port}/mcp"
managed = true
{RUN_AS}
command = "/usr/bin/python3"
args = ["{script}"]
limits = {{ memory = "64M" }}
probe = {{ interval = "1s", timeout = "1s", start_period = "30s" }}
recovery = {{ backoff_initial = "1s", backoff_max = "4s", max_attempts = 100 }}
""")
    run.start()
    wait_for(lambda: run.up() and run.server("hog").get("restarts", 0) >= 2, 120, "two restarts after OOM kills")
    hog = run.server("hog")
    assert hog["last_exit"] == "killed by the kernel: out of memory (limit 64M)"
    assert run.proc is not None and run.proc.poll() is None, "the daemon itself is untouched"

    code, events = api(run.sock, "/v1/history?server=hog&limit=200")
    assert code == 200, events
    rows = events["events"] if isinstance(events, dict) else events
    details = [row["detail"] for row in rows]
    assert "process killed by the kernel: out of memory (limit 64M)" in details, details
    assert any("oom" in (row["detail"] or "").replace("out of memory", "") for row in rows
               if row["kind"] == "state"), details  # the failure class, not just the words
    restarts = [row for row in rows if row["kind"] == "action" and "restart" in row["detail"]]
    assert len(restarts) >= 2, details

    code, report = api(run.sock, "/v1/report")
    assert code == 200, report
    assert any(p["kind"] == "oom" and p["server"] == "hog" for p in report["patterns"]), report["patterns"]
    advice = json.dumps(report["recommendations"])
    assert "after OOM" in advice, advice
    log = run.log()
    assert "memory and task limits are not enforced" not in log
