"""Why ear answered a track: the fingerprint evidence behind one match, laid open for a picture
(`picture`, an SVG that stands alone: a file, an image in the widget, with its own colours) and
for `explain` in the answer.

The match's verification is done again in the open, with the peaks of the pass (match.PASSES)
that fit the track best at the answered offset (the first confident one, as the match stops):
- `pairs`: the track's stored peaks that landed on the clip's peaks, as (clip time, track time,
  frequency); all lie on the offset's diagonal, track time = clip time + offset;
- `hits`: the clip's landmarks found in the track, as (clip time, track time): those of the
  right offset line up on the diagonal, chance ones scatter;
- `votes`: those hits counted per second of offset across the whole track, and `chance`, what
  an offset gets by chance (their mean plus three standard deviations, away from the answered
  offset);
- `z`: the verification's z-score, judged against `threshold`; `evidence`: which kinds of
  evidence (fingerprint, embedding) sufficed alone (fusion.py).
For a hum (`explain_hum`), the evidence is the hum's pitch contour laid over the track's
melody in the span it matched, transposed by the match's shift and stretched linearly onto the
span (the alignment itself may bend time within it).
It costs a query's landmark lookups and one verification again, or a hum's pitch tracking again
(tens of ms): made only when asked for. It keeps nothing of the clip.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from markupsafe import escape

from .decode import SAMPLE_RATE
from .features import FRAME_SECONDS, N_FFT, peaks
from .identify import Candidate
from .libraries import Library
from .hum import MATCH_LEAD, MATCH_SIMILARITY, HumMatch
from .match import CONFIDENT_Z, PASSES, as_played
from .melody import smooth
from .pitch import FRAME_SECONDS as PITCH_FRAME_SECONDS, contour

_CHANCE_SDS = 3.0  # an offset's votes above mean + this many deviations stand out from chance
_MOST_POINTS = 400  # peaks and hits drawn at most: a picture under 30 KB


@dataclass(frozen=True)
class Explanation:
    track_id: int
    title: str
    offset_s: float  # where in the track the clip starts
    clip_s: float
    z: float
    threshold: float
    evidence: tuple[str, ...]
    pairs: np.ndarray  # (n, 3): clip s, track s, Hz of the stored peaks that landed
    hits: np.ndarray  # (m, 2): clip s, track s of the clip's landmarks found in the track
    votes: np.ndarray  # hits per second of offset, from 0 s to the track's end
    chance: float

    def to_json(self) -> dict:
        """The evidence, and its picture as SVG text (`svg`)."""
        return {"track_id": self.track_id, "offset_s": self.offset_s, "z": round(self.z, 2),
                "threshold": self.threshold, "evidence": list(self.evidence),
                "pairs": np.round(self.pairs, 2).tolist(), "votes_per_second": self.votes.tolist(),
                "chance_votes": round(self.chance, 2), "hits": len(self.hits), "svg": picture(self)}


def explain(library: Library, samples: np.ndarray, match: Candidate) -> Explanation:
    """The evidence that the clip `samples` is the match's track from the match's offset on."""
    table, track_id = library.table, match.track.id
    table.refresh()
    try:
        ref_t, ref_f = table.peaks_of(track_id)
        offset = int(round(match.offset_s / FRAME_SECONDS))
        found = {}
        best = None  # (z, fit offset, pass's grid, hashes, frames)
        for speed, density, pairing in PASSES:
            if density not in found:
                found[density] = peaks(samples, density)[:2]
            grid, hashes, frames = as_played(*found[density], speed, pairing)
            z, shift = (a[0] for a in grid.verify(ref_t, ref_f, np.array([offset])))
            if best is None or z > best[0]:
                best = (float(z), offset - int(shift), grid, hashes, frames)
            if best[0] >= CONFIDENT_Z:  # where the match stopped too
                break
        z, fit, grid, hashes, frames = best
        hits = table.lookup(hashes)  # as the matcher's pass looked them up
    finally:
        table.release()
    mine = hits.track_id == track_id
    clip_frames, track_frames = frames[hits.query_index[mine]].astype(np.int64), hits.frame[mine].astype(np.int64)
    votes = _votes_per_second(track_frames - clip_frames, int(ref_t[-1]) + 1 if ref_t.size else 0)
    elsewhere = np.delete(votes, np.arange(int(fit * FRAME_SECONDS) - 1, int(fit * FRAME_SECONDS) + 2) % votes.size)
    return Explanation(
        track_id, match.track.title, round(fit * FRAME_SECONDS, 3), round(samples.size / SAMPLE_RATE, 2), z,
        library.config.match_threshold, match.evidence, _landed(grid, ref_t, ref_f, fit)[:_MOST_POINTS],
        np.stack([clip_frames, track_frames], axis=1) * FRAME_SECONDS,
        votes, float(elsewhere.mean() + _CHANCE_SDS * elsewhere.std()) if elsewhere.size else 0.0)


def _landed(grid, ref_t: np.ndarray, ref_f: np.ndarray, fit: int) -> np.ndarray:
    """(clip s, track s, Hz) of the stored peaks in the clip's stretch that land on its grid."""
    q = ref_t.astype(np.int64) - fit
    inside = (q >= 0) & (q < grid.frames)
    q, t, f = q[inside], ref_t[inside], ref_f[inside].astype(np.int64)
    landed = grid.grid[q + 1, f + 1]
    return np.stack([q[landed] * FRAME_SECONDS, t[landed] * FRAME_SECONDS,
                     f[landed] * SAMPLE_RATE / N_FFT], axis=1)


