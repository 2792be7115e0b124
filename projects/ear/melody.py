"""Pitch contour (pitch.py) → notes → interval grams: a melody as what survives a change of key
and of tempo.

- Smoothing: a running median over SMOOTH_FRAMES: a frame where the accompaniment shows
  through a gap between two notes is dropped, not averaged into a glide of false notes, and
  vibrato is flattened.
- Tuning: the recording's offset from the equal-tempered grid (the circular mean of the
  contour's fractional semitones) is taken out, so a hummer who is 30 cents flat throughout
  sings on the grid, and so does a track tuned to 432 Hz.
- Notes: runs of frames that round to the same semitone, at least MIN_NOTE_FRAMES long; a
  shorter run (a slide, a swing of vibrato over a boundary) is no note. Consecutive notes of one
  pitch are one note: a repeated note hummed legato, or split by a breath, is the same melody.
- Grams: each GRAM consecutive intervals between notes, folded into one octave (−5..+6
  semitones), one int key. Intervals forget the key; counting notes, not seconds, forgets the
  tempo; folding forgets octave errors, the pitch trackers' commonest (a note an octave off
  shifts its two intervals by +12 and −12: folded, they are the right ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SMOOTH_FRAMES = 5  # 240 ms at pitch.FRAME_SECONDS: over one period of a 5–6 Hz vibrato
MIN_NOTE_FRAMES = 2  # ~100 ms: shorter is a slide or a wobble, not a note
JOIN = 0.75  # semitones: a run of frames this close to the note's mean pitch is still the note
GRAM = 3  # intervals per key: 1,728 keys
INTERVALS = 12  # a gram's digits: intervals folded into one octave


@dataclass(frozen=True)
class Notes:
    """A melody's notes, in frames of pitch.FRAME_SECONDS."""

    onset: np.ndarray  # int32: first frame
    end: np.ndarray  # int32: one past the last frame
    pitch: np.ndarray  # int16: semitones on the recording's own grid (tuning taken out)

    def __len__(self) -> int:
        return int(self.onset.size)


def smooth(contour: np.ndarray) -> np.ndarray:
    """The contour with vibrato averaged out and its tuning taken out (NaN stays NaN)."""
    if np.isnan(contour).all():
        return contour.astype(np.float32)
    half = SMOOTH_FRAMES // 2
    padded = np.pad(contour.astype(np.float32), half, constant_values=np.nan)
    windows = np.sort(np.lib.stride_tricks.sliding_window_view(padded, SMOOTH_FRAMES), axis=1)
    voiced = SMOOTH_FRAMES - np.isnan(windows).sum(axis=1)  # NaN sorts last
    rows = np.arange(windows.shape[0])
    low, high = np.maximum(voiced - 1, 0) // 2, voiced // 2
    median = (windows[rows, low] + windows[rows, np.minimum(high, SMOOTH_FRAMES - 1)]) / 2
    out = np.where(np.isnan(contour), np.nan, median)
    return (out - tuning(out)).astype(np.float32)


def tuning(contour: np.ndarray) -> float:
    """The offset, in (−0.5, 0.5] semitones, of the voiced frames from the nearest semitones."""
    voiced = contour[~np.isnan(contour)]
    if voiced.size == 0:
        return 0.0
    angle = 2 * np.pi * voiced
    offset = float(np.arctan2(np.sin(angle).mean(), np.cos(angle).mean()) / (2 * np.pi))
    return offset if offset > -0.5 else 0.5


def notes(smoothed: np.ndarray) -> Notes:
    """The notes of a `smooth`ed contour: runs of frames that round to one semitone, joined
    while their mean stays within JOIN of the note's (a pitch between two semitones flickers
    over the boundary: that is one note), then the notes too short dropped and the
    neighbours of one pitch joined."""
    semitone = np.where(np.isnan(smoothed), -1, np.rint(np.nan_to_num(smoothed, nan=-1.0))).astype(np.int64)
    starts = np.flatnonzero(np.diff(semitone, prepend=-2)) if semitone.size else np.zeros(0, np.int64)
    ends = np.append(starts[1:], semitone.size)
    sums = np.add.reduceat(np.nan_to_num(smoothed.astype(np.float64)), starts) if starts.size else starts
    onset, end, pitch = [], [], []
    total, count = 0.0, 0
    for run_start, run_end, run_sum, value in zip(starts.tolist(), ends.tolist(), sums.tolist(),
                                                  semitone[starts].tolist()):
        length = run_end - run_start
        joins = value >= 0 and count and end[-1] == run_start and abs(run_sum / length - total / count) < JOIN
        if joins:
            end[-1], total, count = run_end, total + run_sum, count + length
        elif value >= 0:
            if count:
                pitch.append(total / count)
            onset.append(run_start), end.append(run_end)
            total, count = run_sum, length
    if count:
        pitch.append(total / count)
    onset, end, rounded = np.asarray(onset, np.int64), np.asarray(end, np.int64), np.rint(pitch).astype(np.int64)
    keep = end - onset >= MIN_NOTE_FRAMES
    onset, end, rounded = onset[keep], end[keep], rounded[keep]
    if rounded.size:
        new = np.concatenate([[True], np.diff(rounded) != 0])  # one pitch again: the same note
        last = np.concatenate([np.flatnonzero(new)[1:], [rounded.size]]) - 1
        onset, end, rounded = onset[new], end[last], rounded[new]
    return Notes(onset.astype(np.int32), end.astype(np.int32), rounded.astype(np.int16))


def grams(melody: Notes) -> np.ndarray:
    """int32 key of each run of GRAM + 1 notes (one per note that starts such a run)."""
    if len(melody) <= GRAM:
        return np.zeros(0, np.int32)
    step = (np.diff(melody.pitch.astype(np.int32)) + 5) % 12  # −5..+6 semitones as digits 0..11
    key = np.zeros(step.size - GRAM + 1, np.int32)
    for k in range(GRAM):
        key = key * INTERVALS + step[k:k + key.size]
    return key
