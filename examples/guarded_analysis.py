#!/usr/bin/env python3
"""A daily job that guards itself, as a user's script would (instead of `supervisorctl-mcp run`).

    python examples/guarded_analysis.py

Before the block: the supervisor probes every server now, recovers what it can and waits up to
300 s for the critical ones; a fresh backup of the watched configs is taken. In the block: servers
that fail are recovered at once and recorded against this run. After it: a run report is stored
(``<state_dir>/runs/<run id>.json`` and the supervisor's record) and sent to Slack if configured.
"""

from __future__ import annotations

import sys

from mcp_supervisor.guard import NotReady, guarded_run


def analyse(use_jira_api_directly: bool) -> None:
    source = "the Jira REST API" if use_jira_api_directly else "the Jira MCP server"
    print(f"analysing today's tickets through {source}")


def main() -> int:
    try:
        with guarded_run(require=["jira"], wait=300, allow_fallback=True) as run:
            analyse(use_jira_api_directly="jira" in run.fallback)
    except NotReady as exc:  # 75: servers not ready (and no fallback), 3: no supervisor
        print(f"not started: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"run {run.run_id}: report in {run.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
