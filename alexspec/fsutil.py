"""Writing files so that a crash never leaves a half-written one behind."""
from __future__ import annotations

import errno
import os
from pathlib import Path
import re
import socket
import tempfile
from typing import Callable

_TEMPORARY = re.compile(r"^\.(.+)\.[A-Za-z0-9_]+\.tmp$")  # what write_atomic's mkstemp names look like


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder, fsync, then rename; the
    folder is made where there is none (as `mkdir -p`).

    Readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileExistsError:  # a part of the folder's path is a file
        raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    except OSError as exc:  # say the file the caller asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, _mode_for(path))  # mkstemp makes 0600; the file gets the mode open() would give it
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # a full disk, or `path` a folder: name the file asked for
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _mode_for(path: Path) -> int:
    """The permissions of the file at `path` if there is one, else what open() would give a new one
    (0666 less the process's umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_UMASK


def _read_umask() -> int:
    mask = os.umask(0)  # the only way to read it is to set it: done once, at import, before threads start
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def remove_stray_temporaries(folder: str | Path) -> list[Path]:
    """Delete the temporary files write_atomic left in `folder` when a process was killed mid-write
    (SIGKILL, power loss: no `finally` runs); returns those removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = [p for p in folder.iterdir() if _TEMPORARY.match(p.name) and p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def lock_folder(folder: Path, name: str, busy: Callable[[str], Exception]):
    """An exclusive lock on `folder` (its file `name`, which the kernel unlocks when the process
    ends, however it ends), held until the returned handle is closed. Where another process holds
    it, raises busy(who holds it: "process PID on HOST", or "")."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / name, "a+", encoding="utf-8")
    try:
        import fcntl
    except ImportError:  # not a POSIX system: no lock to take
        return handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return handle  # a file system that cannot lock (some network mounts): go on unlocked
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise busy(holder) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    return handle
