"""Ingest, store and identify end to end on synthesized music: degraded clips are found with
their offset, unknown audio is not, and the store survives removal, re-ingest, restarts and
crashes."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from helpers import room_clip
from synth import RATE, song

from ear.catalog import Catalog
from ear.db import Track, database
from ear.ids import track_ids
from ear.models import shipped_model
from ear.segments import pack
from ear.features import FRAME_SECONDS
from ear.identify import identify
from ear.ingest import fingerprint, embedding, prepare
from ear.lab.degrade import pink_noise, resample
from ear.match import PASSES, best_per_track, verified_candidates


def _add(catalog: Catalog, source, **kwargs):
    return catalog.store([prepare(source, catalog.config, shipped_model(), **kwargs)])[0]


def _matches(catalog: Catalog, samples: np.ndarray):
    return identify(catalog.library(), samples).matches


@pytest.mark.parametrize("level", ["CLEAN", "SOFT", "HARD"])
def test_degraded_clips_are_identified_with_offset(filled_catalog, tmp_path, level):
    for seed, start in [(1, 3.3), (4, 17.75)]:
        query = room_clip(song(seed), start, 8, level, tmp_path, seed)
        matches = _matches(filled_catalog, query)
        assert matches, f"song{seed} at {start}s not found at {level}"
        assert matches[0].track.title == f"song{seed}"
        assert abs(matches[0].offset_s - start) <= 0.1
        assert 0.5 < matches[0].confidence <= 1.0


@pytest.mark.parametrize("speed", [0.99, 1.01])
def test_a_clip_played_off_speed_is_found_where_it_starts(filled_catalog, tmp_path, speed):
    # A turntable or a tape 1 % off: every peak moves in time and frequency.
    start = 6.0
    played = resample(song(2)[:, 0], speed)[:, None]  # `speed` times faster, pitch and all
    query = room_clip(played, start / speed, 8, "SOFT", tmp_path, seed=3)
    matches = _matches(filled_catalog, query)
    assert matches and matches[0].track.title == "song2", matches
    assert abs(matches[0].offset_s - start) <= 0.1, matches[0].offset_s


def test_repeated_music_reports_every_offset_that_fits(catalog, tmp_path):
    # One 6 s phrase, then other music, then the phrase again: a clip of the phrase fits
    # at both places, and the answer must say so whichever place it names first.
    phrase = song(7, seconds=6.0)
    track = np.concatenate([phrase, song(8, seconds=10.0), phrase, song(9, seconds=8.0)])
    path = tmp_path / "repeats.wav"
    sf.write(path, track, RATE)
    _add(catalog, path)
    found = _matches(catalog, room_clip(track, 1.0, 4, "CLEAN", tmp_path))[0]
    offsets = [found.offset_s, *found.other_offsets_s]
    assert any(abs(o - 1.0) <= 0.1 for o in offsets), offsets
    assert any(abs(o - 17.0) <= 0.1 for o in offsets), offsets


def test_unknown_audio_is_no_match(filled_catalog, tmp_path):
    for seed in (100, 101, 102):
        assert _matches(filled_catalog, room_clip(song(seed), 5, 8, "SOFT", tmp_path, seed)) == []
    noise = pink_noise(16000 * 8, np.random.default_rng(0))
    assert _matches(filled_catalog, noise) == []


def test_fits_found_only_where_the_embeddings_proposed_are_no_votes(filled_catalog, tmp_path):
    library = filled_catalog.library()
    song2 = next(t.id for t in filled_catalog.tracks() if t.title == "song2")
    # Noise, with song2 at 10 s proposed: the search there finds a fit in each pass (none is
    # confident), and those fits are not votes.
    noise = pink_noise(16000 * 3, np.random.default_rng(1))
    verified, _ = verified_candidates(noise, library.table, lambda: [(song2, 10.0)])
    searched = [f for f in verified if not f.voted]
    assert len(searched) == len(PASSES) and {f.track_id for f in searched} == {song2}
    assert all(abs(f.offset * FRAME_SECONDS - 10.0) <= 0.6 for f in searched)
    # A clip of song2 at 10 s: its votes find it there, on their own.
    clip = room_clip(song(2), 10.0, 3, "SOFT", tmp_path, 2)
    verified, _ = verified_candidates(clip, library.table, lambda: [(song2, 10.0)])
    fit = best_per_track(verified)[song2]
    assert fit.voted_z >= 5.0 and fit.voted_offsets_s[0] == pytest.approx(10.0, abs=0.05)


def test_metadata_from_tags_or_given(catalog, songs_dir):
    track, created = _add(catalog, songs_dir / "song0.flac", metadata={"artist": "Given", "genre": "Test"})
    assert created and track.title == "song0" and track.artist == "Given" and track.genre == "Test"
    assert track.duration == pytest.approx(30.0, abs=0.05)
    assert track.source.endswith("song0.flac")


@pytest.mark.postgresql
def test_same_audio_again_is_a_no_op(catalog, songs_dir):
    first, created = _add(catalog, songs_dir / "song1.flac")
    again, created_again = _add(catalog, (songs_dir / "song1.flac").read_bytes(), name="copy.flac")
    assert created and not created_again and again.id == first.id
    assert [t.id for t in catalog.tracks()] == [first.id]


@pytest.mark.postgresql
def test_remove_then_reingest(filled_catalog, songs_dir, tmp_path):
    query = room_clip(song(2), 10, 6, "CLEAN", tmp_path)
    old = _matches(filled_catalog, query)[0].track
    filled_catalog.remove(old.id)
    assert all(m.track.id != old.id for m in _matches(filled_catalog, query))
    new, created = _add(filled_catalog, songs_dir / "song2.flac")
    assert created and new.id != old.id
    assert _matches(filled_catalog, query)[0].track.id == new.id


@pytest.mark.postgresql
def test_restart_keeps_the_catalog(filled_catalog, config, tmp_path):
    reopened = Catalog(config)
    assert len(reopened.tracks()) == 6
    assert _matches(reopened, room_clip(song(5), 12, 6, "CLEAN", tmp_path))[0].track.title == "song5"


@pytest.mark.postgresql
def test_crash_between_table_and_database_is_repaired(filled_catalog, config, tmp_path):
    table = filled_catalog.library().table
    ids = [t.id for t in filled_catalog.tracks()]
    gone = ids[2]
    # Crash after the landmarks were stored but before the row was written:
    orphan_audio = resample(song(77)[:, 0], RATE / 16000)
    prints, vectors = fingerprint(orphan_audio), embedding([orphan_audio], shipped_model())
    with table.writing():
        (orphan_id,) = track_ids(1)
        table.add({orphan_id: (pack(prints.hashes, orphan_id, prints.frames), prints.peaks)})
        filled_catalog.library().index.add({orphan_id: vectors.arrays()}, vectors.model)
    # ...and a removal that marked the table but did not delete the row:
    with table.writing():
        table.remove([gone])
    reopened = Catalog(config)
    reopened.reconcile()
    assert orphan_id not in reopened.library().table.track_ids()
    assert {orphan_id, gone} <= reopened.library().index.removed
    reopened.rebuild_index()
    assert reopened.library().index.track_vector(orphan_id) is None and reopened.library().index.track_vector(gone) is None
    with database.connection_context():
        assert Track.get_or_none(Track.id == gone) is None
    assert [t.id for t in reopened.tracks()] == ids[:2] + ids[3:]
