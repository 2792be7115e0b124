"""Query by humming: the pitch tracker, the melody chain, `ear hum` and POST /hum, on beats and
hums synthesized here (synth.tune, synth.beat, synth.hummed) and decoded by the real FFmpeg."""
from __future__ import annotations

import io
import json
import warnings

import numpy as np
import pytest
from synth import RATE, beat, hummed, tune, write
from helpers import AUTH, run_ear

from ear import hum, pitch, users
from ear.catalog import Catalog
from ear.config import load_config
from ear.db import LoggedQuery, Melody, database
from ear.decode import SAMPLE_RATE, decode_query
from ear.models import shipped_model
from ear.errors import BadAudio
from ear.ingest import prepare

BEATS = 4
TEMPO = {seed: 90.0 + 8 * seed for seed in range(BEATS)}
FIRST_NOTE = 10  # the hums start inside the melody, not at its beginning


def tone(midi: float, seconds: float, harmonics: int = 6) -> np.ndarray:
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    hz = 440 * 2 ** ((midi - 69) / 12)
    return (0.2 * sum(0.7 ** k * np.sin(2 * np.pi * hz * (k + 1) * t) for k in range(harmonics))).astype(np.float32)


@pytest.mark.parametrize("midi", [43.3, 50.0, 57.5, 64.2, 71.8, 79.0, 88.6])
def test_pitch_of_a_harmonic_note_within_20_cents(midi):
    found = pitch.contour([tone(midi, 1.0)])[:-2]  # the last frames run past the end of the note
    voiced = found[~np.isnan(found)]
    assert voiced.size >= 0.9 * found.size
    assert np.abs(voiced - midi).max() < 0.2


def test_pitch_of_noise_and_silence_is_unvoiced():
    noise = np.random.default_rng(0).normal(0, 0.1, SAMPLE_RATE * 2).astype(np.float32)
    assert np.isnan(pitch.contour([noise])).all()
    assert np.isnan(pitch.contour([np.zeros(SAMPLE_RATE, np.float32)])).all()


def test_salience_agrees_with_the_dense_product_of_its_weights():
    """pitch._salience multiplies by its sparse weights; the plain formula is the oracle: each
    candidate's magnitudes^0.5 at its harmonics' two nearest bins, summed with their weights."""
    samples = np.random.default_rng(3).standard_normal(SAMPLE_RATE * 5).astype(np.float32)
    frames = 1 + (samples.size - pitch.N_FFT) // pitch.HOP
    salience, level = pitch._salience(samples, frames)
    framed = np.lib.stride_tricks.sliding_window_view(samples, pitch.N_FFT)[::pitch.HOP][:frames]
    weights = pitch._WEIGHTS.to_dense().numpy()  # candidates × bins
    magnitude = np.abs(np.fft.rfft(framed * np.hanning(pitch.N_FFT), axis=1))[:, :weights.shape[1]]
    expected = np.sqrt(magnitude) @ weights.T
    assert salience.shape == expected.shape == (frames, pitch._CANDIDATES.size)
    np.testing.assert_allclose(salience, expected, rtol=1e-3, atol=1e-3 * expected.max())
    np.testing.assert_allclose(level, 10 * np.log10((magnitude ** 2).sum(axis=1) + 1e-10), atol=1e-3)
    assert (weights > 0).sum(axis=1).max() <= 2 * pitch.HARMONICS


def test_a_track_streamed_in_blocks_has_the_contour_of_the_whole():
    from ear.features import blocks
    audio = np.concatenate([tone(60 + k % 12, 0.4) for k in range(200)])  # 80 s: two blocks
    streamed = pitch.BlockContour(pitch.LOWEST)
    for block in blocks([audio[i:i + 12345] for i in range(0, audio.size, 12345)]):
        streamed.add(block)
    np.testing.assert_array_equal(streamed.result(), pitch.contour([audio]))


def test_smooth_is_a_running_median_of_the_voiced_frames_tuned(tmp_path):
    from ear.melody import SMOOTH_FRAMES, smooth, tuning
    rng = np.random.default_rng(0)
    half = SMOOTH_FRAMES // 2
    for _ in range(50):
        contour = rng.normal(60, 2, 200).astype(np.float32)
        contour[rng.random(200) < 0.3] = np.nan
        padded = np.pad(contour, half, constant_values=np.nan)
        with warnings.catch_warnings():  # an all-NaN window: NaN, as it should be
            warnings.simplefilter("ignore", RuntimeWarning)
            oracle = np.array([np.nanmedian(padded[i:i + SMOOTH_FRAMES]) for i in range(contour.size)])
        oracle = np.where(np.isnan(contour), np.nan, oracle)
        np.testing.assert_allclose(smooth(contour), oracle - tuning(oracle), atol=1e-4)


