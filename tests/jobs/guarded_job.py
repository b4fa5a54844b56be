"""A small job for the guardian tests, run as ``python guarded_job.py MODE [ARGS]``.

Modes:
  exit CODE            print a line and what the guardian told it, exit CODE
  wait-file PATH       print "job started", wait (deadline 90 s) until PATH exists, exit 0
  term MARKER          on SIGTERM/SIGINT write MARKER and exit 42; print "job ready" then wait (deadline 60 s)
  leave PIDFILE        start a sleeping child in the job's process group, write its pid, exit 0
  touch PATH           create PATH, exit 0 (proves the job ran)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "exit":
        print("hello from the job", flush=True)
        print(f"fallback=[{os.environ.get('MCP_SUPERVISOR_FALLBACK', '<unset>')}]", flush=True)
        print(f"run_id={os.environ.get('MCP_SUPERVISOR_RUN_ID', '')}", flush=True)
        return int(args[0])
    if mode == "wait-file":
        print("job started", flush=True)
        deadline = time.monotonic() + 90
        while not Path(args[0]).exists():
            if time.monotonic() > deadline:
                return 99
            time.sleep(0.05)
        return 0
    if mode == "term":
        marker = Path(args[0])

        def on_term(signum: int, frame: object) -> None:
            marker.write_text(f"got {signal.Signals(signum).name}")
            sys.exit(42)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        print("job ready", flush=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        return 98
    if mode == "leave":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        Path(args[0]).write_text(str(child.pid))
        return 0
    if mode == "touch":
        Path(args[0]).write_text("ran")
        print(f"fallback=[{os.environ.get('MCP_SUPERVISOR_FALLBACK', '<unset>')}]", flush=True)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
