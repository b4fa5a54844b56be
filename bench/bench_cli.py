"""CLI start-up cost: ``supervisorctl-mcp ready`` / ``status`` against a real daemon, beside a bare
interpreter, in interleaved rounds (so a machine loaded by others slows every command alike).

Prints, per command, the median CPU time (user + system of the child) and the median and minimum
wall time over N rounds. ``--baseline DIR`` adds the same commands run from another source tree
(e.g. ``git archive`` of an older commit) for a before/after in the same run. Both trees are
byte-compiled first, as ``pip install`` does (with PYTHONDONTWRITEBYTECODE set, as on the CI
machines, an editable tree would otherwise be compiled from source on every call). Targets: ``ready``
within a bare interpreter + 20 ms (issue 7); ``status`` + 30 ms and ``run -- true`` + 150 ms of wall
time (issue 16). Figures only; nothing here passes or fails.

Usage: python bench/bench_cli.py [--rounds 20] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

CONFIG = """\
[supervisor]
socket = "{dir}/s.sock"
state_dir = "{dir}/state"
log_level = "warning"

[[servers]]
name = "unreachable"
transport = "http"
url = "http://127.0.0.1:9/mcp"
critical = false
"""


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # cwd=/ and -P below: the tree under test comes from PYTHONPATH or the install, never the cwd
    code = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd="/").returncode
    wall = (time.perf_counter() - started) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    return cpu, wall, code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--baseline", type=Path, default=None, help="another source tree to compare with")
    args = parser.parse_args()
    for tree in [ROOT, *([args.baseline] if args.baseline else [])]:
        compileall.compile_dir(str(tree / "mcp_supervisor"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-cli-", dir="/tmp") as tmp:
        config = Path(tmp) / "c.toml"
        config.write_text(CONFIG.format(dir=tmp))
        daemon = subprocess.Popen([str(BIN / "mcp-supervisor"), "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            sock = Path(tmp) / "s.sock"
            deadline = time.monotonic() + 30
            while not sock.exists():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start")
                time.sleep(0.05)
            env = {**os.environ, "MCP_SUPERVISOR_SOCKET": str(sock)}
            env.pop("PYTHONPATH", None)
            py = sys.executable
            cli = ["-P", "-c", "import sys; from mcp_supervisor.cli.main import main; sys.exit(main())"]
            commands: list[tuple[str, list[str], dict[str, str]]] = [("bare interpreter", [py, "-c", "pass"], env)]
            trees = [("", env)]
            if args.baseline is not None:
                trees.insert(0, ("baseline ", {**env, "PYTHONPATH": str(args.baseline.resolve())}))
            for words in (["ready"], ["ready", "--json"], ["status"], ["status", "--json"], ["run", "--", "true"]):
                for label, tree_env in trees:
                    commands.append((label + " ".join(words), [py, *cli, *words], tree_env))
            cpu: dict[str, list[float]] = {name: [] for name, _, _ in commands}
            wall: dict[str, list[float]] = {name: [] for name, _, _ in commands}
            for _ in range(args.rounds):
                for name, cmd, cmd_env in commands:
                    c, w, code = run(cmd, cmd_env)
                    if code != 0:
                        raise SystemExit(f"{name} exited {code}")
                    cpu[name].append(c)
                    wall[name].append(w)
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)
    bare = statistics.median(cpu["bare interpreter"])
    bare_wall = statistics.median(wall["bare interpreter"])
    print(f"{args.rounds} interleaved rounds; CPU = user+system of the child")
    print(f"{'command':<24} {'CPU p50':>9} {'vs bare':>9} {'wall p50':>9} {'vs bare':>9} {'wall min':>9}")
    for name in cpu:
        c = statistics.median(cpu[name])
        w = statistics.median(wall[name])
        print(f"{name:<24} {c:>7.1f}ms {c - bare:>+7.1f}ms {w:>7.1f}ms {w - bare_wall:>+7.1f}ms "
              f"{min(wall[name]):>7.1f}ms")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    print("targets: ready within a bare interpreter + 20 ms CPU; status (the table) + 30 ms; "
          "run -- true + 150 ms of wall time")


if __name__ == "__main__":
    main()