@pytest.fixture(scope="module")
def beats(tmp_path_factory):
    """A catalog of BEATS beats, each a different tune; {seed: track id} and its config."""
    folder = tmp_path_factory.mktemp("hum")
    config = load_config(data_dir=folder / "data", admin_token="test-token")
    catalog = Catalog(config)
    files = [write(folder / f"beat{seed}.flac", beat(tune(seed), TEMPO[seed], seed)) for seed in range(BEATS)]
    stored = catalog.store([prepare(f, config, shipped_model()) for f in files])
    return config, {seed: track.id for seed, (track, _) in enumerate(stored)}


def hum_of(tmp_path, config, seed: int, transpose: int = 0, tempo: float = 1.0, notes: int = 14) -> np.ndarray:
    """A hum of tune `seed`, decoded by FFmpeg as an upload would be."""
    audio = hummed(tune(seed), FIRST_NOTE, notes, TEMPO[seed] * tempo, transpose, seed)
    return decode_query(write(tmp_path / f"hum{seed}.wav", audio), config)


def truth_s(seed: int) -> float:
    return (tune(seed)[FIRST_NOTE][0] + 4) * 60 / TEMPO[seed]  # the beat has a bar of intro


@pytest.mark.parametrize("transpose, tempo", [(0, 1.0), (-5, 0.75), (7, 1.35), (-12, 1.0)])
def test_a_hum_in_another_key_and_tempo_finds_its_beat_and_where(beats, tmp_path, transpose, tempo):
    config, ids = beats
    library = Catalog(config).library()
    for seed in range(BEATS):
        found = hum.search(library.melodies, hum_of(tmp_path, config, seed, transpose, tempo))
        assert found[0].is_match and found[0].track_id == ids[seed], found
        assert abs(found[0].start_s - truth_s(seed)) < 1.0
        assert not any(m.is_match for m in found[1:])


def test_a_melody_not_in_the_catalog_matches_nothing(beats, tmp_path):
    config, _ = beats
    library = Catalog(config).library()
    for seed in (50, 51, 52):
        audio = hummed(tune(seed), FIRST_NOTE, 14, 100.0, 0, seed)
        found = hum.search(library.melodies, decode_query(write(tmp_path / "unknown.wav", audio), config))
        assert not any(m.is_match for m in found), found


@pytest.mark.parametrize("sound", ["noise", "one_note", "too_brief"])
def test_no_melody_is_refused(beats, sound):
    config, _ = beats
    library = Catalog(config).library()
    samples = {"noise": np.random.default_rng(1).normal(0, 0.1, SAMPLE_RATE * 5).astype(np.float32),
               "one_note": tone(60, 5.0),
               "too_brief": np.concatenate([tone(60 + k, 0.2) for k in range(6)])}[sound]
    with pytest.raises(BadAudio) as caught:
        hum.search(library.melodies, samples)
    assert caught.value.code == "no_melody" and caught.value.status == 422


def test_ear_hum_prints_json_per_file_and_errors_per_file(beats, tmp_path):
    config, ids = beats
    path = write(tmp_path / "hum.wav", hummed(tune(1), FIRST_NOTE, 14, TEMPO[1] * 1.2, 3, 1))
    noise = write(tmp_path / "noise.wav", np.random.default_rng(2).normal(0, 0.1, RATE * 4).astype(np.float32))
    out = run_ear(config.data_dir, "hum", "--json", str(path), str(noise)).stdout.splitlines()
    first, second = (json.loads(line) for line in out)
    assert first["query"] == str(path) and first["matches"][0]["track"]["id"] == ids[1]
    assert set(first["matches"][0]) == {"track", "score", "start_s", "end_s"}
    assert abs(first["matches"][0]["start_s"] - truth_s(1)) < 1.0
    assert second["error"]["code"] == "no_melody"


def test_post_hum_answers_matches_and_refuses_no_melody(config, client, tmp_path):
    files = [write(tmp_path / f"beat{seed}.flac", beat(tune(seed), TEMPO[seed], seed)) for seed in range(2)]
    Catalog(config).store([prepare(f, config, shipped_model()) for f in files])  # as `ear ingest` does
    wav = write(tmp_path / "hum.wav", hummed(tune(0), FIRST_NOTE, 14, TEMPO[0] * 0.8, -4, 0)).read_bytes()
    response = client.post("/hum", data={"audio": (io.BytesIO(wav), "hum.wav")})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert [m["track"]["title"] for m in body["matches"]] == ["beat0"]
    assert body["query_id"] and abs(body["matches"][0]["start_s"] - truth_s(0)) < 1.0
    track = client.get(f"/tracks/{body['matches'][0]['track']['id']}").get_json()
    assert body["matches"][0]["end_s"] <= track["duration"]
    verdict = {"query_id": body["query_id"], "verdict": "right", "track_id": track["id"]}
    assert client.post("/feedback", json=verdict).status_code == 201  # on the hum's answer
    with database.connection_context():
        logged = LoggedQuery.get_by_id(body["query_id"])  # written before the feedback was taken
    assert (logged.route, logged.track_id, logged.evidence, logged.confidence) == ("hum", track["id"], "melody", None)
    assert logged.offset_s == pytest.approx(body["matches"][0]["start_s"], abs=0.01)
    noise = write(tmp_path / "noise.wav", np.random.default_rng(3).normal(0, 0.1, RATE * 4).astype(np.float32))
    response = client.post("/hum", data={"audio": (io.BytesIO(noise.read_bytes()), "noise.wav")})
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "no_melody"


