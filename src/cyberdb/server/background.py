"""Work on a frozen copy of the tables without stopping the event loop: ``run_in_child(work)``.

Saving 1M small keys takes ~100 ms of encoding; done inside the loop, that would stall every client.  Like
Redis's BGSAVE, the server forks: the child sees the memory exactly as it was at the fork (copy-on-write) and
encodes and writes it while the parent goes on serving.  Forking copies only page tables (a few ms for
gigabytes); pages the parent writes afterwards are copied one by one.  The child runs ``work`` and exits
with ``os._exit`` (no atexit, no loop, no logging: the parent's threads and their locks did not come along);
it reports a failure as text on a pipe.  Where ``fork`` does not exist (Windows), ``work`` runs inline and the
loop waits for it (documented in docs/persistence.md).
"""

from __future__ import annotations

import concurrent.futures
import gc
import logging
import os
import signal
import threading
import warnings
from collections.abc import Callable

from ..errors import PersistenceError

__all__ = ["CAN_FORK", "run_in_child"]

logger = logging.getLogger(__name__)
CAN_FORK = hasattr(os, "fork")
_MAX_MESSAGE = 4096


def run_in_child(work: Callable[[], None], what: str) -> tuple[concurrent.futures.Future[None], int]:
    """Run ``work()`` on a copy-on-write image of this process; the future ends when it has.

    Returns the future and the child's pid (0 when ``work`` ran inline).  The future's exception is a
    :class:`PersistenceError` saying why the child failed.
    """
    done: concurrent.futures.Future[None] = concurrent.futures.Future()
    if not CAN_FORK:
        try:
            work()
            done.set_result(None)
        except Exception as exc:  # noqa: BLE001 - handed to the caller
            done.set_exception(_as_persistence_error(exc, what))
        return done, 0
    read_fd, write_fd = os.pipe()
    try:
        with warnings.catch_warnings():
            # Python 3.12+ warns that fork() in a threaded process may deadlock the child: this child only
            # encodes and writes memory and never takes a lock another thread could hold
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        done.set_exception(PersistenceError(f"{what} failed: cannot fork: {exc}"))
        return done, 0
    if pid == 0:  # pragma: no cover - the child; its outcome is checked by the parent's tests
        _child(work, read_fd, write_fd)
    os.close(write_fd)
    threading.Thread(target=_wait, args=(pid, read_fd, what, done), name=f"cyberdb-{what}", daemon=True).start()
    return done, pid


def _child(work: Callable[[], None], read_fd: int, write_fd: int) -> None:  # pragma: no cover
    code = 1
    try:
        os.close(read_fd)
        # the loop's signal handlers write to a wakeup fd shared with the parent: a Ctrl-C reaching this
        # child must not stop the parent twice, nor the child linger
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        gc.disable()  # a collection would touch every object and copy the parent's pages for nothing
        # the listening socket and the clients' sockets must close when the parent closes them: keep only
        # the pipe (the work opens its own files)
        os.closerange(3, write_fd)
        os.closerange(write_fd + 1, _max_fd())
        work()
        code = 0
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        try:
            os.write(write_fd, f"{type(exc).__name__}: {exc}".encode(errors="replace")[:_MAX_MESSAGE])
        except OSError:
            pass
    finally:
        os._exit(code)


def _die_with_parent() -> None:  # pragma: no cover - the child
    # an orphan would go on writing a file nobody will rename (and hold memory) after the server was killed
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG (Linux; elsewhere the child finishes on its own)
        if os.getppid() == 1:  # the parent died before prctl: nobody will read the result
            os._exit(1)
    except (OSError, AttributeError):
        pass


def _wait(pid: int, read_fd: int, what: str, done: concurrent.futures.Future[None]) -> None:
    chunks = []
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            while chunk := pipe.read(_MAX_MESSAGE):
                chunks.append(chunk)
        _pid, status = os.waitpid(pid, 0)
    except OSError as exc:  # e.g. someone else reaped the child: its outcome is unknown
        done.set_exception(PersistenceError(f"{what} failed: cannot wait for the child: {exc}"))
        return
    code = os.waitstatus_to_exitcode(status)
    if code == 0:
        done.set_result(None)
        return
    message = b"".join(chunks).decode(errors="replace") or (
        f"killed by signal {-code}" if code < 0 else f"exit code {code}")
    done.set_exception(PersistenceError(f"{what} failed: {message}"))


def _max_fd() -> int:  # pragma: no cover - the child
    try:
        return max(int(os.sysconf("SC_OPEN_MAX")), 1 << 16)
    except (ValueError, OSError):
        return 1 << 16


def _as_persistence_error(exc: Exception, what: str) -> PersistenceError:
    return exc if isinstance(exc, PersistenceError) else PersistenceError(f"{what} failed: {exc}")