def _votes_per_second(offsets: np.ndarray, track_frames: int) -> np.ndarray:
    seconds = int(np.ceil(track_frames * FRAME_SECONDS)) or 1
    at = np.floor(offsets * FRAME_SECONDS).astype(np.int64)
    return np.bincount(at[(at >= 0) & (at < seconds)], minlength=seconds)


_WHY_WIDTH, _PANEL = 360, 150  # a phone's width; each panel's height
_WHY_STYLE = ("<style>text{font:11px system-ui,sans-serif;fill:#333}.axis{stroke:#999;fill:none}"
              ".hit{stroke:#9aa0a6;stroke-width:3;stroke-linecap:round}"
              ".pair{stroke:#0b63ce;stroke-width:3.5;stroke-linecap:round}.bar{fill:#0b63ce}"
              ".hit-key{fill:#9aa0a6}.pair-key{fill:#0b63ce}.line{stroke:#137333;stroke-dasharray:4 3;fill:none}.chance{stroke:#b3261e;stroke-dasharray:4 3}"
              "</style>")
_MOST_BARS = 120


def picture(e: Explanation) -> str:
    """Why the clip matched the track: above, the clip's time against the track's, with the
    landmarks found in the track (grey) and the peaks that landed (blue) on the offset's
    diagonal (green); below, the landmarks' votes per offset across the track, over the chance
    level (red). Under 30 KB whatever the track's length."""
    top, left, right = 48, 40, _WHY_WIDTH - 8
    span = max(e.clip_s, 1.0)
    low, high = e.offset_s - span * 0.5, e.offset_s + span * 1.5  # the clip's stretch, and around it

    def x(clip_s):
        return left + (np.asarray(clip_s) / span) * (right - left)

    def y(track_s):
        return top + _PANEL - (np.asarray(track_s) - low) / (high - low) * _PANEL

    near = e.hits[(e.hits[:, 1] >= low) & (e.hits[:, 1] <= high)][:_MOST_POINTS]
    scatter = (f'<rect class="axis" x="{left}" y="{top}" width="{right - left}" height="{_PANEL}"/>'
               f'<path class="line" d="M{x(0):.0f} {y(e.offset_s):.0f}L{x(span):.0f} {y(e.offset_s + span):.0f}"/>')
    scatter += _dots("hit", x(near[:, 0]), y(near[:, 1])) if near.size else ""
    scatter += _dots("pair", x(e.pairs[:_MOST_POINTS, 0]), y(e.pairs[:_MOST_POINTS, 1])) if e.pairs.size else ""
    scatter += (f'<text x="{left}" y="{top + _PANEL + 13}">clip 0 s</text>'
                f'<text x="{right}" y="{top + _PANEL + 13}" text-anchor="end">{span:.0f} s</text>'
                f'<text x="{left - 3}" y="{top + 10}" text-anchor="end">{high:.0f}</text>'
                f'<text x="{left - 3}" y="{top + _PANEL}" text-anchor="end">{max(low, 0):.0f}</text>'
                f'<text x="{left + 4}" y="{top + 12}">track time (s)</text>')
    caption = (f'<text x="4" y="14"><tspan font-weight="bold">{_text(e.title)}</tspan> at {_clock(e.offset_s)}</text>'
               f'<text x="4" y="28">z {e.z:.1f} (a match needs {e.threshold:g}) · '
               f'evidence: {escape(", ".join(e.evidence) or "both together")}</text>'
               f'<text x="4" y="42"><tspan class="hit-key">●</tspan> the clip\'s landmarks in the track '
               f'<tspan class="pair-key">●</tspan> {len(e.pairs)} peaks landed</text>')
    return _svg(f"why it matched {e.title}", caption + scatter + _vote_bars(e, left, right, top + _PANEL + 30),
                top + 2 * _PANEL + 50)


