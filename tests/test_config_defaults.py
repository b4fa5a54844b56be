"""``[defaults]``: keys written once for every server, a server's own value always winning.

What a user notices: ``pin_tools = true`` in ``[defaults]`` pins every server's tools (the issue's
"on a server, or in [defaults]"), a server saying ``pin_tools = false`` keeps its own choice,
``check-config`` prints which value each server ends up with, and a typo in ``[defaults]`` is one
error naming the file and the key, not a silent no-op.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from mcp_supervisor.config import ConfigError, load_config
from tests.live_daemon import CLI, daemon_env

CONFIG = """
[supervisor]
state_dir = "{state}"

[defaults]
pin_tools = true
critical = false
retry_tools = ["search_*"]
user = "nobody"
stop_timeout = "3s"

[defaults.probe]
interval = "30s"
failure_threshold = 5

[defaults.recovery]
backoff_max = "1m"

[[servers]]
name = "jira"
transport = "http"
url = "http://127.0.0.1:9/mcp"
probe = {{ timeout = "2s" }}

[[servers]]
name = "notes"
transport = "stdio"
command = "/bin/true"
pin_tools = false
critical = true
probe = {{ interval = "5s" }}

[[servers]]
name = "api"
transport = "http"
url = "http://127.0.0.1:10/mcp"
managed = true
command = "/bin/true"
user = "daemon"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mcp-supervisor.toml"
    path.write_text(text.format(state=tmp_path / "state"))
    return path


def test_defaults_reach_every_server_that_does_not_set_its_own(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, CONFIG))
    jira, notes, api = (config.server(n) for n in ("jira", "notes", "api"))
    # a plain http server: the defaults that apply to it, tables merged key by key
    assert jira.pin_tools is True and jira.critical is False and jira.retry_tools == ["search_*"]
    assert (jira.probe.interval, jira.probe.timeout, jira.probe.failure_threshold) == (30.0, 2.0, 5)
    assert jira.recovery.backoff_max == 60.0 and jira.recovery.max_attempts == 5
    assert jira.user is None and jira.stop_timeout is None  # not started by us: refused there, so not applied
    # a server's own value always wins, in tables too
    assert notes.pin_tools is False and notes.critical is True
    assert (notes.probe.interval, notes.probe.failure_threshold) == (5.0, 5)
    assert notes.user == "nobody" and notes.stop_timeout is None  # spawned, not managed
    # a managed one: its own user, the default stop_timeout, its 60 s start allowance kept
    assert api.user == "daemon" and api.stop_timeout == 3.0 and api.probe.start_period == 60.0


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("pin_tools = true", "pin_tool = true", "defaults.pin_tool: unknown key in [defaults] (it takes: pin_tools"),
    ("pin_tools = true", 'name = "x"', "defaults.name: unknown key in [defaults]"),
    ("pin_tools = true", "pin_tools = 3", "defaults.pin_tools"),
    ('interval = "30s"', 'intervall = "5s"', "defaults.probe.intervall: unknown key (check the spelling"),
    ('interval = "30s"', 'interval = "soon"', "defaults.probe.interval: 'soon' is not a duration"),
    ('interval = "30s"', 'expected_tools = ["a"]', "probe.expected_tools names one server's tools"),
])
def test_a_bad_defaults_table_is_one_error_naming_file_and_key(tmp_path: Path, old: str, new: str,
                                                                expected: str) -> None:
    text = CONFIG.replace(old, new, 1)
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert str(path) in message and expected in message, message
    assert "servers[" not in message, message  # reported once, at [defaults], not per server


def test_check_config_shows_each_servers_effective_value(tmp_path: Path) -> None:
    path = _write(tmp_path, CONFIG)
    shown = subprocess.run([str(CLI), "check-config", str(path)], capture_output=True, text=True, timeout=60,
                           env=daemon_env(NO_COLOR="1"))
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert '[defaults] pin_tools = true: jira, api; own value: notes = false' in lines, shown.stdout
    assert '[defaults] user = "nobody": notes; own value: api = "daemon"; does not apply to: jira' in lines
    assert '[defaults] probe.interval = "30s": jira, api; own value: notes = "5s"' in lines
    as_json = subprocess.run([str(CLI), "check-config", str(path), "--json"], capture_output=True, text=True,
                             timeout=60, env=daemon_env())
    effective = json.loads(as_json.stdout)["defaults"]
    assert effective["stop_timeout"]["servers"] == {"jira": {"value": None, "from": "n/a"},
                                                    "notes": {"value": None, "from": "n/a"},
                                                    "api": {"value": "3s", "from": "defaults"}}
    bad = _write(tmp_path, CONFIG.replace("pin_tools = true", "pin_tools = true\npinn_tools = true", 1))
    refused = subprocess.run([str(CLI), "check-config", str(bad)], capture_output=True, text=True, timeout=60,
                             env=daemon_env(NO_COLOR="1"))
    assert refused.returncode == 1 and "defaults.pinn_tools: unknown key in [defaults]" in refused.stderr


def test_a_reload_that_changes_defaults_replaces_exactly_the_servers_it_reaches(tmp_path: Path) -> None:
    from mcp_supervisor.runtime.reload_plan import plan_reload

    old = load_config(_write(tmp_path, CONFIG))
    # pin_tools: notes sets its own, so only jira and api change; user: only spawned servers
    new = load_config(_write(tmp_path, CONFIG.replace("pin_tools = true", "pin_tools = [\"search\"]", 1)))
    assert plan_reload(old, new).changed == ["jira", "api"]
    assert new.server("jira").pin_tools == ["search"] and new.server("notes").pin_tools is False
    stop = load_config(_write(tmp_path, CONFIG.replace('stop_timeout = "3s"', 'stop_timeout = "9s"', 1)))
    assert plan_reload(old, stop).changed == ["api"]  # the only managed one
