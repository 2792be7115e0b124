"""`ear busy`'s phases, measured on a running service (busy.py starts it): idle, bulk and queued
/identify latency, the job API's latency, the ear worker's CPU (/proc/PID/stat, its waited-for
children, FFmpeg, included) and the processes' memory (/proc/PID/smaps_rollup). All into one
`Results`; nothing here imports torch or numpy (see busy.py).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from .busy_tables import Results, Status
from .service_memory import _proc, _smaps, children

TOKEN = "ear-busy"  # the admin token of the service busy.py starts: its own, for one run
AUTH = {"Authorization": f"Bearer {TOKEN}"}
_POLL_S = 0.5  # an admin page polling its job twice a second
_LIST_SAMPLES = 20  # GET /jobs answers the newest 100 however long the queue: a few suffice
_SEED = 14  # which queued jobs are looked up: the same every run


def measure(url: str, pids: dict[str, int], worker: subprocess.Popen, clips: list[tuple[int, Path]],
            uploads: list[Path], rounds: int, results: Results) -> None:
    """The phases in turn: idle, bulk, queued (`worker` stopped for it); the memory of the
    processes `pids` names before the bulk and after it."""
    results.clips = len(clips)
    results.load["at the start"] = _load()
    _identify(url, clips[:1], 1, Status("warm-up"))  # the first query loads what it needs
    results.identify["idle"] = _identify(url, clips, rounds, Status("idle /identify"))
    results.memory["before"] = _memory(pids)
    _bulk(url, uploads, worker.pid, clips, results)
    results.memory["after"] = _memory(pids)
    results.load["after the bulk"] = _load()
    stop(worker)
    _queued(url, results.queued, clips, rounds, results)
    results.load["at the end"] = _load()


def _load() -> float:
    """The machine's 1-minute load average: whether something else ran meanwhile."""
    return float(Path("/proc/loadavg").read_text().split()[0])


def _identify(url: str, clips: list[tuple[int, Path]], rounds: int, status: Status,
              until: threading.Event | None = None) -> list[tuple[float, str]]:
    """Each clip in turn to /identify, `rounds` times (or until `until` is set): per query its latency
    (ms) and how it went: right (the clip's track first), wrong, or error."""
    session, samples = requests.Session(), []
    bodies = [(track_id, path.read_bytes()) for track_id, path in clips]
    n = 0
    while (n < rounds * len(bodies)) if until is None else not until.is_set():
        track_id, body = bodies[n % len(bodies)]
        ms, answer = _timed(session.post, url + "/identify", data=body,
                            headers={"Content-Type": "audio/webm"})
        if answer.status_code != 200:
            samples.append((ms, "error"))
        else:
            matches = answer.json()["matches"]
            samples.append((ms, "right" if matches and matches[0]["track"]["id"] == track_id else "wrong"))
        n += 1
        status.say(f"{n} queries")
    status.done()
    return samples


def _timed(call, *args, **kwargs) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    answer = call(*args, timeout=300, **kwargs)
    answer.content  # the whole answer, read
    return (time.perf_counter() - started) * 1000, answer


def _bulk(url: str, uploads: list[Path], worker_pid: int, clips: list[tuple[int, Path]],
          results: Results) -> None:
    """POST every upload at once while /identify goes on, until every job has ended (the
    index rebuild after them too)."""
    all_ended, queries = threading.Event(), []
    thread = threading.Thread(target=lambda: queries.extend(
        _identify(url, clips, 0, Status("bulk /identify", quiet=True), all_ended)), daemon=True)
    session, status = requests.Session(), Status("bulk")
    (own, children), started = _cpu_seconds(worker_pid), time.perf_counter()
    thread.start()
    ids = []
    for n, path in enumerate(uploads, 1):
        files = {"audio": (path.name, path.read_bytes())}
        ms, answer = _timed(session.post, url + "/tracks", files=files, headers=AUTH)
        answer.raise_for_status()
        results.post["bulk"].append(ms)
        ids.append(answer.json()["job"]["id"])
        status.say(f"{n}/{len(uploads)} uploads posted")
    ended = _follow(session, url, ids, results.get["bulk"], status)
    while sum(session.get(url + "/health", headers=AUTH, timeout=60).json()["jobs"].values()):
        time.sleep(_POLL_S)  # the index rebuild queued after the uploads
    own_after, children_after = _cpu_seconds(worker_pid)
    results.worker_cpu_s = own_after + children_after - own - children
    results.ffmpeg_cpu_s = children_after - children
    results.bulk_s = time.perf_counter() - started
    all_ended.set()
    thread.join()
    status.done()
    results.identify["bulk"] = queries
    results.jobs = ended


