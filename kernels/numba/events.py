"""Stateful event-stream decoders (Prophesee EVT 3.0), compiled with Numba.

EVT 3.0 packs events into 16-bit words whose meaning depends on earlier words (the current
row, the base column of a vector, the time high and low parts), so decoding is one
sequential pass; it runs twice, once to count and once to fill.
"""

from __future__ import annotations

import numba as nb
import numpy as np

EVT3_ADDR_Y, EVT3_ADDR_X, EVT3_VECT_BASE_X, EVT3_VECT_12, EVT3_VECT_8 = 0x0, 0x2, 0x3, 0x4, 0x5
EVT3_TIME_LOW, EVT3_TIME_HIGH = 0x6, 0x8


@nb.njit(cache=True, nogil=True)
def evt3_decode(words, out_x, out_y, out_t, out_p, out_word, fill, state):
    """Decode ``words`` (uint16) continuing from ``state``; count only unless ``fill``.

    ``state`` (int64[6]): y, base_x, polarity, time_high, time_low, wraps (times 2**24 us the
    12-bit time high has wrapped). Returns the number of events; with ``fill`` writes them
    and the index of the word that produced each one.
    """
    y, base_x, pol, time_high, time_low, wraps = state[0], state[1], state[2], state[3], state[4], state[5]
    n = 0
    for i in range(words.shape[0]):
        w = np.int64(words[i])
        kind = w >> 12
        if kind == EVT3_ADDR_Y:
            y = w & 0x7FF
        elif kind == EVT3_ADDR_X:
            if fill:
                out_x[n] = w & 0x7FF
                out_y[n] = y
                out_t[n] = (wraps << 24) | (time_high << 12) | time_low
                out_p[n] = (w >> 11) & 1
                out_word[n] = i
            n += 1
        elif kind == EVT3_VECT_BASE_X:
            base_x = w & 0x7FF
            pol = (w >> 11) & 1
        elif kind == EVT3_VECT_12 or kind == EVT3_VECT_8:
            width = 12 if kind == EVT3_VECT_12 else 8
            for b in range(width):
                if (w >> b) & 1:
                    if fill:
                        out_x[n] = base_x + b
                        out_y[n] = y
                        out_t[n] = (wraps << 24) | (time_high << 12) | time_low
                        out_p[n] = pol
                        out_word[n] = i
                    n += 1
            base_x += width
        elif kind == EVT3_TIME_LOW:
            time_low = w & 0xFFF
        elif kind == EVT3_TIME_HIGH:
            high = w & 0xFFF
            if high < time_high and time_high - high > 0x800:
                wraps += 1  # the 24-bit timestamp wrapped
            time_high = high
        # other kinds (triggers, OTHERS, CONTINUED) carry no CD events
    if fill:
        state[0], state[1], state[2], state[3], state[4], state[5] = y, base_x, pol, time_high, time_low, wraps
    return n


__all__ = ["evt3_decode"]