def _svg(title: str, body: str, height: int) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WHY_WIDTH} {height}" role="img" '
            f'aria-label="{_text(title)}"><title>{_text(title)}</title>'
            f'{_WHY_STYLE}<rect width="100%" height="100%" fill="#fff"/>{body}</svg>')


def _vote_bars(e: Explanation, left: float, right: float, top: float) -> str:
    """The landmarks' votes per offset (seconds pooled into at most _MOST_BARS bars)."""
    per_bar = int(np.ceil(len(e.votes) / _MOST_BARS)) or 1
    votes = np.add.reduceat(e.votes, np.arange(0, len(e.votes), per_bar)) if len(e.votes) else np.zeros(1)
    # Chance for a bar of several seconds: its own spread, away from the answered offset's bar
    # (deviations do not add up as the seconds do).
    elsewhere = np.delete(votes, min(int(e.offset_s) // per_bar, votes.size - 1)) if votes.size > 1 else votes
    chance = float(elsewhere.mean() + _CHANCE_SDS * elsewhere.std()) if per_bar > 1 else e.chance
    most = max(float(votes.max()), chance, 1.0)
    width = (right - left) / len(votes)
    d = "".join(f"M{left + i * width:.1f} {top + _PANEL:.0f}v{-v / most * _PANEL:.1f}h{max(width - 0.5, 0.5):.1f}"
                f"v{v / most * _PANEL:.1f}z" for i, v in enumerate(votes) if v)
    chance_y = top + _PANEL - chance / most * _PANEL
    return (f'<path class="bar" d="{d}"/><line class="axis" x1="{left}" y1="{top + _PANEL}" x2="{right}" '
            f'y2="{top + _PANEL}"/><line class="chance" x1="{left}" y1="{chance_y:.1f}" x2="{right}" '
            f'y2="{chance_y:.1f}"/><text x="{right}" y="{chance_y - 3:.1f}" text-anchor="end">chance</text>'
            f'<text x="{left}" y="{top - 4}">votes per offset in the track</text>'
            f'<text x="{left - 3}" y="{top + 10}" text-anchor="end">{most:.0f}</text>'
            f'<text x="{left}" y="{top + _PANEL + 13}">0:00</text>'
            f'<text x="{right}" y="{top + _PANEL + 13}" text-anchor="end">{_clock(len(e.votes))}</text>')


def _dots(kind: str, xs: np.ndarray, ys: np.ndarray) -> str:
    # One path of zero-length round-capped strokes: a dot in ~12 bytes.
    return f'<path class="{kind}" d="' + "".join(f"M{a:.0f} {b:.0f}h0" for a, b in zip(xs, ys)) + '"/>'


def _text(text: str) -> str:
    # Escaped, and without the control characters XML does not allow (a file's tag may hold them).
    return str(escape(re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "", text)))


def _clock(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


@dataclass(frozen=True)
class HumExplanation:
    track_id: int
    title: str
    start_s: float  # the span of the track the hum follows
    end_s: float
    score: float
    shift: float
    hum: np.ndarray  # (n, 2): track s, semitones (MIDI) of the hum's voiced frames, laid on the span
    melody: np.ndarray  # (m, 2): track s, semitones of the track's melody around the span

    def to_json(self) -> dict:
        """The contours, and their picture as SVG text (`svg`)."""
        return {"track_id": self.track_id, "start_s": self.start_s, "end_s": self.end_s, "score": self.score,
                "shift": round(self.shift, 2), "hum": np.round(self.hum, 2).tolist(),
                "melody": np.round(self.melody, 2).tolist(), "svg": hum_picture(self)}


def explain_hum(library: Library, samples: np.ndarray, match: HumMatch, title: str) -> HumExplanation:
    """The hum `samples` over the melody of the match's track, in the span it matched."""
    hummed = smooth(contour([samples]))
    voiced = np.flatnonzero(~np.isnan(hummed))
    melody = next((m.contour for m in library.melodies.refresh().tracks if m.track_id == match.track_id),
                  np.zeros(0, np.float16))  # none: the track was removed since the search
    around = slice(int(max(match.start_s - 1, 0) / PITCH_FRAME_SECONDS), int((match.end_s + 1) / PITCH_FRAME_SECONDS))
    track = np.stack([np.arange(melody.size)[around] * PITCH_FRAME_SECONDS, melody[around].astype(np.float64)], axis=1)
    track = track[~np.isnan(track[:, 1])]
    pitch = hummed[voiced] + match.shift
    if track.size:  # into the octave of the track's melody there (the match folds octaves)
        pitch += 12 * np.round((np.median(track[:, 1]) - np.median(pitch)) / 12)
    first, last = (voiced[[0, -1]] if voiced.size else (0, 1))
    at = match.start_s + (voiced - first) / max(last - first, 1) * (match.end_s - match.start_s)
    return HumExplanation(match.track_id, title, match.start_s, match.end_s, match.score, match.shift,
                          np.stack([at, pitch], axis=1)[::2], track[::2])


def hum_picture(e: HumExplanation) -> str:
    """The hum (blue) over the track's melody (grey): time in the track against pitch."""
    top, left, right, height = 48, 40, _WHY_WIDTH - 8, 2 * _PANEL
    both = np.concatenate([e.hum[:, 1], e.melody[:, 1]]) if e.hum.size + e.melody.size else np.zeros(1)
    low, high = float(both.min()) - 1, float(both.max()) + 1
    t0, t1 = max(e.start_s - 1, 0), e.end_s + 1

    def dots(kind: str, points: np.ndarray) -> str:
        if not points.size:
            return ""
        return _dots(kind, left + (points[:, 0] - t0) / (t1 - t0) * (right - left),
                     top + height - (points[:, 1] - low) / (high - low) * height)

    caption = (f'<text x="4" y="14"><tspan font-weight="bold">{_text(e.title)}</tspan>, the melody at '
               f'{_clock(e.start_s)}–{_clock(e.end_s)}</text>'
               f'<text x="4" y="28">{e.score:.0%} alike (a match: {MATCH_SIMILARITY:.0%}, {MATCH_LEAD:.0%} over '
               f'chance) · hum {e.shift:+.0f} semitones</text>'
               f'<text x="4" y="42"><tspan class="hit-key">●</tspan> the track\'s melody '
               f'<tspan class="pair-key">●</tspan> the hum, stretched onto the span</text>')
    body = (caption + f'<rect class="axis" x="{left}" y="{top}" width="{right - left}" height="{height}"/>'
            + dots("hit", e.melody[:_MOST_POINTS * 2]) + dots("pair", e.hum[:_MOST_POINTS])
            + f'<text x="{left}" y="{top + height + 13}">{_clock(t0)}</text>'
            f'<text x="{right}" y="{top + height + 13}" text-anchor="end">{_clock(t1)}</text>'
            f'<text x="{left - 3}" y="{top + 10}" text-anchor="end">{_note(high)}</text>'
            f'<text x="{left - 3}" y="{top + height}" text-anchor="end">{_note(low)}</text>')
    return _svg(f"why the hum matched {e.title}", body, top + height + 20)


def _note(midi: float) -> str:
    return ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"][int(round(midi)) % 12] + str(int(round(midi)) // 12 - 1)
