"""`make install` / deploy/install.sh into a temporary prefix, a fake HOME and a temporary unit folder.

systemctl is replaced by a recorder (the test machine runs no systemd); everything else is real:
the virtual environment, pip installing this checkout, the import of a real-shaped Cursor config,
the vault key and first backup, and `systemd-analyze verify` on the units it wrote.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CANARY = "ghp_INSTALLCANARY0123456789abcdef"

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

FAKE_SYSTEMCTL = """#!/bin/sh
# records every call; remembers what was enabled
echo "$*" >> "$(dirname "$0")/systemctl.log"
state="$(dirname "$0")/enabled"
touch "$state"
case "$*" in
  *is-enabled*) unit=$(echo "$*" | awk '{print $NF}'); grep -qx "$unit" "$state" ;;
  *enable*) for u in $*; do case "$u" in *.service|*.timer) echo "$u" >> "$state";; esac; done ;;
  *) exit 0 ;;
esac
"""


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (mtime_ns, mode) for every file under root, except the venv's own bytecode."""
    found: dict[str, tuple[int, int]] = {}
    for path in root.rglob("*"):
        if "__pycache__" in path.parts or path.parent.name == "tools":
            continue
        info = path.lstat()
        found[str(path)] = (info.st_mtime_ns, info.st_mode)
    return found


def test_user_install_is_complete_idempotent_and_uninstall_keeps_the_key(tmp_path: Path) -> None:
    home, prefix, bin_dir, units = tmp_path / "home", tmp_path / "venv", tmp_path / "bin", tmp_path / "units"
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "systemctl").write_text(FAKE_SYSTEMCTL)
    (tools / "systemctl").chmod(0o755)
    cursor = home / ".cursor" / "mcp.json"
    cursor.parent.mkdir(parents=True)
    cursor.write_text(json.dumps({"mcpServers": {
        "github": {"command": "gh-mcp", "env": {"GITHUB_TOKEN": CANARY}},
    }}))
    env = {"PATH": f"{tools}:{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8",
           "SYSTEMCTL": str(tools / "systemctl"), "USER": "tester"}
    if "PIP_INDEX_URL" in os.environ:
        env["PIP_INDEX_URL"] = os.environ["PIP_INDEX_URL"]
    args = ["bash", str(ROOT / "deploy" / "install.sh"), "--user", "--prefix", str(prefix), "--bin-dir", str(bin_dir),
            "--unit-dir", str(units), "--no-start", "--job", "/opt/jobs/analysis.py", "--job-time", "08:30"]

    first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=560, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    config = home / ".config" / "mcp-supervisor" / "mcp-supervisor.toml"
    key = home / ".config" / "mcp-supervisor" / "vault.key"
    state = home / ".local" / "state" / "mcp-supervisor"
    # commands on PATH, pointing into the virtual environment
    for cmd in ("mcp-supervisor", "supervisorctl-mcp"):
        assert os.readlink(bin_dir / cmd) == str(prefix / "bin" / cmd)
    # the config was imported from the Cursor file: the server, the watched file, never the token
    text = config.read_text()
    assert 'name = "github"' in text and str(cursor) in text and "${GITHUB_TOKEN}" in text
    assert CANARY not in text and CANARY not in first.stdout + first.stderr
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / ".config" / "mcp-supervisor" / "secrets.env").stat().st_mode) == 0o600
    backups = subprocess.run([str(bin_dir / "supervisorctl-mcp"), "--config", str(config), "backups", "--json"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert backups.returncode == 0 and '"id"' in backups.stdout, backups.stdout + backups.stderr
    # units with this install's paths, the job guarded by `run`, the timer at the asked time
    service = (units / "mcp-supervisor.service").read_text()
    assert f"ExecStart={bin_dir}/mcp-supervisor --config {config}" in service
    job = (units / "mcp-daily-job.service").read_text()
    assert "run --wait 300 -- /opt/jobs/analysis.py" in job
    assert "OnCalendar=*-*-* 08:30:00" in (units / "mcp-daily-job.timer").read_text()
    assert f"{bin_dir}/supervisorctl-mcp --config {config} report --daily --slack" in (
        units / "mcp-report.service").read_text()  # installed, not enabled
    assert not any("mcp-report.timer" in call or "mcp-backup.timer" in call
                   for call in (tools / "systemctl.log").read_text().splitlines() if "enable" in call)
    calls = (tools / "systemctl.log").read_text().splitlines()
    assert "--user daemon-reload" in calls
    assert "--user enable mcp-supervisor.service" in calls
    assert "--user enable --now mcp-daily-job.timer" in calls
    if shutil.which("systemd-analyze"):
        runtime = tmp_path / "xdg"
        runtime.mkdir(mode=0o700)
        verify = subprocess.run(
            ["systemd-analyze", "--user", "verify", *(str(units / u) for u in
                                                     ("mcp-supervisor.service", "mcp-daily-job.service",
                                                      "mcp-daily-job.timer", "mcp-report.service",
                                                      "mcp-report.timer", "mcp-backup.service",
                                                      "mcp-backup.timer"))],
            capture_output=True, text=True, env={**env, "XDG_RUNTIME_DIR": str(runtime)}, timeout=60,
        )
        assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    # a second run changes nothing
    before = snapshot(tmp_path)
    calls_before = len(calls)
    second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "nothing changed" in second.stdout
    assert snapshot(tmp_path) == before
    new_calls = (tools / "systemctl.log").read_text().splitlines()[calls_before:]
    assert all("is-enabled" in call for call in new_calls), new_calls

    # uninstall: units and commands gone; config, key and backups stay, and it says where
    gone = subprocess.run([*args[:2], "--uninstall", *args[2:]], capture_output=True, text=True, env=env, timeout=120)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (units / "mcp-supervisor.service").exists() and not (bin_dir / "supervisorctl-mcp").exists()
    assert key.exists() and config.exists() and (state / "backups").is_dir()
    assert str(key) in gone.stdout and str(state) in gone.stdout


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_shipped_system_units_verify_without_warnings(tmp_path: Path) -> None:
    """The units as shipped, with the binaries pointed at real executables (verify checks them)."""
    for unit in ("mcp-supervisor.service", "mcp-daily-job.service", "mcp-daily-job.timer", "mcp-report.service",
                 "mcp-report.timer", "mcp-backup.service", "mcp-backup.timer"):
        text = (ROOT / "deploy" / "systemd" / unit).read_text().replace("/usr/local/bin/mcp-supervisor", "/bin/true")
        (tmp_path / unit).write_text(text.replace("/usr/local/bin/supervisorctl-mcp", "/bin/true"))
    verify = subprocess.run(["systemd-analyze", "verify", *(str(p) for p in sorted(tmp_path.iterdir()))],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr
