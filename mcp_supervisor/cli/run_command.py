"""Registers ``supervisorctl-mcp run`` without importing the guardian.

Why a separate module: ``cli/main.py`` builds the whole parser for every command, and ``ready``
must start fast; the guardian (threads, subprocess, rich) is imported only when ``run`` runs.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_WAIT = 300.0
MAX_WAIT = 3600.0


def _cmd_run(args: argparse.Namespace) -> int:
    from mcp_supervisor.cli.guardian import cmd_run

    return cmd_run(args)


def add_run_subcommand(sub: Any) -> None:
    """Plug-in for ``cli/main.py`` (the pattern of ``add_vault_subcommands``)."""
    from mcp_supervisor.cli.common import common_options, seconds_arg

    text = "run a job guarded: wait for ready MCP servers, watch them during the run, report afterwards"
    parser: argparse.ArgumentParser = sub.add_parser(
        "run",
        parents=[common_options(suppress=True)],
        help=text,
        description=text,
        epilog="exit codes: the job's own (128+N when killed by signal N); 75 not started (servers not "
        "ready); 3 no supervisor (job not started); 2 usage; 126/127 CMD cannot be executed",
    )
    parser.set_defaults(func=_cmd_run)
    parser.add_argument(
        "--wait", type=seconds_arg(MAX_WAIT), default=DEFAULT_WAIT, metavar="S",
        help=f"wait up to S seconds for the servers to be ready (default {DEFAULT_WAIT:g}, max {MAX_WAIT:g})",
    )
    parser.add_argument(
        "--require", action="append", metavar="NAME",
        help="servers the job needs (repeatable or comma-separated; default: the critical ones)",
    )
    parser.add_argument(
        "--allow-fallback", action="store_true",
        help="start even if required servers are not ready; they are named in MCP_SUPERVISOR_FALLBACK",
    )
    parser.add_argument(
        "--standalone", action="store_true",
        help="when no supervisor answers, check the config's servers once from here and run without it",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true",
        help="print the summary only when something went wrong (cron mails every run's output otherwise)",
    )
    parser.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD", help="the job and its arguments")
