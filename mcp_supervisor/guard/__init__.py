"""The guarded run: before (pre-check), during (watch), after (report) a user's job.

``session.GuardedRun`` is the shared core of ``supervisorctl-mcp run -- CMD`` (``cli/guardian.py``)
and of ``mcp_supervisor.api.client.guarded_run`` (a ``with`` block in a Python job). Modules:
``report`` (pure: the REPORT; ``timeline`` what happened, ``masking`` what may be shown,
``summary`` the terminal lines), ``precheck`` (ask the daemon, wait), ``watch`` (follow events),
``job`` (a child process group), ``store`` (save and send the report).

What it may import: it is the top layer (with ``cli`` and ``daemon``): ``api.client`` (the daemon,
over its socket), ``probes`` (``--standalone``), ``config``, ``health`` and ``cli.render``; never
``cli.main``. Nothing below the top layer imports it.
"""
