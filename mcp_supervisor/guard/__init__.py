"""The guarded run: before (pre-check), during (watch), after (report) a user's job.

``session.GuardedRun`` is the shared core of ``supervisorctl-mcp run -- CMD`` (``cli/guardian.py``)
and of ``mcp_supervisor.api.client.guarded_run`` (a ``with`` block in a Python job). Modules:
``report`` (pure: the REPORT), ``precheck`` (ask the daemon, wait), ``watch`` (follow events),
``job`` (a child process group), ``store`` (save and send the report).
"""
