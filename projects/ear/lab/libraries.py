"""`ear libraries`: what many libraries cost one server (issue 14), measured on a real Gunicorn
with the production settings and a real `ear worker`, printed as markdown tables.

The libraries are made first (synthetic_libraries.py, in its own process: it needs torch): N
users, each with M tracks, one of them real. Then, in order: the private memory of the master,
the web worker and the ear worker at start; /identify of a 10 s clip of the real track with
each user's key in turn (the first query of a library opens it), and a second round; the
memory again; GET /tracks/<id> with one user's key, of another user's track and of an id no one
holds, interleaved (what a 404 tells); then a small upload to every library, which the ear
worker adds (and reindexes) library after library, the memory then, and once the child that did
the jobs has gone (EAR_WORKER_LINGER_S later, standby.py).

The measuring runs in a process that has never imported torch or numpy (as `ear busy`'s).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from .busy_tables import MEMORY_TARGET_MB, Status, percentile
from .service_memory import _smaps, add_gunicorn_conf_argument, children, ear_worker, exec_without_torch, serving

_CLIP_AT_S, _UPLOAD_AT_S, _CLIP_S = 30.0, 60.0, 10.0  # the query, and the upload (other music)
_TIMING_ROUNDS = 300  # GET /tracks/<id> of each kind
_LINGER_S = 60.0  # the worker's child, after the jobs: long enough to be measured, then it goes


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--track", required=True, help="a real music file: in every library")
    parser.add_argument("--libraries", type=int, default=100, help="users (default 100)")
    parser.add_argument("--tracks", type=int, default=1000, help="tracks in each (default 1000)")
    parser.add_argument("--track-seconds", type=float, default=150.0,
                        help="length of a synthetic track (default 150: a beat)")
    parser.add_argument("--work", default="libraries-work", help="folder for the data dir and keys")
    add_gunicorn_conf_argument(parser)


def run(args: argparse.Namespace) -> int:
    exec_without_torch("ear.lab.libraries", args)
    work = Path(args.work).resolve()
    data, keys_json = work / "data", work / "keys.json"
    data.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ear.lab.synthetic_libraries", str(data), str(keys_json),
                    str(args.libraries), str(args.tracks), str(args.track_seconds), args.track], check=True)
    built_s = time.perf_counter() - started
    keys = {name: v for name, v in json.loads(keys_json.read_text()).items()
            if int(name[4:]) < args.libraries}
    clip = _cut(args.track, _CLIP_AT_S, work / "clip.webm")
    runs = len(list(work.glob("upload-*.webm")))  # new music each run: not a duplicate to skip
    upload = _cut(args.track, _UPLOAD_AT_S + _CLIP_S * runs, work / f"upload-{runs}.webm")
    env = {"EAR_DATA_DIR": str(data), "EAR_DATABASE_URL": ""}  # SQLite in --work, whatever .env says
    with serving(Path(args.gunicorn_conf), env) as (url, master, web), \
            ear_worker(env, work / "worker.log", linger_s=_LINGER_S) as worker:
        pids = {"master": master, "web worker": web, "ear worker": worker.pid}
        memory = {"at start": _memory(pids)}
        rounds = {name: _identify_each(url, keys, clip.read_bytes(), Status(name))
                  for name in ("first query of each library", "second query")}
        memory["after the queries"] = _memory(pids)
        timing = _not_found_timing(url, keys)
        jobs_s = _upload_to_each(url, keys, upload.read_bytes())
        memory["after a job in every library"] = _memory(pids)
        _gone(worker.pid)
        memory["once the ear worker's child has gone"] = _memory(pids)
    print(report(args, built_s, memory, rounds, timing, jobs_s))
    return 0


def _cut(track: str, at_s: float, path: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-ss", str(at_s), "-t", str(_CLIP_S), "-i", track,
                    "-ac", "1", "-c:a", "libopus", "-b:a", "32k", "-y", str(path)], check=True)
    return path


def _gone(worker: int) -> None:
    """Wait for the child that did the ear worker's jobs to go (EAR_WORKER_LINGER_S after its
    last one, standby.py)."""
    status = Status("the ear worker's child lingering")
    while children(worker):
        time.sleep(1.0)
    status.done()


def _memory(pids: dict[str, int]) -> dict[str, float]:
    """Private MB of each process, and "Pss": their Pss summed, which shares out the pages that
    several of them map (torch's library) instead of counting them for none."""
    found = {n: _smaps(pid, with_children=n == "ear worker") for n, pid in pids.items()}
    return {**{n: (s["Private_Clean"] + s["Private_Dirty"]) / 1024 for n, s in found.items()},
            "Pss": sum(s["Pss"] for s in found.values()) / 1024}


def _identify_each(url: str, keys: dict, clip: bytes, status: Status) -> list[tuple[float, bool]]:
    """(latency ms, answered with the library's own copy) of one /identify per library."""
    out = []
    with requests.Session() as session:
        for name, user in keys.items():
            began = time.perf_counter()
            answer = session.post(url + "/identify", data=clip, timeout=120,
                                  headers={"Authorization": f"Bearer {user['key']}"})
            ms = (time.perf_counter() - began) * 1000
            matches = answer.json().get("matches", [])
            out.append((ms, bool(matches) and matches[0]["track"]["id"] == user["real_id"]))
            status.say(f"{len(out)}/{len(keys)} libraries")
    status.done()
    return out


def _not_found_timing(url: str, keys: dict) -> dict[str, list[float]]:
    """GET /tracks/<id> with the first user's key: another user's track, and an id no one holds."""
    (mine, *others) = list(keys.values())
    theirs, nobody = others[0]["real_id"], 1_000_000
    times: dict[str, list[float]] = {"another user's track": [], "an id no one holds": []}
    with requests.Session() as session:
        for _ in range(_TIMING_ROUNDS):
            for label, track_id in (("another user's track", theirs), ("an id no one holds", nobody)):
                began = time.perf_counter()
                answer = session.get(f"{url}/tracks/{track_id}", timeout=30,
                                     headers={"Authorization": f"Bearer {mine['key']}"})
                times[label].append((time.perf_counter() - began) * 1000)
                assert answer.status_code == 404, answer.text
    return times


def _upload_to_each(url: str, keys: dict, clip: bytes) -> float:
    """POST the clip to every library (each adds it, and rebuilds its index after); wait until the worker has ended every job (s taken)."""
    began = time.perf_counter()
    status = Status("a job in every library")
    with requests.Session() as session:
        for user in keys.values():
            session.post(url + "/tracks", data=clip, timeout=60,
                         headers={"Authorization": f"Bearer {user['key']}"}).raise_for_status()
        for n, user in enumerate(keys.values()):
            while any(j["status"] in ("queued", "running") for j in session.get(
                    url + "/jobs", headers={"Authorization": f"Bearer {user['key']}"},
                    timeout=30).json()["jobs"]):
                time.sleep(0.5)
            status.say(f"{n + 1}/{len(keys)} libraries done")
    status.done()
    return time.perf_counter() - began


def report(args, built_s: float, memory: dict, rounds: dict, timing: dict, jobs_s: float) -> str:
    lines = [f"## ear libraries\n\n{args.libraries} libraries of {args.tracks} tracks "
             f"({args.tracks - 1} synthetic of {args.track_seconds:g} s and one real: {Path(args.track).name}), "
             f"made (or found made) in {built_s:.0f} s. Queries: a 10 s Opus clip of the real track, one library after "
             f"another, with each user's key.\n",
             "| /identify | p50 ms | p95 ms | max ms | own copy found |", "|---|---|---|---|---|"]
    for name, results in rounds.items():
        ms = [m for m, _ in results]
        lines.append(f"| {name} | {percentile(ms, 50):.0f} | {percentile(ms, 95):.0f} | {max(ms):.0f} "
                     f"| {sum(ok for _, ok in results)}/{len(results)} |")
    lines += ["", "| GET /tracks/<id> → 404, with a user's key | p50 ms | p95 ms | n |", "|---|---|---|---|"]
    lines += [f"| {label} | {percentile(ms, 50):.2f} | {percentile(ms, 95):.2f} | {len(ms)} |"
              for label, ms in timing.items()]
    lines += ["", f"A small upload to every library, added and reindexed by the ear worker: {jobs_s:.0f} s.",
              "", "| private MB (Private_Clean + Private_Dirty) | master | web worker | ear worker | total | Pss total |",
              "|---|---|---|---|---|---|"]
    for moment, m in memory.items():
        total = m["master"] + m["web worker"] + m["ear worker"]
        lines.append(f"| {moment} | {m['master']:.1f} | {m['web worker']:.1f} | {m['ear worker']:.1f} "
                     f"| {total:.1f} ({'met' if total <= MEMORY_TARGET_MB else 'MISSED'} ≤ {MEMORY_TARGET_MB:g}) "
                     f"| {m['Pss']:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="ear libraries")
    add_arguments(parser)
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
