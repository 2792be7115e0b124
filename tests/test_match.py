"""When a fingerprint fit is an answer (the threshold, or a near miss that stands out), and where
in a track a clip fits."""
from __future__ import annotations

import numpy as np

from ear import fusion
from ear.match import STANDOUT_GAP, Fit, TrackFit, best_per_track, fingerprint_suffices, runner_ups
from ear.verify import _MIN_OVERLAP_FRAMES, SHIFTS, QueryGrid

THRESHOLD = 7.5


def test_the_threshold_alone_suffices_whatever_the_runner_up():
    assert fingerprint_suffices(THRESHOLD, THRESHOLD - 0.1, THRESHOLD)
    assert not fingerprint_suffices(THRESHOLD - 0.01, THRESHOLD - 0.1, THRESHOLD)


def test_a_near_miss_is_an_answer_only_far_above_every_other_track():
    near = THRESHOLD - 1.5
    assert fingerprint_suffices(near, near - STANDOUT_GAP, THRESHOLD)
    assert not fingerprint_suffices(near, near - STANDOUT_GAP + 0.1, THRESHOLD)
    # too far below the threshold, however lonely
    assert not fingerprint_suffices(THRESHOLD - 3.0, 0.0, THRESHOLD)


def test_runner_up_of_the_best_track_is_the_second_and_of_the_others_the_best():
    best = {1: TrackFit(9.0, 0.0), 2: TrackFit(4.0, 0.0), 3: TrackFit(3.0, 0.0)}
    assert runner_ups(best) == {1: 4.0, 2: 9.0, 3: 9.0}
    assert runner_ups({}) == {}


def test_fusion_answers_a_lone_near_miss_but_not_one_among_equals():
    lone = fusion.combine({7: TrackFit(6.2, 12.0), 8: TrackFit(3.1, 40.0)}, {}, THRESHOLD)
    assert [e.track_id for e in lone if e.is_match] == [7] and lone[0].kinds == ["fingerprint"]
    crowded = fusion.combine({7: TrackFit(6.2, 12.0), 8: TrackFit(5.9, 40.0)}, {}, THRESHOLD)
    assert not [e for e in crowded if e.is_match]


def test_a_fit_on_a_sliver_of_the_track_does_not_count():
    rng = np.random.default_rng(0)
    # A 10 s clip (625 frames) whose peaks are exactly the track's first 10 s.
    t = np.sort(rng.integers(0, 625, 300))
    f = rng.integers(4, 150, 300)
    grid = QueryGrid(t, f)
    (whole, sliver), _ = grid.verify(t, f, [0, -560])
    assert whole > 10
    # The same track laid 9 s early: only its first second would be under the clip.
    assert sliver == 0.0


def _verified_one_by_one(grid: QueryGrid, ref_t: np.ndarray, ref_f: np.ndarray, offset: int
                         ) -> tuple[float, int]:
    """The verification of one offset spelled out: the oracle of `QueryGrid.verify`."""
    inside = (ref_t >= offset) & (ref_t < offset + grid.frames)
    rt, rf = ref_t[inside] - offset, ref_f[inside] + 1
    if rt.size == 0 or min(offset + grid.frames, ref_t[-1] + 1) - max(offset, 0) < min(grid.frames, _MIN_OVERLAP_FRAMES):
        return 0.0, 0
    frames = np.unique(rt)
    q = np.array([1 - np.prod(1 - grid.chance[rf[rt == fr]]) for fr in frames])
    counts = []
    for shift in SHIFTS:
        rows = rt + shift + 1
        ok = (rows >= 0) & (rows < grid.grid.shape[0])
        landed = np.zeros(rt.size, bool)
        landed[ok] = grid.grid[rows[ok], rf[ok]]
        counts.append(len(np.unique(rt[landed])))
    best = int(np.argmax(counts))
    return (counts[best] - q.sum()) / np.sqrt(max((q * (1 - q)).sum(), 1e-9)), SHIFTS[best]


def test_verifying_many_offsets_at_once_is_verifying_each():
    rng = np.random.default_rng(2)
    track_t = np.sort(rng.integers(0, 3000, 1500))
    track_f = rng.integers(4, 150, 1500)
    # A clip of frames 1200-1825 of the track, half its peaks kept and moved by up to a frame.
    part = (track_t >= 1200) & (track_t < 1825) & (rng.random(1500) < 0.5)
    query_t = np.clip(track_t[part] - 1200 + rng.integers(-1, 2, part.sum()), 0, None)
    order = np.argsort(query_t, kind="stable")
    grid = QueryGrid(query_t[order], track_f[part][order])
    offsets = [1200, 1203, -500, -200, 2800, 5000, *range(1100, 1300, 5)]
    z, shifts = grid.verify(track_t, track_f, offsets)
    for offset, one_z, one_shift in zip(offsets, z, shifts):
        expected_z, expected_shift = _verified_one_by_one(grid, track_t, track_f, offset)
        assert abs(one_z - expected_z) < 1e-9 and one_shift == expected_shift, offset
    assert z[0] > 10 and z[1] > 10 and shifts[1] == 2 and z[2] == z[5] == 0.0


