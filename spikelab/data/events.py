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
                 offsets: Optional[np.ndarray] = None, allow_unsorted: bool = False) -> np.ndarray:
    """Refuse out-of-range coordinates and decreasing timestamps (naming the byte offset of the
    first bad event when ``offsets`` gives each event's position in the file).

    With ``allow_unsorted=True``, decreasing timestamps are repaired by a stable sort on ``t``.
    """
    def where(i: int) -> Optional[int]:
        return None if offsets is None else int(offsets[i])

    if sensor_size is not None and len(events):
        w, h = int(sensor_size[0]), int(sensor_size[1])
        bad = np.flatnonzero((events["x"] < 0) | (events["x"] >= w) | (events["y"] < 0) | (events["y"] >= h))
        if bad.size:
            i = int(bad[0])
            raise EventFormatError(path, f"event {i} at (x={events['x'][i]}, y={events['y'][i]}) is outside the "
                                         f"{w}x{h} sensor ({bad.size} such events)", where(i))
    if len(events) > 1:
        down = np.flatnonzero(np.diff(events["t"]) < 0)
        if down.size:
            if allow_unsorted:
                return events[np.argsort(events["t"], kind="stable")]
            i = int(down[0]) + 1
            raise EventFormatError(path, f"timestamps decrease at event {i} ({events['t'][i - 1]} -> "
                                         f"{events['t'][i]} us; {down.size} such places); pass "
                                         "allow_unsorted=True to sort them", where(i))
    return events