def _follow(session: requests.Session, url: str, ids: list[int], latencies: list[float],
            status: Status) -> list[dict]:
    """GET /jobs/<id> of the oldest job not ended, every _POLL_S, until all have: the jobs as
    they ended."""
    ended = []
    while len(ended) < len(ids):
        ms, answer = _timed(session.get, f"{url}/jobs/{ids[len(ended)]}", headers=AUTH)
        latencies.append(ms)
        job = answer.json()["job"]
        if job["status"] in ("done", "failed"):
            ended.append(job)
        else:
            time.sleep(_POLL_S)
        status.say(f"{len(ended)}/{len(ids)} jobs ended")
    return ended


def _queued(url: str, count: int, clips: list[tuple[int, Path]], rounds: int, results: Results) -> None:
    """With the worker stopped: `count` small uploads (one clip's bytes, each POST a job), then
    /identify and the job API with them all queued."""
    session, status = requests.Session(), Status("queueing")
    body, ids = clips[0][1].read_bytes(), []
    for n in range(count):
        ms, answer = _timed(session.post, url + "/tracks", headers=AUTH,
                            files={"audio": (f"queued{n}.webm", body)})
        answer.raise_for_status()
        results.post["queued"].append(ms)
        ids.append(answer.json()["job"]["id"])
        status.say(f"{n + 1}/{count} posted")
    status.done()
    results.queued_seen = session.get(url + "/health", headers=AUTH, timeout=60).json()["jobs"]["queued"]
    results.identify["queued"] = _identify(url, clips, rounds, Status("queued /identify"))
    rng = random.Random(_SEED)
    for _ in range(rounds * len(clips) if ids else 0):
        ms, _ = _timed(session.get, f"{url}/jobs/{rng.choice(ids)}", headers=AUTH)
        results.get["queued"].append(ms)
    for _ in range(_LIST_SAMPLES):
        ms, _ = _timed(session.get, url + "/jobs", headers=AUTH)
        results.list_ms.append(ms)


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU seconds of `ear worker` and of the child doing its jobs (standby.py; it lingers after
    the last job, so it is alive when this is read): their own (utime + stime of /proc/PID/stat)
    and that of the children they have waited for (cutime + cstime: the FFmpegs)."""
    tick, own, waited = os.sysconf("SC_CLK_TCK"), 0, 0
    for one in [pid, *children(pid)]:
        stat = _proc(one, "stat")
        if stat:
            fields = [int(x) for x in stat.rpartition(")")[2].split()[11:15]]
            own, waited = own + fields[0] + fields[1], waited + fields[2] + fields[3]
    return own / tick, waited / tick


def _memory(pids: dict[str, int]) -> dict[str, tuple[float, float]]:
    """Per process: private memory (Private_Clean + Private_Dirty) and Pss, in MB."""
    out = {}
    for name, pid in pids.items():
        m = _smaps(pid, with_children=name == "ear worker")
        out[name] = ((m["Private_Clean"] + m["Private_Dirty"]) / 1024, m["Pss"] / 1024)
    return out


def stop(worker: subprocess.Popen) -> None:
    """SIGTERM: the worker gives its job back and exits."""
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
