"""When a fingerprint fit is an answer: the threshold, or a near miss that stands out."""
from __future__ import annotations

from ear import fusion
from ear.match import STANDOUT_GAP, fingerprint_suffices, runner_ups

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
    best = {1: (9.0, 0.0, ()), 2: (4.0, 0.0, ()), 3: (3.0, 0.0, ())}
    assert runner_ups(best) == {1: 4.0, 2: 9.0, 3: 9.0}
    assert runner_ups({}) == {}


def test_fusion_answers_a_lone_near_miss_but_not_one_among_equals():
    lone = fusion.combine({7: (6.2, 12.0, ()), 8: (3.1, 40.0, ())}, {}, THRESHOLD)
    assert [e.track_id for e in lone if e.accepted] == [7] and lone[0].kinds == ["fingerprint"]
    crowded = fusion.combine({7: (6.2, 12.0, ()), 8: (5.9, 40.0, ())}, {}, THRESHOLD)
    assert not [e for e in crowded if e.accepted]


def test_a_fit_on_a_sliver_of_the_track_does_not_count():
    import numpy as np
    from ear.match import _QueryGrid
    rng = np.random.default_rng(0)
    # A 10 s clip (625 frames) whose peaks are exactly the track's first 10 s.
    t = np.sort(rng.integers(0, 625, 300))
    f = rng.integers(4, 150, 300)
    grid = _QueryGrid(t, f)
    whole, _ = grid.verify(t, f, 0)
    assert whole > 10
    # The same track laid 9 s early: only its first second would be under the clip.
    sliver, _ = grid.verify(t, f, -560)
    assert sliver == 0.0
