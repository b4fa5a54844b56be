"""A real, private Docker engine for the container tests (Debian's docker.io, no registry).

Started once per session with its own data/exec roots and socket, so it never touches a Docker the
machine may already run; stopped by its pid at the end. No image can be pulled here, so a tiny
image is imported from a tar of busybox-static; containers bind-mount the host's Python and the
repository read-only and use the host network, which is enough to run a real MCP server in one.
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
                raise RuntimeError(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
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
        subprocess.run(["umount", "-R", str(root / "x")], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
