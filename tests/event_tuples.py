"""Events as ``(x, y, t, p)`` tuples: what the by-hand decoder tests compare against."""

import numpy as np


def as_tuples(events: np.ndarray) -> list:
    """The events of a structured array as a list of ``(x, y, t, p)`` tuples, in file order."""
    return list(zip(*(events[k].tolist() for k in ("x", "y", "t", "p"))))
