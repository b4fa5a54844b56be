"""What a person must do, in one sentence with the exact names. Pure: config values in, text out.

Why here and not in the health machine: the machine knows the failure, the config knows the
token's variable, the secret file and the config path. "Needs a human" is useless without
"renew the token in JIRA_TOKEN, then run supervisorctl-mcp recover jira". Only names of
variables, headers and files appear, never a value.
"""

from __future__ import annotations

from pathlib import Path

from mcp_supervisor.config import Config, ServerConfig
from mcp_supervisor.notify.incidents import Notification


def instruction_for(n: Notification, config: Config) -> str:
    server = _server(config, n.server)
    name = n.server or "?"
    recover = f"supervisorctl-mcp recover {name}"
    source = str(config.source) if config.source else "the supervisor's config file"
    if n.kind == "needs_human":
        if server is not None and server.missing_env:
            names = ", ".join(server.missing_env)
            return (f"set {names} in the supervisor's environment (systemd: Environment= or EnvironmentFile=; "
                    f"or a ${{file:...}} reference in {source}), then run `supervisorctl-mcp reload`")
        if n.data.get("failure_class") == "auth" and server is not None and server.auth is not None:
            return _oauth_fix(server)
        if n.data.get("failure_class") == "auth" and server is not None:
            where = _token_place(server)
            return (f"renew the token in {where}, then run `supervisorctl-mcp reload` and `{recover}` "
                    "(or wait: the next successful probe heals it)")
        if n.data.get("failure_class") == "config":
            return (f"fix the `command`, `args`, `cwd` or `url` of server {name} in {source}, "
                    f"then run `supervisorctl-mcp reload` and `{recover}`")
        logs = Path(config.state_dir) / "logs" / f"{name}.log"
        return (f"recovery attempts are used up: look at `supervisorctl-mcp status` and the server's log ({logs}), "
                f"fix the cause, then run `{recover}`")
    if n.kind == "fallback":
        return (f"the job must use the service's API directly until {name} is back; it heals by itself at the next "
                f"successful probe, or retry now with `{recover}` (`supervisorctl-mcp resume {name}` ends a forced "
                "emergency mode)")
    if n.kind == "token_expiry" and server is not None and server.auth is not None:
        return _oauth_fix(server)
    if n.kind == "token_expiry" and server is not None:
        return f"renew the token in {_token_place(server)}, then run `supervisorctl-mcp reload`"
    if n.kind == "flapping":
        return (f"the server keeps failing soon after it comes back; look at its log "
                f"({Path(config.state_dir) / 'logs' / (name + '.log')}) and `supervisorctl-mcp status`; "
                f"`supervisorctl-mcp pause {name}` stops the restarts while you look")
    if n.kind == "backup_failed":
        return ("check the failed backup locations (mounted? writable? disk full?), then run "
                "`supervisorctl-mcp backup` and `supervisorctl-mcp verify`")
    if n.kind == "restore_failed":
        config_name = n.data.get("config", "?")
        return (f"no valid backup of {config_name} exists: fix the file by hand, or pick a snapshot with "
                f"`supervisorctl-mcp backups` and `supervisorctl-mcp restore {config_name} --snapshot ID`")
    return ""


def _server(config: Config, name: str | None) -> ServerConfig | None:
    if not name:
        return None
    for server in config.servers:
        if server.name == name:
            return server
    return None


def _token_place(server: ServerConfig) -> str:
    if server.token_env:
        return f"the environment variable {server.token_env}"
    for header in server.headers:
        if header.lower() == "authorization":
            return f"the {header} header of server {server.name} (the variable or ${{file:...}} it references)"
    if server.env:
        return f"the server's env ({', '.join(sorted(server.env))})"
    return f"the credentials of server {server.name}"


def _oauth_fix(server: ServerConfig) -> str:
    """An OAuth server's token is the daemon's: a person signs in again (person grants) or fixes
    the client (machine grants); never "renew the token" by hand."""
    assert server.auth is not None
    if server.auth.machine:
        return (f"check auth.client_id of server {server.name} and the secret or key it points to (is the client still "
                "enabled at the authorization server?), then run `supervisorctl-mcp reload`")
    return (f"run `supervisorctl-mcp login {server.name}` (as the daemon's user or root); the daemon takes the new "
            "grant by itself, no restart")
