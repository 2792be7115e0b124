"""`ear worker`, the process Supervisor keeps: it holds the worker's name, waits for jobs, and
has them done by a child (worker.py) that goes away when the queue has been empty a while.

The queue is empty most of the time, and waiting on it needs only the database: about 23 MB.
Doing a job needs torch, the model and an analysis's heap, about 200 MB more, which a small VPS
would rather give the site between uploads. So this process never imports torch: when a job
waits it forks a child, which claims and does it and every job queued after it, and exits once
the queue has been empty for EAR_WORKER_LINGER_S. What the child loaded goes with it; loading it
again costs the next upload 1–3 s of CPU (docs/jobs.md).

A worker's name (EAR_WORKER_NAME, else the host's) is its own: a lock in the data folder stops a
second worker of that name, so at its start, and whenever its child is killed, a worker may put
back in the queue what it was running. Every child inherits the lock and is killed with this
process, so a restarted worker never finds its name held by an orphan. A child that fails (it
cannot load the model, say) stops the worker too, so that Supervisor says so, and the jobs stay
queued.

SIGTERM or SIGINT: the child gives its job back at its next block and exits, then this process.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import socket
import time

from . import jobs
from .config import Config
from .db import init_db
from .errors import EarError
from .runtime import configure_threads, fork_child, in_a_child, one_heap
from .storage import ensure_writable, locked

log = logging.getLogger(__name__)
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def worker_name(config: Config) -> str:
    """The worker's name: it names the worker's lock file, so it is a plain file name."""
    name = config.worker_name or socket.gethostname()
    if not _NAME.fullmatch(name):
        raise EarError("bad_worker_name", f"A worker's name is letters, digits, '.', '_' and '-' "
                       f"(EAR_WORKER_NAME={name!r}).")
    return name


class Standby:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.name = worker_name(config)
        self._stopping = False  # a flag, not an Event: a signal handler must not take a lock
        self._child = 0

    def run(self, until_idle: bool = False, poll_s: float = 1.0) -> None:
        """Hand the queue's jobs to children, one child at a time, until stopped, or with
        `until_idle` until the queue is empty (the child then lingers for nothing)."""
        one_heap()  # before any thread: the children inherit it
        ensure_writable(self.config.data_dir)
        init_db(self.config.database)
        lock = self.config.data_dir / f"worker-{self.name}.lock"
        with locked(lock, wait=False) as mine:
            if not mine:
                raise EarError("worker_running", f"An ear worker named {self.name} is running "
                               f"already (it holds {lock}); give another EAR_WORKER_NAME.", 409)
            jobs.requeue_own(self.name)
            in_a_child(self._catch_up)
            log.info("ear worker %s: waiting for jobs", self.name)
            while not self._stopping:
                waits = jobs.unless_unreachable(jobs.waiting, time.sleep)
                if waits:
                    self._hand_over(0.0 if until_idle else self.config.worker_linger_s)
                elif waits is None:  # the database did not answer: ask again
                    continue
                elif until_idle:
                    break
                else:
                    time.sleep(poll_s)

    def stop_on_signals(self) -> None:
        for sig in _STOP_SIGNALS:
            signal.signal(sig, self._on_signal)

    def _on_signal(self, sig: int, _frame) -> None:
        self._stopping = True
        if self._child:
            try:
                os.kill(self._child, sig)
            except ProcessLookupError:  # it ended just now
                pass

    def _hand_over(self, linger_s: float) -> None:
        """Fork the child that does the jobs; wait for it to end. The stop signals wait until
        the child has its own handlers, so a stop is never lost between."""
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            if self._stopping:
                return
            self._child = fork_child(lambda: self._child_main(linger_s))
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        _, status = os.waitpid(self._child, 0)
        self._child = 0
        if os.WIFSIGNALED(status):  # killed (out of memory, say): what it was doing goes back
            log.warning("ear worker %s: its child was killed (signal %d); its job goes back to "
                        "the queue", self.name, os.WTERMSIG(status))
            jobs.requeue_own(self.name)
        elif os.WEXITSTATUS(status):
            jobs.requeue_own(self.name)
            raise EarError("worker_failed", f"ear worker {self.name}: the child doing the jobs "
                           "failed (its traceback is above); the jobs stay queued.", 500)

    def _child_main(self, linger_s: float) -> None:
        """In the child: load what the jobs need, then do them."""
        from .catalog import Catalog  # only here: the process that waits never loads torch
        from .worker import Worker
        configure_threads(self.config.worker_torch_threads, self.config.torch_interop_threads)
        worker = Worker(Catalog(self.config), self.name)
        worker.stop_on_signals()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        ended = worker.run(linger_s)
        log.info("ear worker %s: %d jobs ended; its child goes, and the memory it loaded with it",
                 self.name, ended)

    def _catch_up(self) -> None:
        """In a child, at the start: tidy the catalog, and queue what the worker's last life did
        not get to: rebuilds, and libraries still to follow a change of model."""
        from .catalog import Catalog
        from .reembed import queue_behind
        catalog = Catalog(self.config)
        catalog.tidy()
        for shelf in catalog.every_library():
            if shelf.index.needs_rebuild():
                catalog.request_rebuild(shelf.name)
        queue_behind(catalog)
