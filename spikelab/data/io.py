"""``read_events``: one entry point that picks the reader from the extension or the header."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from spikelab.data.events import EventFormatError
from spikelab.data.formats import aedat2, aedat3, aedat4, atis, prophesee, shd
from spikelab.data.formats._source import read, read_bytes

FORMATS = ("atis", "aedat2", "aedat3", "aedat4", "dat", "evt2", "evt3", "prophesee_raw", "shd")

# each format's ``pieces(source, chunk_bytes, **options)``: the one decoder behind both
# ``read_events`` (the whole file at once) and ``iter_chunks`` (a chunk at a time)
PIECES = {"atis": atis.pieces, "aedat2": aedat2.pieces, "aedat3": aedat3.pieces, "aedat4": aedat4.pieces,
          "dat": prophesee.dat_pieces, "evt2": prophesee.evt2_pieces, "evt3": prophesee.evt3_pieces,
          "prophesee_raw": prophesee.raw_pieces}


def detect_format(path) -> str:
    """The format of ``path`` from its first bytes, falling back on its extension."""
    path = Path(path)
    head = read_bytes(path, 4096)
    if head.startswith(b"#!AER-DAT4"):
        return "aedat4"
    if head.startswith(b"#!AER-DAT3"):
        return "aedat3"
    if head.startswith(b"#!AER-DAT2") or head.startswith(b"#!AER-DAT1"):
        return "aedat2"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "shd"
    suffix = path.suffix.lower()
    if head.startswith(b"%"):
        if suffix == ".dat" or b"Version" in head[:200] and b"evt" not in head:
            return "dat"
        return "prophesee_raw"
    if suffix == ".bin":
        return "atis"
    raise EventFormatError(path, f"unrecognised event file (extension {suffix!r}, header {head[:16]!r}); pass "
                                 f"format= one of {FORMATS}", 0)


def read_events(path, format: Optional[str] = None, **options) -> np.ndarray:
    """Events of one recording as a structured array ``x, y, t, p``.

    ``format`` (detected when omitted): ``atis`` (N-MNIST/N-Caltech101 ``.bin``), ``aedat2``
    (jAER; ``camera="dvs128"|"davis240"|"davis346"``), ``aedat3``, ``aedat4``
    (``max_packet_bytes=``), ``dat``, ``prophesee_raw`` (EVT 2.0/3.0 from the header) or
    ``evt2``/``evt3``, ``shd`` (with ``index=`` of the sample). ``sensor_size=`` bounds the
    coordinates; ``allow_unsorted=True`` sorts decreasing timestamps instead of refusing them.
    Only regular files are read.
    """
    fmt = format or detect_format(path)
    if fmt == "shd":
        if "index" not in options:
            raise ValueError(f"{path}: an SHD/SSC file holds many samples; pass index= (or use read_shd_all)")
        return shd.read_shd(path, **options)[0]
    if fmt not in PIECES:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    return read(PIECES[fmt], path, **options)


__all__ = ["PIECES", "detect_format", "read_events"]