def test_scan_finds_every_place_a_noisy_clip_fits_a_track_that_repeats():
    rng = np.random.default_rng(1)
    # A 5 s phrase (312 frames, 24 peaks/s) at frames 1000, 4000 and 9000 of a 200 s track
    # that is otherwise random peaks.
    phrase_t = np.sort(rng.integers(0, 312, 120))
    phrase_f = rng.integers(4, 150, 120)
    places = [1000, 4000, 9000]
    t = np.concatenate([rng.integers(0, 12500, 4800), *[phrase_t + p for p in places]])
    f = np.concatenate([rng.integers(4, 150, 4800), *[phrase_f for _ in places]])
    order = np.argsort(t, kind="stable")
    track_t, track_f = t[order], f[order]
    # The clip: half the phrase's peaks, moved by up to a frame and a bin, among as many
    # peaks of noise; it starts 0.5 s (31 frames) into the phrase.
    kept = (rng.random(120) < 0.5) & (phrase_t >= 31)
    query_t = np.concatenate([phrase_t[kept] - 31 + rng.integers(-1, 2, kept.sum()),
                              rng.integers(0, 281, kept.sum())])
    query_f = np.concatenate([phrase_f[kept] + rng.integers(-1, 2, kept.sum()),
                              rng.integers(4, 150, kept.sum())])
    order = np.argsort(query_t, kind="stable")
    grid = QueryGrid(np.clip(query_t[order], 0, None), query_f[order])
    found = grid.scan(track_t, track_f)
    assert len(found) >= 3
    assert all(any(abs(o - (p + 31)) <= 1 for o in found[:3]) for p in places), found[:5]
    assert all(abs(a - b) >= 62 for i, a in enumerate(found) for b in found[:i])  # ≥ 1 s apart


def test_placements_say_where_a_track_fits_but_not_whether():
    # Track 1's candidate fit at 2 s (z 8) and, found by the scan, a better one at 40 s.
    best = best_per_track([Fit(8.0, 1, 125), Fit(3.0, 2, 600)], [Fit(9.0, 1, 2500), Fit(7.9, 1, 5000)])
    assert best[1] == TrackFit(8.0, 40.0, (2.0, 80.0), 8.0, (2.0,))  # the scan is no vote
    # A track whose candidates fit weakly is no answer, however well the scan fits it somewhere.
    weak = best_per_track([Fit(5.0, 1, 125), Fit(4.8, 2, 600)], [Fit(9.0, 1, 2500)])
    assert weak[1].z == 5.0
    assert not [e for e in fusion.combine(weak, {}, THRESHOLD) if e.is_match]


def test_the_embeddings_alone_answer_only_over_enough_windows():
    votes = {5: fusion.Vote(2 * fusion.EMBEDDING_SCORE, 12.0, fusion.EMBEDDING_ALONE_WINDOWS)}
    [enough] = fusion.combine({}, votes, THRESHOLD)
    assert enough.is_match and enough.kinds == ["embedding"]
    short = {5: votes[5]._replace(windows=fusion.EMBEDDING_ALONE_WINDOWS - 1)}  # under 5 s of audio
    [few] = fusion.combine({}, short, THRESHOLD)
    assert not few.is_match and few.embedding_score == enough.embedding_score
    # ...while a fingerprint fit that the landmarks' votes found at that offset still makes it
    # an answer together
    [fused] = fusion.combine({5: TrackFit(THRESHOLD - 3.0, 12.2, voted_offsets_s=(12.2,))}, short, THRESHOLD)
    assert fused.is_match and fused.kinds == []
    # A small library's index: its windows' neighbours are unlike music, the margins of anything wide.
    [small] = fusion.combine({}, votes, THRESHOLD, index_windows=fusion.EMBEDDING_ALONE_INDEX_WINDOWS - 1)
    assert not small.is_match


def test_a_fit_found_only_where_the_embeddings_proposed_does_not_agree_with_them():
    # The embeddings put the clip 12 s into track 5; the fingerprint fits it 762 frames (12.19 s)
    # in; track 6 is another track the votes found, weakly.
    votes = {5: fusion.Vote(0.1, 12.0, 1)}
    weak_z = fusion.FUSED_SCORE - fusion.EMBEDDING_WEIGHT * 0.1 + 0.5  # enough together
    by_votes = best_per_track([Fit(weak_z, 5, 762), Fit(2.0, 6, 100)])
    [together, _] = fusion.combine(by_votes, votes, THRESHOLD)
    assert together.agree and together.is_match and together.offset_s == 12.192
    # The same fit found only by the search around the embeddings' offset: it fits there by
    # construction, so it is no second opinion; its offset is still the exact one.
    by_search = best_per_track([Fit(weak_z, 5, 762, voted=False), Fit(2.0, 6, 100)])
    assert by_search[5].voted_offsets_s == () and by_search[5].voted_z == 0.0
    [alone, _] = fusion.combine(by_search, votes, THRESHOLD)
    assert not alone.agree and not alone.is_match and alone.offset_s == 12.192
    # Votes that found the track elsewhere, weakly, do not agree either...
    weak_elsewhere = best_per_track([Fit(weak_z, 5, 762, voted=False), Fit(3.0, 5, 3000)])
    assert weak_elsewhere[5].z == weak_z and weak_elsewhere[5].voted_offsets_s == (48.0,)
    [far] = fusion.combine(weak_elsewhere, votes, THRESHOLD)
    assert not far.agree and not far.is_match
    # ...but a fit they found elsewhere that is no noise is a second opinion: the music repeats.
    repeat = best_per_track([Fit(weak_z, 5, 762, voted=False), Fit(4.5, 5, 3000)])
    [again] = fusion.combine(repeat, votes, THRESHOLD)
    assert again.agree and again.is_match and again.offset_s == 12.192
