"""What a watched config looks like now: read safely, hashed and validated, in one step.

Why apart: the backup, the watcher and ``accept`` all judge a file from the same look at it, and
that look is the part that reads a user's folder (``safefs``: no links followed, no FIFO opened,
no file larger than a config may be), so it is kept small and on its own.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from mcp_supervisor.config import WatchedConfig
from mcp_supervisor.vault.manifest import sha256
from mcp_supervisor.vault.placement import os_reason
from mcp_supervisor.vault.safefs import PathRefused, open_dir, read_regular
from mcp_supervisor.vault.validate import Validation, validate


@dataclass(frozen=True)
class FileCheck:
    """What a watched file looks like now."""

    exists: bool
    content: bytes | None
    problem: str | None  # None when usable
    validation: Validation | None
    info: os.stat_result | None = None
    digest: str | None = None

    @property
    def map_missing_only(self) -> bool:
        v = self.validation
        return v is not None and v.map_missing and len(v.problems) == 1 and self.problem == v.problems[0]


def check_file(watched: WatchedConfig) -> FileCheck:
    """Read and validate ``watched`` (sync: callers run it in a worker thread)."""
    path = watched.path
    try:
        folder = open_dir(str(path.parent))
    except FileNotFoundError:
        return FileCheck(False, None, f"its folder {path.parent} is missing", None)
    except OSError as exc:
        return FileCheck(False, None, f"cannot open its folder: {os_reason(exc)}", None)
    try:
        read = read_regular(folder, path.name)
    except FileNotFoundError:
        return FileCheck(False, None, "file is missing", None)
    except OSError as exc:
        return FileCheck(True, None, os_reason(exc) if isinstance(exc, PathRefused) else f"cannot read: {os_reason(exc)}", None)
    finally:
        os.close(folder)
    mode = stat.S_IMODE(read.info.st_mode)
    digest = sha256(read.content)
    if not mode & stat.S_IRUSR:
        return FileCheck(True, read.content, f"mode {mode:04o}: the owner cannot read it", None, read.info, digest)
    result = validate(watched.format, read.content, watched.required_keys)
    problem = None if result.ok else "; ".join(result.problems)
    return FileCheck(True, read.content, problem, result, read.info, digest)
