"""`ear busy` end to end on synthesized songs: a real Gunicorn and `ear worker`, three catalog
songs, three uploads, a few clips and queued jobs; its tables have their rows and sane numbers
(no timed thresholds: those are what the command measures)."""
from __future__ import annotations

import shutil

from helpers import REPO, run_ear


def test_busy_prints_its_tables(tmp_path, songs_dir):
    catalog, uploads = tmp_path / "catalog", tmp_path / "uploads"
    catalog.mkdir()
    uploads.mkdir()
    for n, song in enumerate(sorted(songs_dir.glob("*.flac"))):  # different songs: no duplicates
        shutil.copy(song, (catalog if n < 3 else uploads) / song.name)
    out = run_ear(tmp_path / "unused", "busy", "--catalog", str(catalog), "--uploads", str(uploads),
                  "--count", "3", "--clips", "4", "--queued", "5", "--samples", "8",
                  "--work", str(tmp_path / "work"), "--gunicorn-conf",
                  str(REPO / "deploy/gunicorn.conf.py")).stdout
    assert "Catalog: 3 tracks" in out and "Queries: 4 clips of 10 s" in out
    assert "after the bulk, " in out.split("Load average (1 min, ")[1]
    tables = _tables(out)

    identify = {row["phase"]: row for row in tables["/identify latency"]}
    assert list(identify) == ["idle (ear worker idle)", "bulk upload (3 files), until every job ended",
                              "5 jobs queued (ear worker stopped)"]
    for label, row in identify.items():
        assert row["errors"] == "0" and int(row["right"]) >= 1, row
        assert 0 < float(row["p50 ms"]) <= float(row["p95 ms"]) <= float(row["max ms"])
    assert int(identify["idle (ear worker idle)"]["queries"]) == 8  # two rounds of four clips
    assert int(identify["bulk upload (3 files), until every job ended"]["queries"]) >= 1
    assert identify["idle (ear worker idle)"]["p95 / idle p95"] == "1.00"

    api = tables["Job API latency"]
    assert [(r["request"], r["n"]) for r in api] == [
        ("POST /tracks", "3"), ("GET /jobs/<id>", api[1]["n"]), ("POST /tracks", "5"),
        ("GET /jobs/<id>", "8"), ("GET /jobs (newest 100)", "20")]
    assert int(api[1]["n"]) >= 3 and api[3]["while"] == "5 queued"  # each job polled to its end
    for row in api:
        assert 0 < float(row["p50 ms"]) <= float(row["p95 ms"]) <= float(row["max ms"]), row

    [worker] = tables["Bulk upload: the ear worker"]
    assert (worker["uploads"], worker["done"], worker["failed"]) == ("3", "3", "0")
    assert worker["audio added"].startswith("90 s (")  # three songs of 30 s
    assert 0 < float(worker["of which FFmpeg"]) < float(worker["worker CPU s (FFmpeg incl.)"])
    assert float(worker["× real time per CPU s"]) > 0

    [memory_rows] = [rows for heading, rows in tables.items() if heading.startswith("Memory (MB;")]
    memory = {row["process"]: row for row in memory_rows}
    assert list(memory) == ["master", "web worker", "ear worker", "**total**"]
    for row in memory.values():
        assert all(float(value) > 0 for value in list(row.values())[1:])
    parts = sum(float(memory[p]["private, idle before the bulk"])
                for p in ("master", "web worker", "ear worker"))
    assert abs(float(memory["**total**"]["private, idle before the bulk"]) - parts) < 0.2


def _tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """Each `### heading`'s table: its rows, each a dict by column."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, columns = "", []
    for line in markdown.splitlines():
        if line.startswith("### "):
            heading, columns = line[4:], []
        elif line.startswith("|") and not line.startswith("|-"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if columns:
                tables[heading].append(dict(zip(columns, cells)))
            else:
                columns, tables[heading] = cells, []
    return tables
