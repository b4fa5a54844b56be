"""A real, private Docker engine for the container tests (Debian's docker.io, no registry).

Started once per session with its own data/exec roots and socket, so it never touches a Docker the
machine may already run; stopped by its pid at the end. No image can be pulled here, so a tiny
image is imported from a tar of busybox-static; containers bind-mount the host's Python and the
repository read-only and use the host network, which is enough to run a real MCP server in one.

Use it from a test module with ``from tests.docker_engine import docker_engine  # noqa: F401`` (the
fixture is session-scoped: one engine for every module that asks). It skips, with the reason, only
where dockerd cannot run: not root, docker.io/busybox-static not installed, or the kernel refuses
what dockerd needs (mounts, namespaces). Any other start failure is an error showing dockerd's log.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IMAGE = "mcp-supervisor-test:latest"
_BUSYBOX_LINKS = ("sh", "sleep", "wget", "cat", "test", "rm", "touch", "ls", "kill")


@dataclass(frozen=True)
class DockerEngine:
    host: str  # unix:///.../docker.sock
    pid: int
    root: Path

    def docker(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", "-H", self.host, *args], capture_output=True, text=True, check=check, timeout=60
        )

    def host_mounts(self) -> list[str]:
        """Read-only bind mounts that let a busybox container run the host's Python and the repo."""
        paths = {"/usr", "/lib", "/etc", sys.base_prefix, sys.prefix, str(REPO)}
        if os.path.isdir("/lib64"):
            paths.add("/lib64")
        real_python = os.path.realpath(sys.executable)
        paths.add(str(Path(real_python).parent.parent))
        args: list[str] = []
        for path in sorted(paths):
            args += ["-v", f"{path}:{path}:ro"]
        return args


def why_no_docker() -> str | None:
    if os.geteuid() != 0:
        return "the container tests start a private dockerd, which needs root"
    for tool in ("dockerd", "docker"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install docker.io busybox-static)"
    if not (shutil.which("busybox") or os.path.exists("/bin/busybox")):
        return "busybox is not installed (apt-get install busybox-static)"
    return None


class EngineCannotRun(RuntimeError):
    """dockerd exited at start because the kernel or sandbox refuses it (a reason to skip)."""


_REFUSALS = ("operation not permitted", "permission denied", "not supported", "no such device")


def _make_image_tar(root: Path) -> Path:
    busybox = shutil.which("busybox") or "/bin/busybox"
    tar_path = root / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        for directory in ("bin", "tmp", "proc", "sys", "dev", "etc", "root", "usr", "lib", "lib64", "work"):
            info = tarfile.TarInfo(directory)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if directory == "tmp" else 0o755
            tar.addfile(info)
        tar.add(busybox, arcname="bin/busybox")
        for name in _BUSYBOX_LINKS:
            info = tarfile.TarInfo(f"bin/{name}")
            info.type = tarfile.SYMTYPE
            info.linkname = "busybox"
            tar.addfile(info)
    return tar_path


@contextlib.contextmanager
def running_engine() -> Iterator[DockerEngine]:
    root = Path(tempfile.mkdtemp(prefix="dk", dir="/tmp"))
    sock = root / "d.sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [
            "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
            f"--data-root={root}/data", f"--exec-root={root}/x", f"--pidfile={root}/d.pid",
            f"--host=unix://{sock}",
        ],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    engine = DockerEngine(host=f"unix://{sock}", pid=proc.pid, root=root)
    try:
        deadline = time.monotonic() + 30
        while engine.docker("version", check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
                if proc.poll() is not None and any(r in tail.lower() for r in _REFUSALS):
                    raise EngineCannotRun(tail.strip().splitlines()[-1] if tail.strip() else "no log")
                raise RuntimeError(f"dockerd did not start (exit {proc.poll()}); its log ends:\n{tail}")
            time.sleep(0.1)
        engine.docker("import", str(_make_image_tar(root)), IMAGE)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            ids = engine.docker("ps", "-aq", check=False).stdout.split()
            if ids:
                engine.docker("rm", "-f", *ids, check=False)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """dockerd leaves mounts in its exec root (netns/default, an nsfs); unmount deepest first."""
    prefix = str(root) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4] for line in lines if len(line.split()) > 4]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """One private engine for the session; skips only where dockerd cannot run at all."""
    reason = why_no_docker()
    if reason:
        pytest.skip(f"no Docker engine for the container tests: {reason}")
    try:
        engine_cm = running_engine()
        engine = engine_cm.__enter__()
    except EngineCannotRun as exc:
        pytest.skip(f"dockerd cannot run here: {exc}")
    try:
        yield engine
    finally:
        engine_cm.__exit__(None, None, None)
