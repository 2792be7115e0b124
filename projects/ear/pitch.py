"""Audio → pitch contour: the fundamental of the strongest harmonic sound, frame by frame.

One method serves both sides of query by humming: a hum (one voice) and a stored track, where the
strongest harmonic series in the melody's range is the lead line far more often than any other
(predominant melody). Salience by harmonic summation: every candidate fundamental on a grid of
GRID_STEP semitones scores the compressed spectral magnitudes at its first HARMONICS multiples,
the h-th weighted WEIGHT^(h−1); a frame's pitch is its best candidate, refined between grid
points by a parabola. A frame is voiced when that best candidate stands out from the frame's
average candidate (a note, not noise or a drum) and the frame is loud enough against the
recording's loud frames (not a breath or the room between notes).

A contour is float32 MIDI numbers (69 = 440 Hz) at FRAME_SECONDS, NaN where unvoiced. Frame k
covers samples [k·HOP, k·HOP + N_FFT) (zeros past the end), one frame for every 3 landmark
frames (features.py): a clip's frames are those of the same stretch of the whole track.
`BlockContour` takes a features.Block at a time, so a track streams through.
"""
from __future__ import annotations

import math
import warnings
from typing import Iterable

import numpy as np
import torch

from .decode import SAMPLE_RATE
from .features import HOP as LANDMARK_HOP, Block, blocks, squared_magnitude

N_FFT = 2048  # 128 ms: bins of 7.8 Hz, fine enough at the upper harmonics to place a voice
HOP = 3 * LANDMARK_HOP  # 48 ms, a whole number of landmark frames: notes last ≥ 100 ms
FRAME_SECONDS = HOP / SAMPLE_RATE
LOWEST, HIGHEST = 40.0, 96.0  # MIDI: 82 Hz (a low male hum) to 2.1 kHz (a high lead)
# A track's lead line sits above its bass: below C3 (131 Hz) a mix's strongest harmonic series is
# the bass far more often than the melody (half the melody's note grams lost, docs/hum.md).
TRACK_LOWEST = 48.0
GRID_STEP = 0.1  # semitones: 10 cents, refined between grid points by a parabola
HARMONICS = 8  # a voice's or an instrument's first eight carry most of its energy below 5 kHz
WEIGHT = 0.6  # the h-th harmonic counts 0.6^(h−1): a fundamental outscores its sub-octave
_TOP_HZ = 5000.0  # above it the room and Opus leave little of a hum's harmonics
# Voiced: the best candidate ≥ PEAKINESS × the frame's mean candidate (a flat spectrum scores
# about 1.5; a mix where no line leads, about 2), and the frame ≥ the recording's loud frames'
# level − QUIET_DB. WEIGHT and PEAKINESS were chosen on 50 beats of `ear eval --hum` (seed 0),
# by how many of their melodies' note grams the contour keeps (docs/hum.md).
PEAKINESS = 2.8
QUIET_DB = 30.0
_WINDOW = torch.hann_window(N_FFT, periodic=False)


def _salience_weights() -> tuple[torch.Tensor, np.ndarray]:
    """(candidates × bins) matrix: each harmonic of each candidate shared by its two nearest
    bins (linear interpolation), and the candidates' MIDI numbers. Sparse (CSR): a candidate
    weighs 2 × HARMONICS of the ~640 bins, so a dense product would be 98 % multiplications by
    zero, five times the CPU (docs/speed.md)."""
    midi = np.arange(LOWEST - 12, HIGHEST + GRID_STEP / 2, GRID_STEP)
    hz = 440.0 * 2 ** ((midi - 69) / 12)
    bins = int(_TOP_HZ * N_FFT / SAMPLE_RATE) + 2
    weights = np.zeros((bins, midi.size), np.float32)
    for h in range(1, HARMONICS + 1):
        position = h * hz * N_FFT / SAMPLE_RATE
        below = np.floor(position).astype(int)
        inside = below + 1 < bins
        frac = position - below
        cols = np.nonzero(inside)[0]
        weights[below[cols], cols] += WEIGHT ** (h - 1) * (1 - frac[cols])
        weights[below[cols] + 1, cols] += WEIGHT ** (h - 1) * frac[cols]
    by_candidate = weights.T
    rows, cols = np.nonzero(by_candidate)  # row-major: each candidate's bins in order
    row_starts = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=midi.size))])
    # Made from its parts, not by to_sparse_csr(): that runs in torch's thread pool, which the
    # Gunicorn master, where this module is imported, must never start (runtime.py).
    with warnings.catch_warnings():  # "sparse CSR support is in beta": its product is all we use
        warnings.simplefilter("ignore", UserWarning)
        sparse = torch.sparse_csr_tensor(torch.from_numpy(row_starts), torch.from_numpy(cols),
                                         torch.from_numpy(by_candidate[rows, cols]), by_candidate.shape)
    return sparse, midi.astype(np.float32)


