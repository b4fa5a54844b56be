"""The session-preserving proxy: the daemon's own MCP endpoint per supervised server.

Why: a job that talks to a server process directly sees every failure of it (the in-flight call
fails, its session id becomes unknown to the new process). Through the proxy the job talks to the
daemon, which owns the backend session: a backend restart is a pause, safe calls are retried, an
unsafe call in flight gets an honest error, and the job's session id never changes.

Layout: ``core.py`` the sans-I/O session logic (a state machine fed by events, like
``health/machine.py``), ``safety.py`` which calls may be sent twice, ``wire.py`` pure JSON-RPC
and SSE helpers, ``links.py`` the backend transports (Streamable HTTP, legacy SSE, stdio),
``session.py`` the shell that drives a core over a link, ``server.py`` the loopback HTTP endpoint,
``token.py`` the bearer token file, ``bridge.py`` the stdio bridge of ``supervisorctl-mcp proxy``.

What it may import: config, events, health, probes, auth (the token owner's registry), spawn, runtime (the api/web layer); only
daemon.py and cli/ import it.
"""
