"""One sweep writes a store at a time: a lock file beside it, owned by a host and a process.

Job: take the lock before any work (``StoreLock.acquire``), refuse a second sweep in one line
naming the owner, take over the lock of a dead owner on this host with a log line, release it
on every exit path (``release``; a killed process leaves the file, which the next sweep takes
over).

The lock is ``<store>.lock`` next to the store, not inside it: zarr warns about every file in a
hierarchy that is not a node, and readers of a running sweep would see that warning. The file
holds the owner (host, pid, the pid's start time from /proc, since when); the owner also holds a
``flock`` on it, which the kernel drops when the process dies, so a lock whose flock can be taken
has no live owner on this host. A pid alone is not proof: after a reboot or a long run it may
name another process, hence the start time. A lock of another host is never taken over
automatically (its process cannot be checked from here): the message says which file to remove.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time

logger = logging.getLogger(__name__)


class LockHeld(Exception):
    """Another sweep owns the store (or may: a lock of another host); one-line message."""


def lock_path(store: str) -> str:
    return os.path.abspath(store).rstrip("/") + ".lock"


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, started: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return started is None or start_time(pid) in (None, started)


def _flock(fd: int) -> bool:
    """Take the flock without waiting: False if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:  # a file system without flock: the pid check decides alone
        if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    return True


def _read(fd: int) -> dict:
    try:
        raw = os.pread(fd, 65536, 0)
        owner = json.loads(raw.decode()) if raw.strip() else {}
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def describe(owner: dict) -> str:
    if not owner:
        return "another sweep"
    return (f"the sweep of pid {owner.get('pid')} on host {owner.get('host')} "
            f"(since {owner.get('since')})")


class StoreLock:
    """The lock of one store, held by this process until ``release``."""

    def __init__(self, path: str, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store: str) -> StoreLock:
        """Take the lock of ``store`` or raise LockHeld naming its owner.

        OSError (a read-only file system, a missing directory) is the caller's to report.
        """
        path = lock_path(store)
        host = socket.gethostname()
        for _ in range(10):  # the file may vanish between open and flock: a release
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue
                created = False
            try:
                if not _flock(fd):
                    raise LockHeld(f"{store} is being written by {describe(_read(fd))}; "
                                   "one sweep writes a store at a time")
                try:
                    current = os.stat(path)
                except FileNotFoundError:
                    current = None
                mine = os.fstat(fd)
                if current is None or (current.st_ino, current.st_dev) != (mine.st_ino,
                                                                             mine.st_dev):
                    os.close(fd)
                    continue  # released and removed while we opened it: try again
                owner = {} if created else _read(fd)
                if owner:
                    cls._check_dead(store, path, owner, host)
                    logger.warning("taking over the lock %s of %s: that process is gone",
                                   path, describe(owner))
                me = {"host": host, "pid": os.getpid(), "start": start_time(os.getpid()),
                      "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "argv": sys.argv[:8]}
                data = json.dumps(me).encode()
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
                os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
            return cls(path, fd)
        raise LockHeld(f"{store}: its lock {path} keeps changing; another sweep is starting")

    @staticmethod
    def _check_dead(store: str, path: str, owner: dict, host: str) -> None:
        if owner.get("host") != host:
            raise LockHeld(
                f"{store} is locked by {describe(owner)}; a lock of another host is not taken "
                f"over: if that sweep no longer runs, remove {path}"
            )
        pid = owner.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid, owner.get("start")):
            raise LockHeld(f"{store} is being written by {describe(owner)}; "
                           "one sweep writes a store at a time")

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the flock; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            mine, current = os.fstat(fd), os.stat(self.path)
            if (current.st_ino, current.st_dev) == (mine.st_ino, mine.st_dev):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
