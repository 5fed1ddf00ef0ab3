"""Loss curves as inline SVG computed on the server: no script, no chart library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from tunevault.models import MetricRow

WIDTH, HEIGHT, PAD = 640, 240, 48
# The names tunevault push and the Trainer callback write (docs/push.md), and the raw ones.
SERIES = (("train", ("train/loss", "loss")), ("eval", ("eval/loss", "eval_loss")))


@dataclass(frozen=True)
class Point:
    x: float  # SVG coordinates
    y: float
    step: int  # as recorded
    loss: float


@dataclass(frozen=True)
class Series:
    name: str
    points: list[Point]

    @property
    def polyline(self) -> str:
        return " ".join(f"{p.x:.1f},{p.y:.1f}" for p in self.points)


@dataclass(frozen=True)
class Plot:
    width: int
    height: int
    pad: int  # room for the axis labels
    series: list[Series]
    x_label: tuple[int, int]  # first and last step
    y_label: tuple[float, float]  # lowest and highest loss


def _values(rows: Sequence[MetricRow], names: tuple[str, ...]) -> list[tuple[int, float]]:
    out = []
    for row in rows:
        value = next((row.values[n] for n in names if n in row.values), None)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out.append((row.step, float(value)))
    return out


def loss_plot(rows: Sequence[MetricRow]) -> Plot | None:
    """The train and eval loss against the step; None when no row has a loss."""
    found = [(name, vals) for name, names in SERIES if (vals := _values(rows, names))]
    if not found:
        return None
    steps = [s for _, vals in found for s, _ in vals]
    losses = [v for _, vals in found for _, v in vals]
    x0, x1 = min(steps), max(steps)
    y0, y1 = min(losses), max(losses)

    def point(step: int, loss: float) -> Point:
        fx = (step - x0) / (x1 - x0) if x1 > x0 else 0.5
        fy = (loss - y0) / (y1 - y0) if y1 > y0 else 0.5
        x, y = PAD + fx * (WIDTH - 2 * PAD), HEIGHT - PAD - fy * (HEIGHT - 2 * PAD)
        return Point(x, y, step, loss)

    series = [Series(name, [point(s, v) for s, v in vals]) for name, vals in found]
    return Plot(WIDTH, HEIGHT, PAD, series, (x0, x1), (y0, y1))
