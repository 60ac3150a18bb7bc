"""A small event-camera emulator: an image moved in saccades, events from log-intensity changes.

Each pixel keeps the log intensity at which it last fired; whenever the current log intensity
has moved at least ``contrast`` away from it, the pixel emits one event per threshold crossed
(ON for increases), timestamped by linear interpolation inside the frame interval, and its
reference follows. Background-activity noise adds random events at ``noise_rate`` Hz per
pixel. The motion copies N-MNIST's: three straight saccades tracing a triangle.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from spikelab.data.events import make_events

TRIANGLE = ((0.0, 0.0), (1.5, 3.0), (3.0, 0.0), (0.0, 0.0))  # pixel offsets of N-MNIST's saccades


def _shift(image: np.ndarray, dx: float, dy: float, out_size: Sequence[int]) -> np.ndarray:
    """``image`` placed at the centre of an ``out_size`` (W, H) canvas, shifted by (dx, dy) with
    bilinear interpolation."""
    w, h = int(out_size[0]), int(out_size[1])
    ih, iw = image.shape
    canvas = np.zeros((h + 2, w + 2), np.float64)
    x0 = (w - iw) // 2 + 1
    y0 = (h - ih) // 2 + 1
    canvas[y0:y0 + ih, x0:x0 + iw] = image
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    rolled = np.roll(np.roll(canvas, iy, axis=0), ix, axis=1)
    right = np.roll(rolled, 1, axis=1)
    down = np.roll(rolled, 1, axis=0)
    both = np.roll(right, 1, axis=0)
    out = (1 - fx) * (1 - fy) * rolled + fx * (1 - fy) * right + (1 - fx) * fy * down + fx * fy * both
    return out[1:h + 1, 1:w + 1]


def emulate_saccades(image: np.ndarray, sensor_size: Sequence[int] = (34, 34, 2), duration_us: int = 300_000,
                     frame_us: int = 1000, contrast: float = 0.15, noise_rate: float = 0.5,
                     path: Sequence[Sequence[float]] = TRIANGLE, rng: Optional[np.random.Generator] = None
                     ) -> np.ndarray:
    """Events of a DVS watching ``image`` (values in [0, 1], smaller than the sensor) move along
    ``path`` (pixel offsets visited in equal time) for ``duration_us``."""
    rng = np.random.default_rng(0) if rng is None else rng
    w, h = int(sensor_size[0]), int(sensor_size[1])
    steps = duration_us // frame_us
    legs = len(path) - 1
    positions = []
    for k in range(steps + 1):
        u = k / steps * legs
        leg = min(int(u), legs - 1)
        f = u - leg
        (ax, ay), (bx, by) = path[leg], path[leg + 1]
        positions.append((ax + f * (bx - ax), ay + f * (by - ay)))
    log = np.log(0.05 + _shift(image, *positions[0], (w, h)))
    reference = log.copy()
    xs, ys, ts, ps = [], [], [], []
    for k in range(1, steps + 1):
        current = np.log(0.05 + _shift(image, *positions[k], (w, h)))
        diff = current - reference
        crossings = np.floor(np.abs(diff) / contrast).astype(np.int64)
        yy, xx = np.nonzero(crossings)
        if len(yy):
            n = crossings[yy, xx]
            rep_y, rep_x = np.repeat(yy, n), np.repeat(xx, n)
            on = np.repeat(diff[yy, xx] > 0, n)
            # the j-th crossing of a pixel happens when the change reaches j * contrast
            j = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + 1
            fraction = j * contrast / np.repeat(np.abs(current - log)[yy, xx] + 1e-12, n)
            t = (k - 1) * frame_us + np.clip(fraction, 0, 1) * frame_us
            xs.append(rep_x), ys.append(rep_y), ts.append(t), ps.append(on)
            reference[yy, xx] += np.sign(diff[yy, xx]) * n * contrast
        log = current
    noise = rng.poisson(noise_rate * duration_us * 1e-6 * w * h)
    xs.append(rng.integers(0, w, noise)), ys.append(rng.integers(0, h, noise))
    ts.append(rng.uniform(0, duration_us, noise)), ps.append(rng.integers(0, 2, noise).astype(bool))
    x, y, t, p = (np.concatenate(v) for v in (xs, ys, ts, ps))
    order = np.argsort(t, kind="stable")
    return make_events(x[order], y[order], np.floor(t[order]).astype(np.int64), p[order])


__all__ = ["emulate_saccades"]
