"""Read the MCP clients' own config files into server descriptions (pure: text in, data out).

Why a separate, pure module: the formats differ in small ways that matter (VS Code's ``servers``
with ``type`` and ``inputs``, Windsurf's ``serverUrl``, Claude Code's per-project maps, each
client's variable syntax), and every one of them is tested from text alone. Discovery of the files
and writing the TOML are the shell's job (``importer/discover.py``, ``cli/import_commands.py``).

Secrets never leave the client file: a literal token found in ``env``, ``headers``, a URL or an
argument becomes a ``${VAR}`` reference and the import reports which variable to set.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import json5

CLIENTS = ("cursor", "claude-desktop", "claude-code", "mcp-json", "vscode", "windsurf")

_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")
_SECRET_NAME = re.compile(
    r"(?i)(token|secret|passw|pwd|api[_-]?key|apikey|auth|credential|private[_-]?key|access[_-]?key|"
    r"client[_-]?secret|bearer|cookie|session|\bpat\b|_pat$|^pat_)"
)
# Well-known token shapes, flagged whatever the field is called.
_SECRET_VALUE = re.compile(
    r"^(ghp_|gho_|ghs_|ghu_|github_pat_|glpat-|xox[abposr]-|sk-|sk_live_|rk_live_|AKIA|AIza|ATATT|"
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ)"
)
_REFERENCE = re.compile(r"\$\{(env:|input:)?([^}]*)\}")
_SECRET_FLAG = re.compile(r"^--?([A-Za-z0-9_-]+)(=(.*))?$")


class ClientConfigError(Exception):
    """A client config that cannot be imported: the message names the file and the reason."""


@dataclass(frozen=True)
class ImportedServer:
    name: str
    transport: str  # stdio | http | sse
    source: Path
    command: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    url: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    cwd: str | None = None
    project: str | None = None
    """Claude Code: the project path whose ``mcpServers`` held it (None for the user-level map)."""


@dataclass(frozen=True)
class SecretReference:
    variable: str
    where: str
    """e.g. ``~/.cursor/mcp.json: server 'jira', env JIRA_API_TOKEN``: never the value."""


@dataclass
class ImportResult:
    client: str
    path: Path
    servers: list[ImportedServer] = field(default_factory=list)
    secrets: list[SecretReference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def detect_client(path: Path, data: Any = None) -> str:
    """Which client wrote this file, from its name and place (content as the tie-breaker)."""
    name, parent = path.name, path.parent.name
    if name == "claude_desktop_config.json":
        return "claude-desktop"
    if name == ".claude.json":
        return "claude-code"
    if name == "mcp_config.json" and parent == "windsurf":
        return "windsurf"
    if name == "mcp.json" and parent == ".vscode":
        return "vscode"
    if name == "mcp.json" and parent == ".cursor":
        return "cursor"
    if name == ".mcp.json":
        return "mcp-json"
    if isinstance(data, dict) and "servers" in data and "mcpServers" not in data:
        return "vscode"
    return "mcp-json"


def parse_client_config(
    text: str,
    path: Path,
    client: str | None = None,
    used_variables: dict[str, str] | None = None,
    *,
    lift_secrets: bool = True,
) -> ImportResult:
    """Parse one client file; raise ``ClientConfigError`` naming the file and what is wrong.

    ``used_variables`` is shared across the files of one import, so two servers holding different
    literal tokens under the same name get different variables.
    """
    try:
        data = json5.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ClientConfigError(f"{path}: not valid JSON/JSONC: {exc}") from None
    if not isinstance(data, dict):
        raise ClientConfigError(f"{path}: expected a JSON object at the top level, found {type(data).__name__}")
    client = client or detect_client(path, data)
    result = ImportResult(client=client, path=path)
    context = _Context(path=path, result=result, inputs=_inputs(data, path) if client == "vscode" else {},
                       used_variables=used_variables if used_variables is not None else {},
                       lift_secrets=lift_secrets)
    if client == "vscode":
        servers = data.get("servers", data.get("mcpServers", {}))
        _read_map(servers, "servers", context, project=None)
        if "envFile" in json.dumps(servers):
            result.notes.append(f"{path}: 'envFile' is not read by the import; add that file as a [[configs]] "
                                "dotenv entry and reference its variables as ${NAME}")
    else:
        _read_map(data.get("mcpServers", {}), "mcpServers", context, project=None)
    if client == "claude-code":
        projects = data.get("projects", {})
        if not isinstance(projects, dict):
            raise ClientConfigError(f"{path}: 'projects' must be an object of project paths")
        for project_path, project in sorted(projects.items()):
            if isinstance(project, dict) and project.get("mcpServers"):
                _read_map(project["mcpServers"], f"projects[{project_path!r}].mcpServers", context,
                          project=str(project_path))
    return result


@dataclass
class _Context:
    path: Path
    result: ImportResult
    inputs: dict[str, str]
    used_variables: dict[str, str] = field(default_factory=dict)
    """variable -> where it was first used (a second literal of the same name gets a prefixed name)."""
    lift_secrets: bool = True
    """False when following a client file at run time: the values stay in memory, never written."""


def _inputs(data: dict[str, Any], path: Path) -> dict[str, str]:
    inputs = data.get("inputs", [])
    if not isinstance(inputs, list):
        raise ClientConfigError(f"{path}: 'inputs' must be a list")
    found: dict[str, str] = {}
    for item in inputs:
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            found[item["id"]] = str(item.get("description", ""))
    return found


def _read_map(servers: Any, key: str, ctx: _Context, project: str | None) -> None:
    if not isinstance(servers, dict):
        raise ClientConfigError(f"{ctx.path}: '{key}' must be an object of servers, found {type(servers).__name__}")
    for raw_name, entry in servers.items():
        if not isinstance(entry, dict):
            raise ClientConfigError(f"{ctx.path}: {key}.{raw_name} must be an object")
        ctx.result.servers.append(_server(str(raw_name), entry, f"{key}.{raw_name}", ctx, project))


def _server(raw_name: str, entry: dict[str, Any], where: str, ctx: _Context, project: str | None) -> ImportedServer:
    name = _NAME_OK.sub("-", raw_name).strip("-")[:64] or "server"
    kind = str(entry.get("type", entry.get("transport", ""))).lower()
    url = entry.get("url", entry.get("serverUrl"))
    command = entry.get("command")
    label = f"{_short(ctx.path)}: server '{raw_name}'"
    if url is not None and not isinstance(url, str):
        raise ClientConfigError(f"{ctx.path}: {where}.url must be a string")
    if command is not None and not isinstance(command, str):
        raise ClientConfigError(f"{ctx.path}: {where}.command must be a string")
    if kind in ("", "stdio") and command:
        transport = "stdio"
    elif url:
        transport = "sse" if kind == "sse" or (not kind and urlsplit(url).path.rstrip("/").endswith("/sse")) else "http"
    else:
        raise ClientConfigError(f"{ctx.path}: {where} has neither 'command' (stdio) nor 'url' (http/sse)")
    args = entry.get("args", [])
    env = entry.get("env", {})
    headers = entry.get("headers", {})
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise ClientConfigError(f"{ctx.path}: {where}.args must be a list of strings")
    for label_key, value in (("env", env), ("headers", headers)):
        if not isinstance(value, dict):
            raise ClientConfigError(f"{ctx.path}: {where}.{label_key} must be an object of strings")
    workspace = str(ctx.path.parent.parent) if ctx.result.client in ("vscode", "cursor") else str(ctx.path.parent)
    if project:
        workspace = project
    sub = _Substitution(ctx, name, label, workspace)
    new_env = tuple((str(k), sub.value(str(v), str(k), f"env {k}")) for k, v in env.items())
    new_headers = tuple((str(k), sub.header(str(k), str(v))) for k, v in headers.items())
    new_args = sub.args([str(a) for a in args])
    cwd = entry.get("cwd")
    project_file = ctx.result.client in ("mcp-json", "vscode") or (
        ctx.result.client == "cursor" and ctx.path.parent.parent != Path.home()
    )
    if not isinstance(cwd, str) and transport == "stdio" and (project or project_file):
        cwd = workspace  # the client starts a project's servers in the project's folder
    return ImportedServer(
        name=name,
        transport=transport,
        source=ctx.path,
        command=sub.plain(command) if transport == "stdio" and command else None,
        args=tuple(new_args) if transport == "stdio" else (),
        env=new_env,
        url=sub.url(url) if url and transport != "stdio" else None,
        headers=new_headers,
        cwd=sub.plain(str(cwd)) if isinstance(cwd, str) else None,
        project=project,
    )


def _short(path: Path) -> str:
    home = str(Path.home())
    text = str(path)
    return "~" + text[len(home):] if text.startswith(home + "/") else text


def _env_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").upper()
    return name if name and not name[0].isdigit() else f"MCP_{name}"


def looks_secret(name: str, value: str) -> bool:
    """A value that must not be written into the TOML: a secret-sounding name or a token shape."""
    if not value or "${" in value:
        return False
    return bool(_SECRET_NAME.search(name)) or bool(_SECRET_VALUE.match(value.strip()))


class _Substitution:
    """Turns one server's values into the supervisor's syntax, lifting literal secrets out."""

    def __init__(self, ctx: _Context, server: str, label: str, workspace: str) -> None:
        self.ctx, self.server, self.label, self.workspace = ctx, server, label, workspace

    def plain(self, value: str) -> str:
        """Translate the client's variable syntax: ${env:X} -> ${X}, ${input:id} -> ${MCP_INPUT_ID}."""

        def replace(match: re.Match[str]) -> str:
            prefix, body = match.group(1), match.group(2)
            if prefix == "env:":
                return "${" + body + "}"
            if prefix == "input:":
                variable = "MCP_INPUT_" + _env_name(body)
                description = self.ctx.inputs.get(body, "")
                self._report(variable, f"{self.label}, VS Code input '{body}'"
                             + (f" ({description})" if description else ""))
                return "${" + variable + "}"
            if body in ("workspaceFolder", "workspaceRoot"):
                return self.workspace
            if body == "userHome":
                return "~"
            return match.group(0)  # ${NAME} and ${NAME:-default} are already the supervisor's syntax

        return _REFERENCE.sub(replace, value)

    def value(self, value: str, name: str, where: str) -> str:
        value = self.plain(value)
        if not self.ctx.lift_secrets or not looks_secret(name, value):
            return value
        variable = self._variable(_env_name(name))
        self._report(variable, f"{self.label}, {where}")
        return "${" + variable + "}"

    def header(self, name: str, value: str) -> str:
        value = self.plain(value)
        if not self.ctx.lift_secrets:
            return value
        scheme, _, credential = value.partition(" ")
        if name.lower() in ("authorization", "proxy-authorization") and credential and "${" not in value:
            variable = self._variable(_env_name(f"{self.server}_TOKEN"))
            self._report(variable, f"{self.label}, header {name}")
            return f"{scheme} ${{{variable}}}"
        if name.lower() in ("authorization", "proxy-authorization") and value and "${" not in value:
            variable = self._variable(_env_name(f"{self.server}_TOKEN"))
            self._report(variable, f"{self.label}, header {name}")
            return "${" + variable + "}"
        if looks_secret(name, value):
            variable = self._variable(_env_name(f"{self.server}_{name}"))
            self._report(variable, f"{self.label}, header {name}")
            return "${" + variable + "}"
        return value

    def url(self, url: str) -> str:
        url = self.plain(url)
        if not self.ctx.lift_secrets:
            return url
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc and "${" not in netloc.split("@", 1)[0]:
            userinfo, host = netloc.rsplit("@", 1)
            user, _, password = userinfo.partition(":")
            if password:
                variable = self._variable(_env_name(f"{self.server}_PASSWORD"))
                self._report(variable, f"{self.label}, password in the URL")
                netloc = f"{user}:${{{variable}}}@{host}"
        query = parse_qsl(parts.query, keep_blank_values=True)
        changed = False
        new_query: list[tuple[str, str]] = []
        for key, value in query:
            if looks_secret(key, value):
                variable = self._variable(_env_name(f"{self.server}_{key}"))
                self._report(variable, f"{self.label}, URL query parameter {key}")
                new_query.append((key, "${" + variable + "}"))
                changed = True
            else:
                new_query.append((key, value))
        query_text = urlencode(new_query, safe="${}:/") if changed else parts.query
        return urlunsplit((parts.scheme, netloc, parts.path, query_text, parts.fragment))

    def args(self, args: list[str]) -> list[str]:
        if not self.ctx.lift_secrets:
            return [self.plain(arg) for arg in args]
        out: list[str] = []
        pending_flag: str | None = None
        for arg in args:
            arg = self.plain(arg)
            if pending_flag is not None:
                flag, pending_flag = pending_flag, None
                if "${" not in arg and not arg.startswith("-"):
                    variable = self._variable(_env_name(f"{self.server}_{flag}"))
                    self._report(variable, f"{self.label}, argument --{flag}")
                    out.append("${" + variable + "}")
                    continue
            match = _SECRET_FLAG.match(arg)
            if match and _SECRET_NAME.search(match.group(1)):
                if match.group(2) is None:
                    pending_flag = match.group(1)
                elif match.group(3) and "${" not in match.group(3):
                    variable = self._variable(_env_name(f"{self.server}_{match.group(1)}"))
                    self._report(variable, f"{self.label}, argument {arg.split('=', 1)[0]}")
                    out.append(arg.split("=", 1)[0] + "=${" + variable + "}")
                    continue
            elif _SECRET_VALUE.match(arg):
                variable = self._variable(_env_name(f"{self.server}_ARG_TOKEN"))
                self._report(variable, f"{self.label}, a token-shaped argument")
                out.append("${" + variable + "}")
                continue
            out.append(arg)
        return out

    def _variable(self, preferred: str) -> str:
        """The env var to reference; prefixed with the server's name when another server took it."""
        owner = self.ctx.used_variables.get(preferred)
        if owner is None or owner == self.server:
            self.ctx.used_variables[preferred] = self.server
            return preferred
        prefixed = _env_name(f"{self.server}_{preferred}")
        self.ctx.used_variables[prefixed] = self.server
        return prefixed

    def _report(self, variable: str, where: str) -> None:
        if not any(s.variable == variable and s.where == where for s in self.ctx.result.secrets):
            self.ctx.result.secrets.append(SecretReference(variable=variable, where=where))