@pytest.mark.postgresql
def test_a_removed_track_takes_its_melody_with_it(config, tmp_path):
    catalog = Catalog(config)
    path = write(tmp_path / "beat2.flac", beat(tune(2), TEMPO[2], 2))
    (track, _), = catalog.store([prepare(path, config, shipped_model())])
    library = catalog.library()
    query = hum_of(tmp_path, config, 2)
    assert hum.search(library.melodies, query)[0].is_match
    catalog.remove(track.id)
    with database.connection_context():
        assert Melody.select().count() == 0
    assert hum.search(library.melodies, query) == []


def test_a_users_hum_searches_their_library_only(config, client, tmp_path):
    path = write(tmp_path / "beat3.flac", beat(tune(3), TEMPO[3], 3))
    Catalog(config).store([prepare(path, config, shipped_model())])  # the owner's
    key = users.add("ann")[1]
    wav = write(tmp_path / "hum.wav", hummed(tune(3), FIRST_NOTE, 14, TEMPO[3], 2, 3)).read_bytes()
    asked = {"audio": (io.BytesIO(wav), "hum.wav")}
    response = client.post("/hum", data=asked, headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and response.get_json()["matches"] == []
    asked = {"audio": (io.BytesIO(wav), "hum.wav")}
    assert client.post("/hum", data=asked, headers=AUTH).get_json()["matches"][0]["track"]["title"] == "beat3"


def test_reindex_melodies_gives_tracks_from_before_melodies_theirs(config, tmp_path):
    path = write(tmp_path / "beat1.flac", beat(tune(1), TEMPO[1], 1))
    run_ear(config.data_dir, "ingest", str(path))
    library = Catalog(config).library()
    with database.connection_context():
        Melody.delete().execute()  # a catalog made before ear listened for melodies
    query = hum_of(tmp_path, config, 1)
    assert hum.search(library.melodies, query) == []
    out = run_ear(config.data_dir, "reindex", "--melodies").stdout
    assert "owner: found 1 melodies again" in out
    assert hum.search(library.melodies, query)[0].is_match


def test_a_melody_is_not_written_for_a_track_removed_meanwhile(config, tmp_path):
    from ear import melody_index
    catalog = Catalog(config)
    path = write(tmp_path / "beat0.flac", beat(tune(0), TEMPO[0], 0))
    (track, _), = catalog.store([prepare(path, config, shipped_model())])
    contour = np.full(100, 60.0, np.float32)
    with database.connection_context(), database.atomic():  # `ear reindex --melodies`, after a removal
        melody_index.store({track.id: contour, track.id + 1: contour}, "owner")
        assert [m.track_id for m in Melody.select()] == [track.id]


def _dtw_oracle(query, region, shift):
    """hum._dtw for one region, cell by cell: D[i, j] = cost[i, j] + min(D[i−1, j−1],
    D[i−1, j−2], D[i−2, j−1] + cost[i−1, j]), any start in row 0, the best end in the last row."""
    cost = hum._costs(query, region[None], np.array([shift], np.float32))[:, 0].astype(np.float64)
    n, width = cost.shape
    best = {}  # (i, j) → (D, start)
    for i in range(n):
        for j in range(width):
            if i == 0:
                best[i, j] = (cost[0, j], j)
                continue
            steps = [best.get((i - 1, j - 1)), best.get((i - 1, j - 2))]
            two = best.get((i - 2, j - 1))
            steps.append((two[0] + cost[i - 1, j], two[1]) if two else None)
            d, start = min((s for s in steps if s is not None), default=(np.inf, 0), key=lambda s: s[0])
            best[i, j] = (d + cost[i, j], start)
    end = min(range(width), key=lambda j: best[n - 1, j][0])
    return best[n - 1, end][0] / n, best[n - 1, end][1], end


def test_dtw_agrees_with_a_cell_by_cell_oracle():
    rng = np.random.default_rng(5)
    for _ in range(30):
        query = rng.normal(60, 3, int(rng.integers(3, 12))).astype(np.float32)
        region = rng.normal(60, 3, (3, int(rng.integers(4, 20)))).astype(np.float32)
        region[rng.random(region.shape) < 0.2] = np.nan
        region[1, int(rng.integers(2, region.shape[1])):] = np.inf  # a shorter region
        shift = rng.integers(-6, 6, 3).astype(np.float32)
        cost, start, end = hum._dtw(query, region, shift)
        for row in range(3):
            want_cost, want_start, want_end = _dtw_oracle(query, region[row], shift[row])
            if not np.isfinite(want_cost):
                assert cost[row] == hum.COST_CAP
                continue
            assert cost[row] == pytest.approx(want_cost, abs=1e-4)
            assert (start[row], end[row]) == (want_start, want_end)
