"""Configuration loading: TOML file -> validated, immutable models (``config/models.py``).

Why this module is strict: the supervisor runs unattended, so a typo in the config must be caught
when the file is loaded (``mcp-supervisor --check``, ``supervisorctl-mcp check-config``, SIGHUP),
never discovered at 6 a.m. when the job runs. Every error names the file, the field path and what
would be valid.

Secrets: values may reference ``${NAME}``, ``${NAME:-default}`` (environment) or ``${file:PATH}``
(first line of a file), so the config never has to hold a token inline. In a server's ``command``,
``args``, ``env``, ``url`` and ``headers`` an unset variable is *not* a load error: it is recorded in
``ServerConfig.missing_env`` and the probe reports that server with failure class ``config``, so one
missing token does not take the whole supervisor down. Elsewhere (paths, socket) it is an error.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from mcp_supervisor.config.defaults import ServerDefaults, merge_defaults
from mcp_supervisor.config.fleet import remote_kind
from mcp_supervisor.config.models import Config

_REF_RE = re.compile(r"\$\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_FILE_VALUES: ContextVar[set[str] | None] = ContextVar("config_file_values", default=None)


class ConfigError(Exception):
    """A config file could not be used; ``str()`` is a complete, user-facing explanation."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid config {self.path}:\n{lines}")


def expand_refs(text: str, environ: Mapping[str, str], missing: list[str] | None = None) -> str:
    """Expand ``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` in ``text``.

    Unresolvable references are appended to ``missing`` (when given) and left in place, else they
    raise ``ValueError``. The error names the variable, never a value.
    """

    def replace(match: re.Match[str]) -> str:
        ref, default = match.group(1), match.group(2)
        if ref.startswith("file:"):
            path = Path(os.path.expanduser(ref[5:]))
            try:
                secret = path.read_text(encoding="utf-8").splitlines()[0].strip()
                sink = _FILE_VALUES.get()
                if sink is not None:  # the redactor must know it, wherever in the config it lands
                    sink.add(secret)
                return secret
            except (OSError, IndexError, UnicodeDecodeError) as exc:
                problem = f"secret file {path} cannot be read ({type(exc).__name__})"
                if missing is None:
                    raise ValueError(problem) from None
                missing.append(ref)
                return match.group(0)
        value = environ.get(ref)
        if value is None or (value == "" and default is not None):
            if default is not None:
                return default
            if missing is None:
                raise ValueError(f"environment variable {ref} is not set (export it or use ${{{ref}:-default}})")
            missing.append(ref)
            return match.group(0)
        return value

    return _REF_RE.sub(replace, text)


# ---------------------------------------------------------------------------------------------
# Loading


_SERVER_SECRET_FIELDS = ("command", "args", "env", "url", "headers", "user", "group", "inherit_env", "auth")
_PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "supervisor": ("socket", "state_dir"),
    "backup": ("key_file",),
    "history": ("path",),
    "metrics": ("web_config_file",),
    "proxy": ("token_file",),
}
_NESTED_PATH_FIELDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("backup", "sftp"): ("identity_file", "known_hosts"),
    ("backup", "rclone"): ("config",),
}


def _walk_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, list):
        return [_walk_strings(v, fn) for v in value]
    if isinstance(value, dict):
        return {k: _walk_strings(v, fn) for k, v in value.items()}
    return value


def _expand_path(raw: str, environ: Mapping[str, str], base: Path) -> str:
    expanded = os.path.expanduser(expand_refs(raw, environ))
    path = Path(expanded)
    return os.path.normpath(path if path.is_absolute() else base / path)


_LOADER_MARK = object()
"""Marks server entries the loader made from a client file (no TOML value can be this object)."""


