"""The dashboard's pictures, drawn on the server as SVG: bars per day or per bin (stacked when
there are several series), and the reliability plot (confidence against what people said).

SVG written here rather than a chart library: a few shapes per plot, no script to vendor or
keep up to date, pictures that are there before any script runs, and a page that stays small.
Each is a `viewBox` that scales to the page's width; colours are the page's CSS classes
(`series-0`, `series-1`, `axis`), so light and dark themes need nothing here. Every label is
escaped (titles can hold markup).
"""
from __future__ import annotations

from collections.abc import Sequence

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 200  # the viewBox: scaled to the page's width, text stays legible at 320 px
_LEFT, _BOTTOM, _TOP = 36, 22, 22  # room for the value axis, the labels and the legend
_MOST_BAR = 48  # a bar's widest: a few days are a few bars, not a wall


def bars(labels: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], title: str,
         every_label: int = 1) -> Markup:
    """Stacked bars, one per label; `series` are (name, values), stacked in that order.
    `every_label`: write one label in so many (dates over months)."""
    totals = [sum(values[i] for _, values in series) for i in range(len(labels))]
    top = max(totals, default=0) or 1
    width = min((WIDTH - _LEFT) / max(len(labels), 1), _MOST_BAR)
    height = HEIGHT - _BOTTOM - _TOP
    shapes = []
    for i, label in enumerate(labels):
        x, base = _LEFT + i * width, HEIGHT - _BOTTOM
        for k, (name, values) in enumerate(series):
            h = values[i] / top * height
            base -= h
            shapes.append(f'<rect class="series-{k}" x="{x + width * 0.1:.1f}" y="{base:.1f}" '
                          f'width="{width * 0.8:.1f}" height="{h:.1f}"><title>{escape(label)}: '
                          f'{escape(name)} {values[i]:g}</title></rect>')
        if i % every_label == 0:
            shapes.append(f'<text x="{x + width / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                          f'{escape(label)}</text>')
    legend = "".join(f'<tspan class="series-{k}-text">■ {escape(name)}</tspan> '
                     for k, (name, _) in enumerate(series)) if len(series) > 1 else ""
    return _svg(title, _value_axis(top) + "".join(shapes) +
                (f'<text x="{WIDTH - 4}" y="12" text-anchor="end">{legend}</text>' if legend else ""))


def reliability(bins: Sequence[tuple[int, int]], title: str) -> Markup:
    """Per tenth of confidence (judged, right): a dot at the share said right, sized by how many
    judged it, over the diagonal a calibrated confidence would follow."""
    size = HEIGHT - _BOTTOM - _TOP
    left = _LEFT + (WIDTH - _LEFT - size) / 2  # square, centred
    shapes = [f'<line class="axis" x1="{left}" y1="{_TOP + size}" x2="{left + size}" y2="{_TOP}"/>',
              f'<rect class="axis" fill="none" x="{left}" y="{_TOP}" width="{size}" height="{size}"/>']
    most = max((judged for judged, _ in bins), default=0) or 1
    for tenth, (judged, right) in enumerate(bins):
        if judged:
            x = left + (tenth + 0.5) / len(bins) * size
            y = _TOP + (1 - right / judged) * size
            shapes.append(f'<circle class="series-0" cx="{x:.1f}" cy="{y:.1f}" r="{3 + 6 * judged / most:.1f}">'
                          f'<title>confidence {tenth / 10:.1f}–{(tenth + 1) / 10:.1f}: {right} of {judged} '
                          f'said right</title></circle>')
    labels = (f'<text x="{left}" y="{HEIGHT - 6}">0</text>'
              f'<text x="{left + size}" y="{HEIGHT - 6}" text-anchor="end">confidence 1</text>'
              f'<text x="{left - 4}" y="{_TOP + 10}" text-anchor="end">right 100%</text>'
              f'<text x="{left - 4}" y="{_TOP + size}" text-anchor="end">0%</text>')
    return _svg(title, "".join(shapes) + labels)


def _value_axis(top: float) -> str:
    y = HEIGHT - _BOTTOM
    return (f'<line class="axis" x1="{_LEFT}" y1="{y}" x2="{WIDTH}" y2="{y}"/>'
            f'<text x="{_LEFT - 4}" y="{_TOP + 10}" text-anchor="end">{top:g}</text>'
            f'<text x="{_LEFT - 4}" y="{y}" text-anchor="end">0</text>')


def _svg(title: str, body: str) -> Markup:
    return Markup(f'<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
                  f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">'
                  f'<title>{escape(title)}</title>{body}</svg>')
