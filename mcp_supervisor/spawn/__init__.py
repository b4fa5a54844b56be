"""The one way a child process starts: least-privileged, bounded, on record, swept afterwards.

What it is for: every process the daemon starts (stdio probes, warm stdio instances, managed
servers, the proxy's stdio backends and standbys) goes through ``spawn()``, so the rules live in
one place: the server's ``user``/``group`` (setgroups to that user's groups, never root's; under a
root daemon ``nobody`` unless ``user`` is written), a new process group, the clean environment
(never the daemon's), ``cwd``, ``umask 077``, the server's ``limits`` (cgroup memory/pids,
``RLIMIT_NOFILE``), the orphan record while it runs, and a sweep of the group after it exits.
An OOM kill inside the server's cgroup is read back and reported in ``ExitInfo``.

What it may import: ``config``, ``events``, ``logging``, ``redact`` and the standard library,
psutil and anyio; never ``runtime``, ``probes``, ``api`` or anything above them.

INTERFACE (fixed before the work was split; issue 15 implements it, the proxy uses it):

    spec = spec_for_server(server, state_dir=..., role="probe" | "warm" | "managed" | "backend" | "standby")
        -> SpawnSpec, or raises SpawnRefused(message naming the field and the fix)
    child = await spawn(spec, stdio=True)          -> Child (pid, pgid, stdin/stdout/stderr pipes)
    info  = await child.wait()                     -> ExitInfo (returncode, signal, oom, text)
    info  = await child.stop(grace=...)            -> stop_signal, then KILL of the group; swept
    async with stdio_transport(spec) as (read_stream, write_stream, child):
        # anyio memory streams of mcp.shared.message.SessionMessage, exactly what
        # mcp.client.stdio.stdio_client yields, so ClientSession (probes) or the proxy's raw
        # JSON-RPC forwarding sits on top; on exit the child is stopped and its group swept.

Modules: ``spec`` (SpawnSpec, spec_for_server, SpawnRefused, check-config's root warning),
``identity`` (user/group, the clean environment), ``home`` (HOME and the state directory's
modes), ``access`` (can that account execute the command: the refusal text), ``cgroups``
(memory/pids limits, OOM read-back), ``child`` (spawn, Child, ExitInfo), ``stdio`` (the MCP
transport), ``sweep`` (a process group's leftovers), ``records`` + ``procfs`` (orphan records).


Why the names load lazily: ``spawn.procfs`` is the one ``/proc`` reader, also for ``guard/``
(``supervisorctl-mcp run``), whose start-up budget cannot pay for the MCP SDK that ``stdio``
imports; a submodule import runs this file first, so it imports nothing until a name is used.
"""

import importlib

TYPE_CHECKING = False  # not ``typing.TYPE_CHECKING``: importing this package stays cheap
if TYPE_CHECKING:
    from mcp_supervisor.spawn.child import Child, ExitInfo, exit_text, spawn
    from mcp_supervisor.spawn.spec import Role, SpawnRefused, SpawnSpec, root_warning, spec_for_server
    from mcp_supervisor.spawn.stdio import stdio_transport

_HOME = {
    "Child": "child",
    "ExitInfo": "child",
    "exit_text": "child",
    "spawn": "child",
    "Role": "spec",
    "SpawnRefused": "spec",
    "SpawnSpec": "spec",
    "root_warning": "spec",
    "spec_for_server": "spec",
    "stdio_transport": "stdio",
}
"""Each exported name -> the submodule that defines it."""


def __getattr__(name: str) -> object:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Child",
    "ExitInfo",
    "Role",
    "SpawnRefused",
    "SpawnSpec",
    "exit_text",
    "root_warning",
    "spawn",
    "spec_for_server",
    "stdio_transport",
]
