"""The guarded run: before (pre-check), during (watch), after (report) a user's job.

``session.GuardedRun`` is the shared core of ``supervisorctl-mcp run -- CMD`` (``cli/guardian.py``)
and of ``mcp_supervisor.guard.guarded_run`` (a ``with`` block in a Python job). Modules:
``report`` (pure: the REPORT; ``timeline`` what happened, ``masking`` what may be shown,
``summary`` the terminal lines), ``precheck`` (ask the daemon, wait), ``watch`` (follow events),
``job`` (a child process group), ``store`` (save and send the report).

What it may import: it is the top layer (with ``cli`` and ``daemon``): ``api.client`` (the daemon,
over its socket), ``probes`` (``--standalone``), ``config``, ``health`` and ``cli.render``; never
``cli.main``. Nothing below the top layer imports it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_supervisor.guard.session import NotReady, guarded_run

__all__ = ["NotReady", "guarded_run"]


def __getattr__(name: str) -> Any:
    """``from mcp_supervisor.guard import guarded_run`` (for a Python job) without making every
    user of ``guard.report`` pay for importing the session and the client."""
    if name in __all__:
        from mcp_supervisor.guard import session

        return getattr(session, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
