"""Config loading: what a user sees when their file is right, and when it is wrong."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mcp_supervisor.config import (
    ConfigError,
    expand_refs,
    find_config,
    load_config,
    parse_config,
    parse_duration,
    resolve_socket_path,
)

REPO = Path(__file__).resolve().parent.parent

MINIMAL = """
[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:8000/mcp"
"""


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "/etc/x/sup.toml", environ or {})
    assert "/etc/x/sup.toml" in str(info.value)
    return info.value.problems


def test_example_config_loads_and_uses_defaults() -> None:
    config = load_config(REPO / "etc" / "mcp-supervisor.toml", environ={})
    names = [s.name for s in config.servers]
    assert {"notes-stdio", "time", "notes-http"} <= set(names)
    assert config.supervisor.socket is not None and config.supervisor.socket.is_absolute()
    for server in config.servers:
        assert server.missing_env == ()
        if server.cwd is not None:
            assert server.cwd == REPO


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("2d", 172800.0), ("1.5s", 1.5), (7, 7.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["5 minutes", "-1s", "s", "", True, [1]])
def test_bad_durations_are_explained(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_probe_settings_and_durations_parse() -> None:
    config = parse_config(
        MINIMAL + 'probe = { interval = "5s", timeout = "250ms", failure_threshold = 2, expected_tools = ["a"] }',
        environ={},
    )
    probe = config.servers[0].probe
    assert (probe.interval, probe.timeout, probe.failure_threshold, probe.expected_tools) == (5.0, 0.25, 2, ["a"])


def test_unknown_key_names_the_field_path_and_server() -> None:
    problems = problems_of(MINIMAL + 'probe = { intervall = "5s" }')
    assert problems == [
        "servers[0] (jira).probe.intervall: unknown key (check the spelling; see docs/configuration.md "
        "for valid keys)"
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = MINIMAL + '\n[[servers]]\nname = "gitlab"\ntransport = "stdo"\n[supervisor]\nlog_level = "loud"\n'
    problems = problems_of(text)
    assert any(p.startswith("servers[1] (gitlab).transport: invalid value 'stdo'") for p in problems)
    assert any(p.startswith("supervisor.log_level: invalid value 'loud'") for p in problems)


def test_invalid_toml_says_where() -> None:
    (problem,) = problems_of('[[servers]]\nname = "x\n')
    assert problem.startswith("not valid TOML")
    assert "line" in problem


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[[servers]]\nname = "a"\ntransport = "stdio"\n', "a stdio server needs 'command'"),
        ('[[servers]]\nname = "a"\ntransport = "http"\n', "a http server needs 'url'"),
        ('[[servers]]\nname = "a"\ntransport = "http"\nurl = "localhost:80"\n', "is not an http(s) URL"),
        ('[[servers]]\nname = "a b"\ntransport = "stdio"\ncommand = "x"\n', "not a valid server name"),
        ('[[servers]]\nname = "a"\ntransport = "stdio"\ncommand = "x"\nprotocol = "2025-06-18"\n', "protocol"),
        (
            '[[servers]]\nname = "a"\ntransport = "http"\nurl = "http://h/mcp"\nmanaged = true\n',
            "'managed = true' needs 'command'",
        ),
        (MINIMAL + MINIMAL, "the name 'jira' is used twice"),
        (MINIMAL.replace('"jira"', '"jira"\nconfig = "cursor"'), "refers to config 'cursor'"),
        ('[backup]\nlocations = ["/a"]\nmin_copies = 2\n', "min_copies = 2 but only 1 location"),
    ],
)
def test_semantic_errors_explain_the_fix(snippet: str, expected: str) -> None:
    problems = problems_of(snippet)
    assert any(expected in p for p in problems), problems


def test_missing_secret_env_is_recorded_per_server_not_fatal() -> None:
    text = MINIMAL + 'headers = { Authorization = "Bearer ${JIRA_TOKEN}" }\n'
    config = parse_config(text, environ={})
    assert config.servers[0].missing_env == ("JIRA_TOKEN",)
    config = parse_config(text, environ={"JIRA_TOKEN": "s3cr3t"})
    assert config.servers[0].headers["Authorization"] == "Bearer s3cr3t"
    assert config.servers[0].missing_env == ()


def test_env_default_and_file_references(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("from-file\nignored\n")
    assert expand_refs("${A:-dflt}", {}) == "dflt"
    assert expand_refs("${A:-dflt}", {"A": "set"}) == "set"
    assert expand_refs(f"${{file:{secret}}}", {}) == "from-file"
    missing: list[str] = []
    assert expand_refs("${file:/nonexistent/x}", {}, missing) == "${file:/nonexistent/x}"
    assert missing == ["file:/nonexistent/x"]


def test_error_for_unset_variable_in_a_path_names_it_without_values() -> None:
    (problem,) = problems_of('[supervisor]\nstate_dir = "${STATE_HOME}/sup"\n', {"OTHER": "secret-value"})
    assert problem.startswith("supervisor.state_dir: environment variable STATE_HOME is not set")
    assert "secret-value" not in problem


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sup.toml"
    path.write_text('[supervisor]\nsocket = "run/s.sock"\nstate_dir = "~/st"\n' + MINIMAL)
    config = load_config(path, environ={})
    assert config.supervisor.socket == tmp_path / "run" / "s.sock"
    assert config.supervisor.state_dir == Path(os.path.expanduser("~/st"))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")


def test_socket_resolution_order(tmp_path: Path) -> None:
    config = parse_config(f'[supervisor]\nsocket = "{tmp_path}/c.sock"\n', environ={})
    assert resolve_socket_path("/x/cli.sock", config, {"MCP_SUPERVISOR_SOCKET": "/x/env.sock"}) == Path(
        "/x/cli.sock"
    )
    assert resolve_socket_path(None, config, {"MCP_SUPERVISOR_SOCKET": "/x/env.sock"}) == Path("/x/env.sock")
    assert resolve_socket_path(None, config, {}) == tmp_path / "c.sock"
    assert resolve_socket_path(None, None, {}).name == "control.sock"


def test_find_config_prefers_explicit_then_environment(tmp_path: Path) -> None:
    assert find_config("/a.toml", {"MCP_SUPERVISOR_CONFIG": "/b.toml"}) == Path("/a.toml")
    assert find_config(None, {"MCP_SUPERVISOR_CONFIG": "/b.toml"}) == Path("/b.toml")
