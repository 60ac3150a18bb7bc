"""Event arrays: NumPy structured arrays with fields ``x, y, t, p`` (Tonic's layout).

``t`` is int64 microseconds, ``p`` is 1 for ON and 0 for OFF. A sensor size is
``(width, height, polarities)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import numpy as np

# the same dtype as tonic.io.events_struct, so arrays pass between the two libraries unchanged
EVENT_DTYPE = np.dtype([("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", bool)])

PathLike = Union[str, Path]


class EventFormatError(ValueError):
    """A recording could not be decoded: says which file, where (byte offset) and why."""

    def __init__(self, path: Optional[PathLike], message: str, offset: Optional[int] = None) -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{path if path is not None else '<bytes>'}{where}: {message}")
        self.path = None if path is None else str(path)
        self.offset = offset


def make_events(x, y, t, p) -> np.ndarray:
    """A structured event array from four equally long sequences."""
    x = np.asarray(x)
    events = np.empty(x.shape[0], dtype=EVENT_DTYPE)
    events["x"] = x
    events["y"] = y
    events["t"] = t
    events["p"] = p
    return events


def check_events(events: np.ndarray, path: Optional[PathLike] = None, sensor_size=None,
                 offsets: Optional[np.ndarray] = None, allow_unsorted: bool = False, *, first: int = 0,
                 prev_t: Optional[int] = None) -> np.ndarray:
    """Refuse out-of-range coordinates and decreasing timestamps, naming the first bad event in
    file order (and its byte offset when ``offsets`` gives each event's position in the file).

    ``first`` is the index of ``events[0]`` in the recording and ``prev_t`` the time of the event
    before it, so that a recording checked piece by piece gives the same error as checked whole.
    With ``allow_unsorted=True``, decreasing timestamps are repaired by a stable sort on ``t``.
    """
    n = len(events)
    if not n:
        return events
    bad_xy = None
    if sensor_size is not None:
        w, h = int(sensor_size[0]), int(sensor_size[1])
        x, y = events["x"], events["y"]
        mask = (x < 0) | (x >= w) | (y < 0) | (y >= h)
        if mask.any():
            bad_xy = int(mask.argmax())
    t = events["t"]
    bad_t = None
    if allow_unsorted:
        if bad_xy is None and n > 1 and (t[1:] < t[:-1]).any():
            return events[np.argsort(t, kind="stable")]
    elif prev_t is not None and t[0] < prev_t:
        bad_t = 0
    elif n > 1:
        down = t[1:] < t[:-1]
        if down.any():
            bad_t = int(down.argmax()) + 1
    if bad_xy is not None and (bad_t is None or bad_xy <= bad_t):
        i = bad_xy
        raise EventFormatError(path, f"event {first + i} at (x={events['x'][i]}, y={events['y'][i]}) is outside the "
                                     f"{w}x{h} sensor (expected 0 <= x < {w}, 0 <= y < {h})",
                               None if offsets is None else int(offsets[i]))
    if bad_t is not None:
        i = bad_t
        before = prev_t if i == 0 else int(t[i - 1])
        raise EventFormatError(path, f"timestamps decrease at event {first + i} ({before} -> {int(t[i])} us); "
                                     "pass allow_unsorted=True to sort them",
                               None if offsets is None else int(offsets[i]))
    return events


__all__ = ["EVENT_DTYPE", "EventFormatError", "make_events", "check_events"]
