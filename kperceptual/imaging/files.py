"""Atomic file writes: a reader never sees half a file, and a failed write leaves nothing.

Every file the project writes goes through ``atomic_path`` (or ``write_atomically``): images,
videos, checkpoints, ``.keras`` files, configs, reports, exports and cached weights. A write that
is interrupted (``kill -9``, a full disk, an exception) leaves the previous file as it was.

No TensorFlow here: images, videos and exports all write through this module.
"""

from __future__ import annotations

import contextlib
import os
import secrets

TEMPORARY_PREFIX = ".tmp-"  # hidden, and unique per write: ``.tmp-<pid>-<random>-<name>``


def temporary_name(path: str) -> str:
    """A fresh temporary path beside ``path``, ending in ``path``'s whole file name (so writers
    that choose their format by it, ``.keras``, ``.weights.h5``, still work), hidden, and
    unique to this process and call (two writers of one file never share it)."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{TEMPORARY_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def _sync(path: str) -> None:
    """Flushes a written file to the disk (so a crash after the rename cannot leave it empty)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str, overwrite: bool = True):
    """Yields a temporary path beside ``path`` (see ``temporary_name``); once the block ends
    without an exception, the file there is synced and renamed to ``path``. Without
    ``overwrite`` an existing ``path`` is never replaced, even one another process creates
    meanwhile: ``FileExistsError``. Whatever is left at the temporary path is removed either
    way."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_name(path)
    try:
        yield tmp
        _sync(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if path exists: no check-then-rename race
            except FileExistsError:
                raise FileExistsError(f"{path}: already exists (pass --overwrite to replace "
                                      "it)") from None
            except OSError:  # a file system without hard links
                if os.path.exists(path):
                    raise FileExistsError(f"{path}: already exists (pass --overwrite to "
                                          "replace it)") from None
                os.replace(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def write_atomically(path: str, content: bytes, overwrite: bool = False) -> str:
    """Writes ``content`` to ``path`` by a rename; an existing file needs ``overwrite``."""
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass --overwrite to replace it)")
    with atomic_path(path, overwrite=overwrite) as tmp:
        with open(tmp, "wb") as f:
            f.write(content)
    return path


def remove_stale_temporaries(folder: str) -> None:
    """Removes the temporary files of writes in ``folder`` that were killed (``kill -9``) by
    processes that are gone; live processes' are left alone."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not name.startswith(TEMPORARY_PREFIX):
            continue
        pid = name[len(TEMPORARY_PREFIX):].partition("-")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            with contextlib.suppress(OSError):
                os.remove(os.path.join(folder, name))


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LockedError(RuntimeError):
    """Another process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path: str):
    """Holds an exclusive lock on the file ``path`` (created if needed; it records this
    process's id and host) for the block, or raises ``LockedError`` naming the holder at once.
    The operating system releases the lock when its process ends in any way (``kill -9``
    too), so a killed run's lock file is never stale: the next run simply takes it."""
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows): not locked
        yield
        return
    import socket

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise LockedError(f"{path}: held by {holder}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
