"""``gateway serve --workers N``: N processes serving the same listening sockets.

The design notes: docs/internals.md, "gateway/server/workers.py"."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

from uvicorn.config import STARTUP_FAILURE

__all__ = ["run_workers"]

logger = logging.getLogger("gateway.error")
# What the parent is doing, as against what went wrong.
logger_info = logging.getLogger("gateway")


_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


# prctl(2): the signal a process gets when its parent dies (Linux).
_PR_SET_PDEATHSIG = 1


def _stop_with_parent(parent: int) -> None:
    """A SIGTERM (a graceful stop) to this worker when its parent dies, even by SIGKILL: in a group
    of its own, nothing else would stop it, and it would hold the listening sockets against the
    next start. Linux only; elsewhere a killed parent leaves its workers to be stopped by hand."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


def _fork(serve: Callable[[int], None], index: int) -> int:
    """Fork a worker; called with the stop signals blocked, which the worker unblocks."""
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the worker
        # A group of its own: a terminal's Ctrl-C reaches the parent only, which passes a single
        # SIGTERM on (two signals would make the worker skip its graceful shutdown).
        os.setpgid(0, 0)
        _stop_with_parent(parent)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)  # run_servers installs its own on its loop
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        code = 0
        try:
            serve(index)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            logger.exception("worker %d failed", os.getpid())
            code = 1
        finally:
            logging.shutdown()
            os._exit(code)
    return pid


def run_workers(count: int, serve: Callable[[int], None]) -> int:
    """Run ``serve(index)`` in ``count`` forked workers until told to stop; the exit status. A
    worker that replaces another gets its index (its metrics slot)."""
    workers: dict[int, int] = {}  # pid -> its index
    stopping = False
    status = 0

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping and signum == signal.SIGINT:
            for pid in workers:  # a second Ctrl-C: no more waiting
                _kill(pid, signal.SIGKILL)
        stopping = True
        for pid in workers:
            _kill(pid, signal.SIGTERM)

    # Before forking: a signal in between must not end the parent alone (workers reset them,
    # still blocked, before they unblock them).
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def spawn(index: int) -> int:
        # Blocked from the fork until the worker is on the list: a stop signal in between would
        # otherwise miss it, and the parent would wait for it for ever.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = _fork(serve, index)
            workers[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        return pid

    for index in range(count):
        if stopping:
            break
        spawn(index)
    logger_info.info("started %d workers: %s", count, ", ".join(map(str, workers)))

    while workers:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid not in workers:
            continue
        index = workers.pop(pid)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(wait_status)
        if code == STARTUP_FAILURE:
            logger.error("worker %d failed to start; stopping the others", pid)
            stopping, status = True, 1
            for other in workers:
                _kill(other, signal.SIGTERM)
            continue
        replacement = spawn(index)
        logger.warning("worker %d exited (status %d); started worker %d in its place", pid, code, replacement)
    return status


def _kill(pid: int, sig: signal.Signals) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
