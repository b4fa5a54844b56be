"""``supervisorctl-mcp login NAME [--refresh]``: the one step a person does for an OAuth server.

Why without the daemon: the person may be on a headless host where the daemon runs; the login
writes the encrypted store under ``state_dir/auth`` directly (as the daemon's user: run it as that
user, or as root), under the same lock the daemon refreshes under, and the daemon picks the new
grant up within a second, without a restart. ``--refresh`` renews the token now from this process
(a check that the grant still works), taking turns with the daemon through the lock. Nothing
printed is a token: the URL to open, the code to enter, and when the token expires.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _when(stamp: float | None) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp)) if stamp else "unknown"


def cmd_login(args: argparse.Namespace) -> int:
    from mcp.client.auth import OAuthFlowError

    from mcp_supervisor.auth.discovery import DiscoveryError
    from mcp_supervisor.auth.exchange import GrantProblem
    from mcp_supervisor.auth.lock import LockError
    from mcp_supervisor.auth.login import login, refresh_once
    from mcp_supervisor.auth.store import EncryptedTokenStorage, token_key
    from mcp_supervisor.cli.common import UsageError, load_cli_config

    config = load_cli_config(args)
    logging.getLogger("mcp.client.auth").setLevel(logging.CRITICAL)  # its failure is said once, below
    server = next((s for s in config.servers if s.name == args.name), None)
    if server is None or server.auth is None or not server.url:
        raise UsageError(f"no OAuth server named {args.name!r} in the config (an http/sse server with "
                         "auth = { type = \"oauth\", ... })")

    def say(line: str) -> None:
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)

    try:
        storage = EncryptedTokenStorage(config.state_dir, server.name, token_key(config.state_dir, config.backup.key_file))
        if args.refresh:
            owner = asyncio.run(refresh_once(server, storage))
            facts: dict[str, Any] = {"server": server.name, "refreshed": True, "expires_at": owner.facts.expires_at}
            message = f"{server.name}: token refreshed, valid until {_when(owner.facts.expires_at)}"
        else:
            if server.auth.machine:
                say(f"{server.name} uses the machine grant {server.auth.grant}: no login needed; checking it works")
                owner = asyncio.run(refresh_once(server, storage))
                facts = {"server": server.name, "expires_at": owner.facts.expires_at}
            else:
                record = asyncio.run(login(server, storage, say, wait=args.wait))
                expires = (record.obtained_at or 0) + float(record.token.expires_in or 0) if record.token else None
                facts = {"server": server.name, "expires_at": expires,
                         "refresh_token": bool(record.token and record.token.refresh_token)}
            message = (f"{server.name}: signed in; access token valid until {_when(facts['expires_at'])}; "
                       "the daemon renews it from now on")
    except (GrantProblem, DiscoveryError, LockError, OAuthFlowError) as exc:
        print(f"supervisorctl-mcp: {server.name}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except PermissionError as exc:
        print(f"supervisorctl-mcp: {server.name}: cannot use the token store ({exc.strerror}: {exc.filename}); run "
              "this as the daemon's user or as root", file=sys.stderr)
        return EXIT_FAILED
    except (OSError, TimeoutError, ValueError) as exc:
        print(f"supervisorctl-mcp: {server.name}: login failed ({type(exc).__name__}); nothing was changed",
              file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(facts) if args.json else message)
    return EXIT_OK


def add_login_subcommands(sub: Any) -> None:
    from mcp_supervisor.cli.common import common_options

    command = sub.add_parser(
        "login", parents=[common_options(suppress=True)],
        help="sign in once for an OAuth server (device code or browser); the daemon renews from then on",
        description="Sign in for an OAuth server: the device grant where the authorization server offers it "
                    "(open the printed URL anywhere, enter the code), else authorization code + PKCE with a "
                    "loopback redirect. Run as the daemon's user or root; no daemon restart needed.",
    )
    command.add_argument("name", metavar="NAME", help="the server's name in the config")
    command.add_argument("--refresh", action="store_true", help="renew the token now instead (checks the grant)")
    command.add_argument("--wait", type=float, default=900.0, metavar="S", help="how long to wait for the person")
    command.set_defaults(func=cmd_login)
