"""``supervisorctl-mcp run [--wait S] [--require NAME] [--allow-fallback] -- CMD ...``: the guarded run.

Why a guardian and not ``ready && job``: the unattended morning job must start only when its MCP
servers work, be told which of them it must reach directly (fallback), keep running when a server
dies mid-way (the daemon heals it, the guardian asks for that at once and writes it down), and
leave a report a person can read afterwards. The guardian never decides health itself: the daemon
does. It only asks (probe, recover, backup), waits, records and passes signals on.

Exit codes: the job's own (a signal N as 128+N); 75 (EX_TEMPFAIL) when the job was not started
because required servers were not ready; 3 when no daemon answers (the job is not started unless
``--standalone``); 2 for usage; 126/127 when CMD cannot be executed; 130/143 when interrupted
before the job started.

This module is the command's shell (arguments, signals, printing); the run itself is
``guard/session.py``, what the report says is the pure ``guard/report.py`` (its terminal lines ``guard/summary.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from mcp_supervisor.guard.job import Job
from mcp_supervisor.guard.precheck import say
from mcp_supervisor.guard.report import exit_code_of
from mcp_supervisor.guard.session import GuardedRun, GuardUsageError, Options, load_optional_config
from mcp_supervisor.guard.summary import summary_lines

EXIT_CANNOT_EXECUTE = 126
EXIT_NOT_FOUND = 127


class Interrupted(Exception):
    """SIGINT/SIGTERM before the job started: do not start it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def _interruptible() -> Iterator[None]:
    """Before the job starts, INT/TERM abort the pre-check (the job is then not started)."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def cmd_run(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.common import UsageError, socket_path

    argv = list(args.cmd or [])
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError("no command to run: supervisorctl-mcp run [--wait S] -- CMD [ARGS...]")
    options = Options(require=list(args.require or []), wait=args.wait, allow_fallback=args.allow_fallback,
                      standalone=args.standalone)
    try:
        run = GuardedRun(argv, socket_path(args), load_optional_config(getattr(args, "config", None)), options)
        with _interruptible():
            code = run.prepare()
    except GuardUsageError as exc:
        raise UsageError(str(exc)) from None
    except Interrupted as exc:
        run.end(None, f"interrupted by {exc} before the job started")
        return _conclude(args, run, 128 + exc.signum)
    if code is not None:
        return _conclude(args, run, code)
    return _run_job(args, run, argv)


def _run_job(args: argparse.Namespace, run: GuardedRun, argv: list[str]) -> int:
    job = Job(argv, {**os.environ, **run.environment()})
    with job.forwarding():
        run.begin()
        try:
            returncode: int | None = job.run()
        except OSError as exc:
            code = EXIT_NOT_FOUND if isinstance(exc, FileNotFoundError) else EXIT_CANNOT_EXECUTE
            reason = f"cannot execute {argv[0]}: {exc.strerror or exc}"
            say(f"the job was NOT started: {reason}")
            run.end(None, reason)
            return _conclude(args, run, code)
        run.facts.leftovers_killed = job.clean_group()
    run.facts.signals_forwarded = job.forwarded
    assert returncode is not None
    run.end(returncode)
    return _conclude(args, run, exit_code_of(returncode))


def _conclude(args: argparse.Namespace, run: GuardedRun, code: int) -> int:
    report = run.conclude(code)
    if args.json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
        sys.stdout.flush()
    elif not (getattr(args, "quiet", False) and quiet_enough(report, code)):
        print_summary(report, run.report_path)
    return code


def quiet_enough(report: dict[str, Any], code: int) -> bool:
    """--quiet stays silent only for a job that succeeded while every server behaved or healed."""
    return code == 0 and report.get("health") in ("EXCELLENT", "GOOD")


def print_summary(report: dict[str, Any], path: Path | None) -> None:
    """The run's summary on stderr, coloured on a terminal (plain text: no rich import for a job)."""
    from mcp_supervisor.cli.render import paint, wants_colour

    colour = wants_colour(sys.stderr)
    lines = [paint(text, style, colour) for style, text in summary_lines(report)]
    lines += [paint(f"  proxy: {line}", "", colour) for line in report.get("proxy") or []]
    if path is not None:
        lines.append(paint(f"  report: {path}", "dim", colour))
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()
