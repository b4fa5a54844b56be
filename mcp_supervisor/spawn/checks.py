"""``check-config``'s questions about spawned servers, answered without starting anything.

Per server the supervisor starts (stdio, managed): would a root daemon run it as root (a warning:
third-party code with every privilege), and can its account run its command at all (the same
refusal ``status`` and the event would show, found before the daemon starts).
"""

from __future__ import annotations

import os

from mcp_supervisor.config import Config
from mcp_supervisor.spawn.spec import SpawnRefused, root_warning, spec_for_server


def spawn_warnings(config: Config) -> list[str]:
    """One line per problem, naming the server, the field and the fix."""
    out: list[str] = []
    for server in config.servers:
        if not server.spawned or server.container or server.config_problem or server.missing_env:
            continue
        warning = root_warning(server)
        if warning:
            out.append(warning)
        if os.geteuid() != 0 and server.user is not None:
            continue  # checked by a user for a root daemon: only root can judge another account
        try:
            spec_for_server(server, state_dir=config.state_dir, role="probe", create_home=False)
        except SpawnRefused as exc:
            out.append(str(exc))
    return out