def _prepare(raw: dict[str, Any], environ: Mapping[str, str], base: Path) -> dict[str, Any]:
    """Expand references and ``~`` before validation, collecting per-server missing variables."""
    data = dict(raw)
    for table, fields in _PATH_FIELDS.items():
        section = data.get(table)
        if isinstance(section, dict):
            section = dict(section)
            for key in fields:
                if isinstance(section.get(key), str):
                    try:
                        section[key] = _expand_path(section[key], environ, base)
                    except ValueError as exc:
                        raise _FieldProblem((table, key), str(exc)) from None
            data[table] = section
    for (table, key), fields in _NESTED_PATH_FIELDS.items():
        section = data.get(table)
        if isinstance(section, dict) and isinstance(section.get(key), dict):
            nested = dict(section[key])
            for name in fields:
                if isinstance(nested.get(name), str):
                    try:
                        nested[name] = _expand_path(nested[name], environ, base)
                    except ValueError as exc:
                        raise _FieldProblem((table, key, name), str(exc)) from None
            data[table] = {**section, key: nested}
    backup = data.get("backup")
    if isinstance(backup, dict) and isinstance(backup.get("locations"), list):
        locations = []
        for index, loc in enumerate(backup["locations"]):
            if isinstance(loc, str):
                try:  # an sftp:// or rclone: location is not a local path: only ${VAR} is expanded
                    remote = remote_kind(loc) or "://" in loc  # an unknown scheme is refused, not made a path
                    loc = expand_refs(loc, environ) if remote else _expand_path(loc, environ, base)
                except ValueError as exc:
                    raise _FieldProblem(("backup", "locations", index), str(exc)) from None
            locations.append(loc)
        data["backup"] = {**backup, "locations": locations}
    slack = data.get("slack")
    if isinstance(slack, dict):
        data["slack"] = _walk_strings(slack, lambda s: expand_refs(s, environ, []))
    notify = data.get("notify")
    if isinstance(notify, dict):  # an unset ${VAR} stays as written: that channel waits, the rest runs
        data["notify"] = _walk_strings(notify, lambda s: expand_refs(s, environ, []))
    configs = data.get("configs")
    if isinstance(configs, list):
        prepared_configs = []
        for index, entry in enumerate(configs):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                try:
                    entry = {**entry, "path": _expand_path(entry["path"], environ, base)}
                except ValueError as exc:
                    raise _FieldProblem(("configs", index, "path"), str(exc)) from None
            prepared_configs.append(entry)
        data["configs"] = prepared_configs
    if isinstance(data.get("servers_from"), str):
        data["servers_from"] = [data["servers_from"]]
    servers = data.get("servers")
    if isinstance(data.get("servers_from"), list) and isinstance(data.get("configs", []), list):
        from mcp_supervisor.importer.follow import servers_from_clients

        explicit = servers if isinstance(servers, list) else []
        imported = servers_from_clients(data["servers_from"], data.get("configs", []), explicit, _LOADER_MARK)
        servers = [*explicit, *imported]
        data["servers"] = servers
    defaults = data.get("defaults")
    if isinstance(servers, list):
        prepared: list[Any] = []
        for entry in servers:
            if isinstance(entry, dict):
                if isinstance(defaults, dict):  # checked by parse_config before: values are valid
                    entry = merge_defaults(defaults, entry)
                for loader_field in ("missing_env", "config_problem"):
                    if loader_field in entry and entry.get("_from_client") is not _LOADER_MARK:
                        raise _FieldProblem(("servers", len(prepared), loader_field), "is set by the loader, not by you")
                entry.pop("_from_client", None)
                entry = dict(entry)
                missing: list[str] = []

                def expand(text: str, missing: list[str] = missing) -> str:
                    return expand_refs(text, environ, missing)

                for key in _SERVER_SECRET_FIELDS:
                    if key in entry:
                        entry[key] = _walk_strings(entry[key], expand)
                if isinstance(entry.get("cwd"), str):
                    cwd = Path(os.path.expanduser(expand_refs(entry["cwd"], environ, missing)))
                    entry["cwd"] = os.path.normpath(cwd if cwd.is_absolute() else base / cwd)
                fallback = entry.get("fallback")
                if isinstance(fallback, dict):
                    entry["fallback"] = _walk_strings(fallback, expand)
                entry["missing_env"] = tuple(dict.fromkeys(missing))
            prepared.append(entry)
        data["servers"] = prepared
    return data


class _FieldProblem(Exception):
    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        self.loc = loc
        self.message = message
        super().__init__(message)


def _format_loc(loc: tuple[str | int, ...], raw: Mapping[str, Any]) -> str:
    """``servers[1] (jira).probe.timeout`` - the index plus the name, so the user finds the table."""
    parts: list[str] = []
    node: Any = raw
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and 0 <= item < len(node):
                node = node[item]
                if isinstance(node, dict) and isinstance(node.get("name"), str):
                    label += f" ({node['name']})"
            else:
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _describe_validation_error(
    exc: ValidationError, raw: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
        # pydantic appends the union arm / validator name to loc for some errors; drop non-fields
        loc = tuple(p for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        where = _format_loc(loc, raw)
        kind = err["type"]
        message = err["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if kind == "extra_forbidden":
            message = "unknown key (check the spelling; see docs/configuration.md for valid keys)"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"invalid value {err.get('input')!r}; expected {expected}"
        problems.append(f"{where}: {message}")
    return problems


def _check_defaults(raw: Mapping[str, Any], source: Path) -> None:
    """``[defaults]`` checked on its own first: a bad value is one problem at ``defaults.KEY``,
    not one per server it would be merged into."""
    if "defaults" not in raw:
        return
    table = raw["defaults"]
    if not isinstance(table, dict):
        raise ConfigError(source, ["defaults: must be a table ([defaults] with keys such as pin_tools = true)"])
    try:
        ServerDefaults.model_validate(table)
    except ValidationError as exc:
        problems = _describe_validation_error(exc, raw, prefix=("defaults",))
        takes = ", ".join(ServerDefaults.model_fields)
        raise ConfigError(source, [p.split(": unknown key", 1)[0] + f": unknown key in [defaults] (it takes: {takes}; "
                                   "other keys belong in a server's own table)" if ": unknown key" in p and p.split(":", 1)[0].count(".") == 1 else p
                                   for p in problems]) from None


def parse_config(
    text: str, source: Path | str = "<string>", environ: Mapping[str, str] | None = None
) -> Config:
    """Parse and validate TOML text; relative paths resolve against the file's directory."""
    source = Path(source)
    environ = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"not valid TOML: {exc}"]) from None
    base = source.parent.resolve() if source.name != "<string>" else Path.cwd()
    if "file_secrets" in raw:
        raise ConfigError(source, ["file_secrets: is set by the loader, not by you"])
    _check_defaults(raw, source)
    file_values: set[str] = set()
    token = _FILE_VALUES.set(file_values)
    try:
        data = _prepare(raw, environ, base)
    except _FieldProblem as exc:
        raise ConfigError(source, [f"{_format_loc(exc.loc, raw)}: {exc.message}"]) from None
    finally:
        _FILE_VALUES.reset(token)
    data["source"] = str(source)
    data["file_secrets"] = frozenset(file_values)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _describe_validation_error(exc, raw)) from None


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    path = Path(os.path.expanduser(str(path)))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (pass --config FILE or create it; see etc/mcp-supervisor.toml)"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read the file: {exc}"]) from None
    return parse_config(text, path, environ)
