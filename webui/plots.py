"""Small SVG figures for the run pages: per-class bars and a confusion matrix.

Drawn as SVG text by hand (a few rectangles each), so the pages need no plotting
library in the Airflow environment and no JavaScript. Every label is escaped.
"""
from __future__ import annotations

from html import escape

COLOURS = {"precision": "#4c78a8", "recall": "#f58518", "f1": "#54a24b"}


def per_class_bars(rows: list[dict], width: int = 640) -> str:
    """Horizontal bars of precision, recall and F1 per class (``rows``: category and the
    three figures in 0..1)."""
    label_w, bar_h, gap = 200, 7, 8
    height = len(rows) * (3 * bar_h + gap) + 30
    scale = width - label_w - 50
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
              f'role="img" aria-label="per-class precision, recall and F1">')]
    for i, (name, colour) in enumerate(COLOURS.items()):
        parts.append(f'<rect x="{label_w + i * 90}" y="2" width="10" height="10" '
                     f'fill="{colour}"/><text x="{label_w + i * 90 + 14}" y="11" '
                     f'font-size="11">{name}</text>')
    for r, row in enumerate(rows):
        top = 22 + r * (3 * bar_h + gap)
        parts.append(f'<text x="{label_w - 6}" y="{top + 2 * bar_h}" font-size="11" '
                     f'text-anchor="end">{escape(str(row["category"]))[:40]} '
                     f'({int(row.get("support") or 0)})</text>')
        for i, (name, colour) in enumerate(COLOURS.items()):
            value = float(row.get(name) or 0.0)
            parts.append(f'<rect x="{label_w}" y="{top + i * bar_h}" '
                         f'width="{max(value, 0) * scale:.1f}" height="{bar_h - 1}" '
                         f'fill="{colour}"><title>{name} {value:.3f}</title></rect>')
        parts.append(f'<text x="{label_w + scale + 4}" y="{top + 2 * bar_h + 1}" '
                     f'font-size="10">F1 {float(row.get("f1") or 0):.2f}</text>')
    parts.append("</svg>")
    return "".join(parts)


def confusion_matrix(classes: list[str], matrix: list[list[int]], cell: int = 22) -> str:
    """A heat map: rows the true class, columns the predicted one, the count in each cell."""
    n = len(classes)
    label_w = 200
    size = max(label_w + n * cell + 10, 480)
    height = 20 + n * cell + 10
    peak = max((max(row) for row in matrix if row), default=0) or 1
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{height}" '
              f'role="img" aria-label="confusion matrix">'),
             (f'<text x="{label_w}" y="12" font-size="11">predicted (columns; hover for '
              f'names) / true (rows)</text>')]
    for i, name in enumerate(classes):
        y = 20 + i * cell
        parts.append(f'<text x="{label_w - 6}" y="{y + cell * 0.7:.0f}" font-size="10" '
                     f'text-anchor="end">{escape(name)[:36]}</text>')
        for j, count in enumerate(matrix[i]):
            shade = int(255 - 200 * count / peak)
            colour = f"rgb({shade},{shade},255)" if i != j else f"rgb({shade},235,{shade})"
            parts.append(f'<rect x="{label_w + j * cell}" y="{y}" width="{cell - 1}" '
                         f'height="{cell - 1}" fill="{colour}"><title>true {escape(name)}, '
                         f'predicted {escape(classes[j])}: {count}</title></rect>')
            if count:
                parts.append(f'<text x="{label_w + j * cell + cell / 2:.0f}" '
                             f'y="{y + cell * 0.7:.0f}" font-size="9" '
                             f'text-anchor="middle">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)
