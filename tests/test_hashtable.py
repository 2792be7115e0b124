"""The segment store: packing, lookups, removal, merging, crash leftovers, peak encoding."""
from __future__ import annotations

import json

import numpy as np

from ear.hashtable import HashTable
from ear.segments import decode_peaks, encode_peaks, pack


def _track(rng, n=500):
    hashes = rng.integers(0, 1 << 22, n).astype(np.uint32)
    frames = np.sort(rng.integers(0, 20000, n)).astype(np.int32)
    return hashes, frames


def _add(table, rng, n_tracks=1):
    with table.writing():
        first = max(table.track_ids() | set(table.manifest.removed), default=0) + 1
        ids = range(first, first + n_tracks)  # as the catalog's ids: never one used before
        made = {}
        for tid in ids:
            hashes, frames = _track(rng)
            made[tid] = (hashes, frames)
        table.add({tid: (pack(h, tid, f), encode_peaks(f, h % 160)) for tid, (h, f) in made.items()})
    return made


def test_lookup_finds_every_landmark_with_its_track_and_frame(tmp_path):
    rng = np.random.default_rng(0)
    table = HashTable(tmp_path)
    made = _add(table, rng, 3)
    tid = 2
    hashes, frames = made[tid]
    hits = table.lookup(hashes[:50])
    mine = hits.track_id == tid
    assert set(zip(hits.query_index[mine].tolist(), hits.frame[mine].tolist())) >= {
        (i, int(frames[i])) for i in range(50)}


def test_eight_bytes_per_landmark(tmp_path):
    table = HashTable(tmp_path)
    _add(table, np.random.default_rng(1), 4)
    seg = table.manifest.segments[0]
    assert (tmp_path / seg.file).stat().st_size == 8 * seg.count == 8 * table.landmark_count


def test_removed_tracks_vanish_and_merge_drops_them(tmp_path):
    rng = np.random.default_rng(2)
    table = HashTable(tmp_path)
    made = _add(table, rng, 3)
    with table.writing():
        table.remove([1])
    assert 1 not in set(table.lookup(made[1][0]).track_id.tolist())
    assert table.track_ids() == {2, 3}
    with table.writing():
        table.merge_all()
    assert table.landmark_count == 1000 and table.manifest.removed == []
    assert table.peaks_of(1)[0].size == 0 and table.peaks_of(2)[0].size == 500


def test_segments_stay_few_and_adds_do_not_rewrite_everything(tmp_path):
    rng = np.random.default_rng(3)
    table = HashTable(tmp_path)
    for _ in range(40):
        _add(table, rng, 1)
    # Geometric sizes: O(log n) segments.
    assert len(table.manifest.segments) <= 7
    assert table.landmark_count == 40 * 500
    assert table.track_ids() == set(range(1, 41))


def test_other_processes_see_changes(tmp_path):
    rng = np.random.default_rng(4)
    writer, reader = HashTable(tmp_path), HashTable(tmp_path)
    made = _add(writer, rng, 1)
    assert (reader.lookup(made[1][0]).track_id == 1).sum() >= 500


def test_crash_leftovers_are_swept_and_manifest_is_whole(tmp_path):
    table = HashTable(tmp_path)
    _add(table, np.random.default_rng(7), 1)
    (tmp_path / "seg-99999999.bin.tmp").write_bytes(b"partial")
    (tmp_path / "seg-99999998.bin").write_bytes(b"\0" * 80)
    with table.writing():
        pass
    assert sorted(p.name for p in tmp_path.glob("seg-*")) == sorted(
        f for s in table.manifest.segments for f in (s.file, s.peaks_file))
    json.loads((tmp_path / "manifest.json").read_text())


def test_peaks_round_trip_across_long_gaps():
    frames = np.array([0, 3, 3, 300, 1000, 1001, 70000])
    bins = np.array([5, 7, 90, 12, 159, 4, 33])
    t, f = decode_peaks(encode_peaks(frames, bins))
    assert t.tolist() == frames.tolist() and f.tolist() == bins.tolist()


def test_fenced_search_agrees_with_a_plain_binary_search(tmp_path):
    table = HashTable(tmp_path)
    _add(table, np.random.default_rng(5), 40)  # 20,000 keys: 40 pages, so the fence matters
    segment = table._view.key_files[0]
    keys = np.asarray(segment.array)
    rng = np.random.default_rng(6)
    needles = np.concatenate([keys, keys + np.uint64(1), keys - np.uint64(1), keys[::512],
                              rng.integers(0, 1 << 63, 2000, dtype=np.uint64),
                              np.array([0, keys[-1] + np.uint64(5)], np.uint64)])
    assert np.array_equal(segment.first_at_least(needles), np.searchsorted(keys, needles))


def _mapped_kib(path) -> int:
    """Resident KiB of this process's mappings of `path`, from /proc/self/smaps."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        if line[0] in "0123456789abcdef" and "-" in line.split()[0]:
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_pages_a_query_touched_are_handed_back(tmp_path):
    table = HashTable(tmp_path)
    made = _add(table, np.random.default_rng(7), 40)
    seg_path = tmp_path / table.manifest.segments[0].file
    hits = table.lookup(np.concatenate([h for h, _ in made.values()]))
    assert hits.track_id.size >= 20_000 and _mapped_kib(seg_path) > 0
    table.release()
    assert _mapped_kib(seg_path) == 0
    again = table.lookup(made[3][0])  # what was handed back is read again
    assert (again.track_id == 3).sum() >= 500
