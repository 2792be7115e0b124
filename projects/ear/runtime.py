"""The serving process's tuning: torch's threads, the master's pages, the worker's heap and its
life, children forked for work. Called from Gunicorn's hooks (`deploy/gunicorn.conf.py`), `ear
serve` and `ear worker`; each function says the operational reason it exists. torch is imported
by the functions that tune it, not here: `ear worker`'s waiting process (standby.py) uses the
rest and must not hold torch.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Callable

from .db import close_idle
from .config import Config
from .errors import EarError

if TYPE_CHECKING:
    from .embed import Model

_MADV_PAGEOUT = 21  # Linux ≥ 5.4
_M_ARENA_MAX = -8  # mallopt's parameter
_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def load_model_before_fork(config: Config) -> Model:
    """Load torch and the weights in Gunicorn's master, for the worker to inherit, on one
    thread: a thread pool started here would deadlock the forked worker, which sets its own
    limits (`configure_threads`, from deploy/gunicorn.conf.py)."""
    import torch
    from .models import serving_model
    torch.set_num_threads(1)
    return serving_model(config)


def configure_threads(threads: int, interop_threads: int) -> None:
    """Limit torch's CPU threads (the VPS has 1–2 cores shared with the web site)."""
    import torch
    torch.set_num_threads(max(1, threads))
    try:
        torch.set_num_interop_threads(max(1, interop_threads))
    except RuntimeError:  # only settable before the first parallel work; keep what is set
        pass


def page_out_torch() -> None:
    """Hand the pages of torch's libraries that this process has touched back to the kernel
    (madvise MADV_PAGEOUT). For Gunicorn's master: it loads the model for the worker to inherit
    but never runs it, and the tens of MB of library code its import ran would otherwise stay
    mapped in it alone, counted as its private memory. The worker maps what it uses itself."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            if len(fields) >= 6 and "/torch/lib/" in fields[5]:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                _libc.madvise(start, end - start, _MADV_PAGEOUT)  # a no-op where unsupported


def trim_heap() -> None:
    """Give the heap that glibc kept after a request back to the kernel: a query's arrays are
    freed by then, and the worker's memory should be what it holds, not its peak."""
    _libc.malloc_trim(0)


def in_a_child(work: Callable[[], None]) -> None:
    """Run `work` in a forked child and wait for it. For a long-lived process's start (Gunicorn's
    master, `ear worker`): a look at every library (tidying, finding unfinished rebuilds) opens
    each in turn, and what that allocates would stay in this process's heap as holes (tens of
    MB with 100 libraries, docs/libraries.md); in a child it goes when the child ends."""
    _, status = os.waitpid(fork_child(work), 0)
    if status:
        raise EarError("start_failed", f"{getattr(work, '__name__', 'starting')} failed in a child "
                       "process: its traceback is above.", 500)


def fork_child(work: Callable[[], None]) -> int:
    """Fork a child that runs `work` and exits, 0 if it returned and 1 if it raised (its
    traceback on stderr); the child's pid. The database pool's idle connections are closed
    first: a child must not share them. The child is SIGKILLed if this process dies (one holding
    a lock of its parent's would keep the restarted parent out), and SIGTERM and SIGINT end it
    until `work` says otherwise (it must not run the parent's handlers)."""
    close_idle()
    sys.stdout.flush()
    sys.stderr.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # it died before that was set
                os._exit(status)
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            work()
            status = 0
        except BaseException:  # noqa: BLE001 - told, then the parent says it failed
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)
    return pid


def one_heap() -> None:
    """One malloc arena for all of this process's threads (mallopt M_ARENA_MAX), set before any
    thread starts. Gunicorn's worker has two threads, either of which may run a query, and `ear
    worker` its heartbeat and FFmpeg's timers: with an arena each (glibc's default), the heap
    each grew at its peak is kept apart, 20-50 MB more in all (docs/scaling.md)."""
    _libc.mallopt(_M_ARENA_MAX, 1)


def die_with_parent() -> None:
    """Be sent SIGTERM when the parent dies: a worker orphaned by a killed master would hold
    the port, and the master Supervisor restarts could not bind it."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
