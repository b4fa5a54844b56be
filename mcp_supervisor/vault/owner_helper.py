"""The helper process that writes into another user's folder as that user: ``python -I -m`` this module.

Why a process of its own, started with ``subprocess`` (fork + exec done by the C helper, safe in a
threaded program), rather than ``os.fork()`` in the daemon: the vault runs in worker threads, and
a forked copy of a threaded process may inherit a lock another thread held (the logging lock, the
allocator's, OpenSSL's) and hang for ever. A fresh interpreter has one thread and none of the
daemon's state. It starts as root (so it can run an interpreter under a 0700 ``/root``), drops to
the folder's owner (``setgroups``, ``setgid``, ``setuid``, checked) before it reads the folder it
was handed, and can then do nothing the user could not do herself; what it creates is hers.

Protocol: argv carries nothing secret; stdin holds one JSON line (uid, gid, groups, the inherited
folder descriptor, the put options) and then the content; stdout gets one JSON line back.
"""

from __future__ import annotations

import json
import os
import pwd
import sys
from typing import Any

from mcp_supervisor.vault.safefs import PathRefused, Put, put_file

# --- the daemon's side -------------------------------------------------------------------------


def _package_root() -> str:
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


_HELPER = "import sys; sys.path.insert(0, sys.argv[1]); from mcp_supervisor.vault.owner_helper import main; main()"


def run_as(uid: int, gid: int, groups: list[int], dir_fd: int, request: dict[str, Any], data: bytes,
           timeout: float = 30.0) -> dict[str, Any]:
    """Run ``put_file`` on ``dir_fd`` in a helper process that dropped to ``uid``/``gid``.

    ``-I -S``: no environment, no user site, no ``.pth`` processing: the package is found at the
    path this module was loaded from, and the interpreter starts in milliseconds.
    """
    header = {"uid": uid, "gid": gid, "groups": groups, "dir_fd": dir_fd, **request}
    import subprocess  # here: the helper itself never needs it

    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _HELPER, _package_root()], input=json.dumps(header).encode() + b"\n" + data,
            capture_output=True, pass_fds=(dir_fd,), timeout=timeout, cwd="/",
            env={"PATH": os.defpath, "LC_ALL": "C.UTF-8"}, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise PathRefused(f"the write as uid {uid} did not finish in {timeout:.0f}s") from None
    try:
        reply = json.loads(done.stdout.splitlines()[-1])
    except (IndexError, ValueError):
        why = (done.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1][:300]
        raise PathRefused(
            f"the write as uid {uid} failed before it could report (exit status {done.returncode}"
            + (f": {why}" if why else "") + ")"
        ) from None
    if not reply.pop("ok"):
        raise PathRefused(f"as uid {uid}: {reply['error']}")
    return dict(reply)


def put_file_as_owner(dir_fd: int, name: str, data: bytes, how: Put) -> dict[str, Any]:
    """``put_file``, with the rights of the folder's owner when we are root and it is someone else's."""
    folder = os.fstat(dir_fd)
    if os.geteuid() != 0 or folder.st_uid in (0, os.geteuid()):
        return put_file(dir_fd, name, data, how)
    try:
        user = pwd.getpwuid(folder.st_uid)
        owner_gid = user.pw_gid
        groups = os.getgrouplist(user.pw_name, owner_gid)
    except KeyError:  # a uid without a passwd entry: its folder's group, nothing more
        owner_gid = folder.st_gid
        groups = [owner_gid]
    request = {"name": name, "put": how.to_json()}
    return run_as(folder.st_uid, owner_gid, groups, dir_fd, request, data)


# --- the helper's side --------------------------------------------------------------------------


def drop_to(uid: int, gid: int, groups: list[int]) -> None:
    os.setgroups(groups)
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid or os.getegid() != gid:
        raise PathRefused("could not drop privileges")


def serve(request: dict[str, Any], data: bytes) -> dict[str, Any]:
    drop_to(int(request["uid"]), int(request["gid"]), [int(g) for g in request["groups"]])
    return put_file(int(request["dir_fd"]), str(request["name"]), data, Put(**request["put"]))


def main() -> None:
    stdin = sys.stdin.buffer
    request = json.loads(stdin.readline())
    data = stdin.read()
    try:
        reply: dict[str, Any] = {"ok": True, **serve(request, data)}
    except Exception as exc:
        reply = {"ok": False, "error": str(exc) or type(exc).__name__, "errno": getattr(exc, "errno", None)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
