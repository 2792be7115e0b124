"""Embedding indexes on real Annoy files: new vectors are found at once, rebuilds swap files
under running queries, removed tracks disappear."""
from __future__ import annotations

import json
import threading

import numpy as np

from ear.index import EmbeddingIndex

DIM = 16
TRACK_DIM = 24


def _track(rng, centre, n=30):
    """A track's windows around `centre`, and a track vector that points the same way."""
    v = centre + 0.05 * rng.standard_normal((n, DIM))
    return ((v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float16),
            np.arange(n, dtype=float), _style(centre))


def _style(centre):
    return np.concatenate([centre, np.zeros(TRACK_DIM - DIM)]).astype(np.float32)


def _fill(index, count=20, first=1, seed=0):
    rng = np.random.default_rng(seed)
    centres = {}
    for tid in range(first, first + count):
        c = rng.standard_normal(DIM)
        centres[tid] = c / np.linalg.norm(c)
    index.add({tid: _track(rng, c) for tid, c in centres.items()}, "shipped")
    return centres


def test_pending_then_built_answers_the_same(tmp_path):
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    centres = _fill(index)
    before = index.search_tracks(_style(centres[7]), 3)[0][0]
    assert before == 7 and index.needs_rebuild()
    assert index.rebuild()
    assert not index.needs_rebuild() and not index.rebuild()
    assert not list(tmp_path.glob("pending-*"))
    ids, sims = index.search_tracks(_style(centres[7]), 3)
    assert ids[0] == 7 and sims[0] > 0.9
    tracks, starts, _ = index.search_windows(centres[3][None].astype(np.float32), 5)[0]
    assert set(tracks.tolist()) == {3} and starts.min() >= 0
    reopened = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)  # a new process sees the same files
    assert reopened.search_tracks(_style(centres[7]), 1)[0][0] == 7


def _same_answers(index, opened_afresh, centres):
    assert index.track_ids() == opened_afresh.track_ids() == set(centres)
    assert index.window_count == opened_afresh.window_count
    queries = np.stack([centres[t] for t in sorted(centres)]).astype(np.float32)
    for (t1, s1, sim1), (t2, s2, sim2) in zip(index.search_windows(queries, 5),
                                              opened_afresh.search_windows(queries, 5)):
        assert np.array_equal(t1, t2) and np.array_equal(s1, s2) and np.allclose(sim1, sim2)


def test_a_reader_reads_only_the_pending_files_added_since_it_last_looked(tmp_path):
    writer, reader = EmbeddingIndex(tmp_path, DIM, TRACK_DIM), EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    centres = {}
    for round_ in range(3):
        centres |= _fill(writer, count=2, first=10 * round_ + 1, seed=round_)
        reader.refresh()
        _same_answers(reader, EmbeddingIndex(tmp_path, DIM, TRACK_DIM), centres)
    writer.rebuild()  # the pending files are folded: the next ones are no longer an addition
    centres |= _fill(writer, count=2, first=41, seed=4)
    reader.refresh()
    _same_answers(reader, EmbeddingIndex(tmp_path, DIM, TRACK_DIM), centres)
    # Proof that the files read before are not read again: one gone, the reader still follows.
    first_pending = json.loads((tmp_path / "manifest.json").read_text())["pending"][0]
    (tmp_path / first_pending).rename(tmp_path / "aside.npz")
    centres |= _fill(writer, count=2, first=51, seed=5)
    reader.refresh()
    assert reader.track_ids() == set(centres)


def test_rebuild_swaps_under_running_queries(tmp_path):
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    centres = _fill(index)
    index.rebuild()
    reader = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    answers, failures, stop = [], [], threading.Event()

    def query():
        while not stop.is_set():
            try:
                reader.refresh()
                answers.append(reader.search_tracks(_style(centres[5]), 1)[0][0])
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(exc)

    thread = threading.Thread(target=query)
    thread.start()
    for round_ in range(5):
        _fill(index, count=5, first=100 + 10 * round_, seed=round_ + 1)
        index.rebuild()
    stop.set()
    thread.join()
    assert not failures and len(answers) > 10 and set(answers) == {5}
    assert len(list(tmp_path.glob("windows-*.ann"))) == 1  # old generations are cleaned up


