"""Where the labels of the Plotly charts on a page are, and which of them collide.

Plotly draws its text as SVG: the figure's title (``gtitle``), axis titles (``xtitle``,
``ytitle``, ``y2title``...), tick labels (``g.xtick > text``...), legend entries
(``legendtext``) and annotations (``annotation-text``: subplot titles, drill labels).
``BOXES_JS`` returns each one's bounding box in the page; ``collisions`` says, in words,
which overlap and which stick out of their chart. Tick labels are not compared with each
other (Plotly spaces them itself, and an x and a y tick label may share a corner).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOLERANCE_PX = 1.0  # boxes that only touch do not collide

BOXES_JS = """
() => {
  const kinds = [
    ['legend', '.legendtext'],
    ['title', '.gtitle, .gtitle-subtitle'],
    ['axis title', '.infolayer text[class$="title"]:not(.gtitle):not(.gtitle-subtitle)'],
    ['annotation', '.annotation-text'],
    ['tick', 'g[class$="tick"] > text'],
  ];
  const boxes = [];
  document.querySelectorAll('.js-plotly-plot').forEach((plot, chart) => {
    const svg = plot.querySelector('.main-svg');
    if (!svg) return;
    const frame = svg.getBoundingClientRect();
    const title = plot.querySelector('.gtitle');
    const name = title ? title.textContent : `chart ${chart}`;
    for (const [kind, css] of kinds) {
      plot.querySelectorAll(css).forEach((el) => {
        const r = el.getBoundingClientRect();
        const style = getComputedStyle(el);
        if (!el.textContent.trim() || r.width === 0 || r.height === 0) return;
        const hidden = style.display === 'none' || style.visibility === 'hidden';
        if (hidden || style.opacity === '0') return;
        boxes.push({chart: name, kind, text: el.textContent.trim(),
                    x: r.x, y: r.y, w: r.width, h: r.height,
                    fx: frame.x, fy: frame.y, fw: frame.width, fh: frame.height});
      });
    }
  });
  return boxes;
}
"""

# The status strip's texts that do not fit their box (cut off with an ellipsis).
CUT_OFF_JS = """() => [...document.querySelectorAll('[data-testid="stMetric"] *')]
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1
                 && getComputedStyle(e).overflow !== 'visible')
    .map(e => e.textContent.trim())"""


@dataclass(frozen=True)
class Box:
    chart: str
    kind: str
    text: str
    x: float
    y: float
    w: float
    h: float
    frame: tuple[float, float, float, float]  # the chart's own x, y, width, height

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Box:
        frame = (float(raw["fx"]), float(raw["fy"]), float(raw["fw"]), float(raw["fh"]))
        return cls(
            str(raw["chart"]),
            str(raw["kind"]),
            str(raw["text"]),
            *(float(raw[k]) for k in ("x", "y", "w", "h")),
            frame=frame,
        )

    def overlaps(self, other: Box) -> bool:
        t = TOLERANCE_PX
        return (
            self.x + t < other.x + other.w - t
            and other.x + t < self.x + self.w - t
            and self.y + t < other.y + other.h - t
            and other.y + t < self.y + self.h - t
        )

    def clipped(self) -> bool:
        fx, fy, fw, fh = self.frame
        t = TOLERANCE_PX
        return (
            self.x < fx - t
            or self.y < fy - t
            or self.x + self.w > fx + fw + t
            or self.y + self.h > fy + fh + t
        )

    def __str__(self) -> str:
        return f"{self.kind} {self.text!r}"


def _compared(a: Box, b: Box) -> bool:
    if a.chart != b.chart or a.frame != b.frame:
        return False
    same = {a.kind, b.kind}
    return same not in ({"tick"}, {"legend"})


def collisions(raw: Iterable[Mapping[str, Any]]) -> list[str]:
    """Each pair of labels of one chart that overlap, and each label that reaches out of
    its chart, as a sentence; empty when the charts are clean."""
    boxes = [Box.parse(r) for r in raw]
    found = [f"{b.chart}: {b} is clipped by its chart's edge" for b in boxes if b.clipped()]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if _compared(a, b) and a.overlaps(b):
                found.append(f"{a.chart}: {a} overlaps {b}")
    return found


def kinds(raw: Sequence[Mapping[str, Any]]) -> set[str]:
    return {str(r["kind"]) for r in raw}