_WEIGHTS, _CANDIDATES = _salience_weights()


def contour(parts: Iterable[np.ndarray], lowest: float = LOWEST) -> np.ndarray:
    """The pitch contour of audio arriving in parts of any size (a query whole, as one part;
    a track streamed, with `lowest=TRACK_LOWEST`), held a block at a time."""
    whole = BlockContour(lowest)
    for block in blocks(parts):
        whole.add(block)
    return whole.result()


class BlockContour:
    """A contour (candidates from `lowest` up), a features.Block at a time: what ingest feeds
    beside the other chains. The loudness gate needs the whole recording's loud level, so
    frames are kept with their level and judged at the end."""

    def __init__(self, lowest: float) -> None:
        self._first = int(round((lowest - _CANDIDATES[0]) / GRID_STEP))  # the lowest candidate allowed
        self._pitch: list[np.ndarray] = []  # unvoiced-or-not pitch of each frame
        self._strong: list[np.ndarray] = []  # frames whose candidate stands out
        self._level: list[np.ndarray] = []

    def add(self, block: Block) -> None:
        first = math.ceil(block.first / 3)  # this block's contour frames: their first sample
        stop = math.ceil(block.stop / 3)  # lies in the block's own landmark frames
        offset = (first * 3 - block.begin) * LANDMARK_HOP
        salience, level = _salience(block.samples[offset:], stop - first)
        pitch, strong = _best(salience, self._first)
        self._pitch.append(pitch)
        self._strong.append(strong)
        self._level.append(level)

    def result(self) -> np.ndarray:
        if not self._pitch:
            return np.zeros(0, np.float32)
        level = np.concatenate(self._level)
        pitch, strong = np.concatenate(self._pitch), np.concatenate(self._strong)
        return np.where(strong & (level >= _loud_level(level) - QUIET_DB), pitch, np.nan).astype(np.float32)


def _salience(samples: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames × candidates) salience, and each frame's level in dB."""
    need = (frames - 1) * HOP + N_FFT if frames else 0
    x = np.zeros(need, np.float32)
    x[:min(need, samples.size)] = samples[:need]
    if frames == 0:
        return np.zeros((0, _CANDIDATES.size), np.float32), np.zeros(0, np.float32)
    spec = torch.stft(torch.from_numpy(x), N_FFT, HOP, window=_WINDOW, center=False, return_complex=True)
    power = squared_magnitude(spec[:_WEIGHTS.shape[1]])  # bins × frames
    level = 10 * torch.log10(power.sum(dim=0) + 1e-10)
    # magnitude^0.5, so that a loud harmonic does not drown the series' others: power^0.25, as
    # two square roots (a quarter of pow's CPU).
    salience = (_WEIGHTS @ power.sqrt_().sqrt_()).T.contiguous()
    return salience.numpy(), level.numpy()


def _best(salience: np.ndarray, first: int) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's best candidate from candidate `first` up, as MIDI (refined by a parabola
    through its neighbours), and whether it stands out from the frame's mean candidate."""
    octave = int(round(12 / GRID_STEP))
    # A candidate whose sub-octave outscores it is a harmonic of a lower sound (the bass), not
    # a fundamental: only the others may be a frame's pitch.
    allowed = np.where(salience[:, first:] > salience[:, first - octave:-octave], salience[:, first:], 0)
    k = np.argmax(allowed, axis=1) + first
    rows = np.arange(salience.shape[0])
    inner = np.clip(k, 1, salience.shape[1] - 2)
    left, mid, right = (salience[rows, inner + d] for d in (-1, 0, 1))
    curve = left - 2 * mid + right
    shift = np.where((k == inner) & (curve < 0), 0.5 * (left - right) / np.where(curve < 0, curve, -1), 0.0)
    pitch = _CANDIDATES[k] + GRID_STEP * np.clip(shift, -0.5, 0.5)
    strong = salience[rows, k] >= PEAKINESS * (salience.mean(axis=1) + 1e-12)
    return pitch.astype(np.float32), strong


def _loud_level(level: np.ndarray) -> float:
    return float(np.percentile(level, 95)) if level.size else 0.0