def test_removed_tracks_disappear_before_and_after_rebuild(tmp_path):
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    centres = _fill(index)
    index.rebuild()
    index.remove([7])
    assert 7 not in index.search_tracks(_style(centres[7]), 20)[0]
    assert 7 not in index.search_windows(centres[7][None].astype(np.float32), 50)[0][0]
    assert index.track_vector(8) is not None
    index.rebuild()
    assert index.track_vector(7) is None
    assert 7 not in index.search_tracks(_style(centres[7]), 20)[0]
    assert index.search_tracks(_style(centres[8]), 1)[0][0] == 8


def test_replacing_vectors_keeps_the_others(tmp_path):
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    centres = _fill(index)
    index.rebuild()
    rng = np.random.default_rng(9)
    moved = -centres[4]  # track 4 now sounds like nothing it did before
    index.rebuild(replace={4: _track(rng, moved)})
    assert index.search_tracks(_style(moved), 1)[0][0] == 4
    assert index.search_tracks(_style(centres[4]), 1)[0][0] != 4
    assert index.search_tracks(_style(centres[9]), 1)[0][0] == 9


def test_an_index_whose_track_vectors_are_of_an_older_kind_still_serves_windows(tmp_path, caplog):
    # Built by an older ear, whose track vectors had the windows' dimension.
    old = EmbeddingIndex(tmp_path, DIM, DIM)
    rng = np.random.default_rng(3)
    centres = {tid: c / np.linalg.norm(c) for tid, c in
               ((tid, rng.standard_normal(DIM)) for tid in range(1, 11))}
    old.add({tid: (*_track(rng, c)[:2], c.astype(np.float32)) for tid, c in centres.items()}, "shipped")
    old.rebuild()
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    assert "reindex --reembed" in caplog.text
    tracks, _, _ = index.search_windows(centres[3][None].astype(np.float32), 5)[0]
    assert set(tracks.tolist()) == {3}
    assert len(index.search_tracks(_style(centres[3]), 5)[0]) == 0  # not compared across kinds
    # A reembedding rebuild brings them back, in the new kind.
    index.rebuild(force=True, replace={tid: _track(rng, c) for tid, c in centres.items()})
    assert index.search_tracks(_style(centres[3]), 1)[0][0] == 3
    assert EmbeddingIndex(tmp_path, DIM, TRACK_DIM).search_tracks(_style(centres[6]), 1)[0][0] == 6


def test_the_index_records_which_model_made_its_vectors(tmp_path):
    index = EmbeddingIndex(tmp_path, DIM, TRACK_DIM)
    assert index.model is None  # empty: any model may fill it
    centres = _fill(index)
    assert index.model == "shipped"
    rng = np.random.default_rng(5)
    assert not index.add({99: _track(rng, centres[1])}, "v1")  # another model's: refused
    assert 99 not in index.track_ids() and index.track_ids() == set(centres)
    # A new model's vectors replace every other: those it has not made are the old model's.
    index.rebuild(force=True, replace={tid: _track(rng, centres[tid]) for tid in (3, 4)}, model="v1")
    assert index.model == "v1" and EmbeddingIndex(tmp_path, DIM, TRACK_DIM).model == "v1"
    assert index.track_ids() == {3, 4} and index.search_tracks(_style(centres[7]), 5)[0].tolist() in ([3, 4], [4, 3])
    assert index.add({100: _track(rng, centres[2])}, "v1") and index.track_ids() == {3, 4, 100}
    index.rebuild(force=True, replace={5: _track(rng, centres[5])}, model="v1")  # the same model: kept
    assert index.track_ids() == {3, 4, 5, 100}


def test_an_index_from_before_models_were_recorded_holds_the_shipped_ones(tmp_path):
    _fill(EmbeddingIndex(tmp_path, DIM, TRACK_DIM))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    del manifest["model"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert EmbeddingIndex(tmp_path, DIM, TRACK_DIM).model == "shipped"
