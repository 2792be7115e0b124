"""The catalog end to end on synthesized music: degraded clips are found with their offset,
unknown audio is not, and the store survives removal, re-ingest, restarts and crashes."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from conftest import clip
from synth import RATE, song

from ear.catalog import Catalog
from ear.db import Track, database
from ear.decode import decode
from ear.degrade import LEVELS, RATE as ROOM_RATE, degrade, encode_opus_webm, pink_noise, resample
from ear.hashtable import pack


def _room_clip(audio: np.ndarray, start_s: float, seconds: float, level: str, tmp_path, seed=0):
    """A clip as a phone in a room would send it: reverb, band limit, noise, Opus/WebM."""
    mono = clip(audio, start_s, seconds)[:, 0]
    x = resample(mono, RATE / ROOM_RATE)  # 44.1 kHz → 48 kHz
    rng = np.random.default_rng(seed)
    x = degrade(x, LEVELS[level], pink_noise(x.size, rng), rng)
    path = tmp_path / f"q{seed}-{level}.webm"
    encode_opus_webm(x, path, 32)
    return decode(path, max_seconds=30, timeout_s=30)


@pytest.mark.parametrize("level", ["CLEAN", "SOFT", "HARD"])
def test_degraded_clips_are_identified_with_offset(filled_catalog, tmp_path, level):
    for seed, start in [(1, 3.3), (4, 17.75)]:
        query = _room_clip(song(seed), start, 8, level, tmp_path, seed)
        matches = filled_catalog.identify(query)
        assert matches, f"song{seed} at {start}s not found at {level}"
        assert matches[0].track.title == f"song{seed}"
        assert abs(matches[0].offset_s - start) <= 0.1
        assert 0.5 < matches[0].confidence <= 1.0


@pytest.mark.parametrize("speed", [0.99, 1.01])
def test_a_clip_played_off_speed_is_found_where_it_starts(filled_catalog, tmp_path, speed):
    # A turntable or a tape 1 % off: every peak moves in time and frequency.
    start = 6.0
    played = resample(song(2)[:, 0], speed)[:, None]  # `speed` times faster, pitch and all
    query = _room_clip(played, start / speed, 8, "SOFT", tmp_path, seed=3)
    matches = filled_catalog.identify(query)
    assert matches and matches[0].track.title == "song2", matches
    assert abs(matches[0].offset_s - start) <= 0.1, matches[0].offset_s


def test_repeated_music_reports_every_offset_that_fits(catalog, tmp_path):
    # One 6 s phrase, then other music, then the phrase again: a clip of the phrase fits
    # at both places, and the answer must say so whichever place it names first.
    phrase = song(7, seconds=6.0)
    track = np.concatenate([phrase, song(8, seconds=10.0), phrase, song(9, seconds=8.0)])
    path = tmp_path / "repeats.wav"
    sf.write(path, track, RATE)
    catalog.add(path)
    found = catalog.identify(_room_clip(track, 1.0, 4, "CLEAN", tmp_path))[0]
    offsets = [found.offset_s, *found.other_offsets_s]
    assert any(abs(o - 1.0) <= 0.1 for o in offsets), offsets
    assert any(abs(o - 17.0) <= 0.1 for o in offsets), offsets


def test_unknown_audio_is_no_match(filled_catalog, tmp_path):
    for seed in (100, 101, 102):
        assert filled_catalog.identify(_room_clip(song(seed), 5, 8, "SOFT", tmp_path, seed)) == []
    noise = pink_noise(16000 * 8, np.random.default_rng(0))
    assert filled_catalog.identify(noise) == []


def test_metadata_from_tags_or_given(catalog, songs_dir):
    track, created = catalog.add(songs_dir / "song0.flac", metadata={"artist": "Given", "genre": "Test"})
    assert created and track.title == "song0" and track.artist == "Given" and track.genre == "Test"
    assert track.duration == pytest.approx(30.0, abs=0.05)
    assert track.source.endswith("song0.flac")


def test_same_audio_again_is_a_no_op(catalog, songs_dir):
    first, created = catalog.add(songs_dir / "song1.flac")
    again, created_again = catalog.add((songs_dir / "song1.flac").read_bytes(), name="copy.flac")
    assert created and not created_again and again.id == first.id
    assert [t.id for t in catalog.tracks()] == [first.id]


def test_remove_then_reingest(filled_catalog, songs_dir, tmp_path):
    query = _room_clip(song(2), 10, 6, "CLEAN", tmp_path)
    old = filled_catalog.identify(query)[0].track
    filled_catalog.remove(old.id)
    assert all(m.track.id != old.id for m in filled_catalog.identify(query))
    new, created = filled_catalog.add(songs_dir / "song2.flac")
    assert created and new.id != old.id
    assert filled_catalog.identify(query)[0].track.id == new.id


def test_restart_keeps_the_catalog(filled_catalog, config, tmp_path):
    reopened = Catalog(config)
    assert len(reopened.tracks()) == 6
    assert reopened.identify(_room_clip(song(5), 12, 6, "CLEAN", tmp_path))[0].track.title == "song5"


def test_crash_between_table_and_database_is_repaired(filled_catalog, config, tmp_path):
    table = filled_catalog.table
    # Crash after the landmarks were stored but before the row was written:
    orphan_audio = song(77)[:, 0]
    from ear.catalog import prepared_from_samples
    p = prepared_from_samples(resample(orphan_audio, RATE / 16000), "orphan", {}, "x",
                              filled_catalog.model)
    with table.writing():
        (orphan_id,) = table.allocate_ids(1)
        table.add({orphan_id: (pack(p.hashes, orphan_id, p.frames), p.peaks)})
        filled_catalog.index.add({orphan_id: (p.vectors, p.vector_starts, p.style)})
    # ...and a removal that marked the table but did not delete the row:
    with table.writing():
        table.remove([3])
    reopened = Catalog(config)
    reopened.reconcile()
    assert orphan_id not in reopened.table.track_ids()
    assert {orphan_id, 3} <= reopened.index.removed
    reopened.rebuild_index()
    assert reopened.index.track_vector(orphan_id) is None and reopened.index.track_vector(3) is None
    with database.connection_context():
        assert Track.get_or_none(Track.id == 3) is None
    assert sorted(t.id for t in reopened.tracks()) == [1, 2, 4, 5, 6]
