"""Gunicorn settings for ear: `gunicorn -c deploy/gunicorn.conf.py` is all it takes.

One worker, with two threads (memory is the scarce resource on a small VPS), the app preloaded in the master so
the catalog and the embedding model are loaded once before the fork (the database connection is closed before it, and
the fingerprint files are read-only maps, safe to share), and a timeout long enough for a
50 MB upload to be kept (`ear worker` adds it, not this worker). Port and data directory come from ear's own configuration (EAR_* / .env).
"""
from ear.config import load_config
from ear.errors import EarError
from ear.storage import ensure_writable

_config = load_config()

wsgi_app = "ear.wsgi:app"
workers = 1
# Two threads in the one worker: a quick request (a job's state an uploader polls, a track)
# answers while a query computes, instead of waiting ~200 ms behind it. Queries still run one
# at a time (routes/helpers.one_query_at_a_time), so memory stays one query's.
worker_class = "gthread"
threads = 2
preload_app = True
timeout = 120
graceful_timeout = 30
bind = f"127.0.0.1:{_config.port}"
# The control socket (Gunicorn ≥ 23) lives with the data, never in a shared or unwritable place.
try:
    ensure_writable(_config.data_dir)
except EarError as exc:  # a setting to fix: one line in the log, not a traceback
    raise SystemExit(f"ear: {exc.message}") from None
control_socket = str(_config.data_dir.resolve() / "gunicorn.ctl")
accesslog = "-"
errorlog = "-"


def pre_fork(server, worker) -> None:
    # The master never runs the model: its copy of torch's library pages would stay its own
    # (~50 MB of private memory) while the worker maps what it uses itself.
    from ear.runtime import page_out_torch
    page_out_torch()
    # On PostgreSQL the master's start-up left connections in the pool: a worker inheriting
    # them would talk over the master's sockets (and, on the next fork, a second worker too).
    from ear.db import close_idle
    close_idle()


def post_fork(server, worker) -> None:
    # If the master is killed (SIGKILL), the worker must go too: an orphan would hold the port
    # for up to a minute and the master Supervisor restarts could not bind it.
    from ear.runtime import configure_threads, die_with_parent, one_heap
    die_with_parent()
    # Before the worker's threads start: one malloc arena for both, not a query's heap in each.
    one_heap()
    # torch's thread pools do not survive a fork (a pool started in the master deadlocks the
    # worker), so the master never starts one: the limits are set here, in the worker.
    configure_threads(_config.torch_threads, _config.torch_interop_threads)


def post_request(worker, req, environ, resp) -> None:
    # A query's arrays (spectrogram, hits, votes) are freed by then, but glibc keeps the heap
    # they grew; hand it back so that the worker's memory is what it holds, not its peak.
    from ear.runtime import trim_heap
    trim_heap()


def worker_exit(server, worker) -> None:
    # The request in flight is done by now (graceful stop), and every write but the query log's
    # was fsynced when it was made: its last rows (up to a second's) are written here, so that an
    # answer given just before a restart can still take its feedback (test_supervisor). Then
    # skipping the interpreter's teardown of torch saves a second on each restart.
    import os
    from ear.querylog import close_all
    close_all()
    os._exit(0)


def on_exit(server) -> None:
    import os
    os._exit(0)
