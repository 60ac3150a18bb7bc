"""Spiking Heidelberg Digits / Spiking Speech Commands HDF5 (``shd_train.h5`` and the like).

Layout: ``spikes/times`` (one float array per sample, seconds), ``spikes/units`` (one uint16
array per sample, the input channel 0..699) and ``labels``. A sample becomes events with
``x`` = unit, ``y`` = 0, ``p`` = 1 and ``t`` in integer microseconds; sensor size
``(700, 1, 1)``.
"""

from __future__ import annotations

import os
import stat

import numpy as np

from spikelab.data.events import EventFormatError, check_events, make_events
from spikelab.data.formats._source import not_regular

SENSOR_SIZE = (700, 1, 1)
_REQUIRED = ("spikes/times", "spikes/units", "labels")


def _open(path):
    import h5py

    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such HDF5 file") from None
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)
    try:
        f = h5py.File(path, "r")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such HDF5 file") from None
    except OSError as err:
        raise EventFormatError(path, f"not a readable HDF5 file ({err})", 0) from None
    missing = [k for k in _REQUIRED if k not in f]
    if missing:
        f.close()
        raise EventFormatError(path, f"missing HDF5 dataset(s) {missing}; an SHD/SSC file has {list(_REQUIRED)}")
    if not (len(f["spikes/times"]) == len(f["spikes/units"]) == len(f["labels"])):
        f.close()
        raise EventFormatError(path, "spikes/times, spikes/units and labels have different lengths")
    return f


_MAX_SECONDS = float(2 ** 63 - 1) / 1e6  # the latest time in int64 microseconds


def _units(f, index: int, path, sensor_size) -> np.ndarray:
    """Sample ``index``'s units as int64, refusing what int16 ``x`` cannot hold faithfully."""
    units = np.asarray(f["spikes/units"][index])
    top = (int(sensor_size[0]) if sensor_size is not None else 2 ** 15) - 1
    if units.dtype.kind not in "iuf":
        raise EventFormatError(path, f"spikes/units of sample {index}: dtype {units.dtype}, expected integers")
    if units.size:
        with np.errstate(all="ignore"):
            ok = (units >= 0) & (units <= top)
            if units.dtype.kind == "f":
                ok &= np.floor(units) == units
        if not ok.all():
            i = int(np.argmin(ok))
            raise EventFormatError(path, f"spikes/units of sample {index}, spike {i}: value {units[i].item()!r}, "
                                         f"expected an integer unit in 0..{top}")
    return units.astype(np.int64)


def _times_us(f, index: int, path) -> np.ndarray:
    """Sample ``index``'s spike times in int64 microseconds, refusing what would not fit."""
    times = np.asarray(f["spikes/times"][index])
    if times.dtype.kind not in "iuf":
        raise EventFormatError(path, f"spikes/times of sample {index}: dtype {times.dtype}, expected seconds")
    times = times.astype(np.float64)
    with np.errstate(all="ignore"):
        us = np.round(times * 1e6)
        ok = np.isfinite(us) & (times >= 0) & (us < 2.0 ** 63)
    if not ok.all():
        i = int(np.argmin(ok))
        raise EventFormatError(path, f"spikes/times of sample {index}, spike {i}: value {times[i].item()!r} s, "
                                     f"expected finite, non-negative seconds below {_MAX_SECONDS:.6g} (int64 "
                                     "microseconds)")
    return us.astype(np.int64)


def _sample(f, index: int, path, sensor_size, allow_unsorted: bool) -> np.ndarray:
    units = _units(f, index, path, sensor_size)
    times = _times_us(f, index, path)
    if times.shape != units.shape:
        raise EventFormatError(path, f"sample {index}: {times.size} spikes/times but {units.size} spikes/units")
    events = make_events(units, np.zeros_like(units), times, np.ones_like(units))
    try:
        return check_events(events, path, sensor_size, None, allow_unsorted)
    except EventFormatError as err:
        raise EventFormatError(path, f"sample {index}: {str(err).split(': ', 1)[-1]}") from None


def read_shd(path, index: int, sensor_size=SENSOR_SIZE, allow_unsorted: bool = False) -> tuple[np.ndarray, int]:
    """Events and label of sample ``index`` of an SHD/SSC HDF5 file."""
    with _open(path) as f:
        n = len(f["labels"])
        if not -n <= index < n:
            raise IndexError(f"{path}: sample {index} out of range ({n} samples)")
        return _sample(f, index, path, sensor_size, allow_unsorted), int(f["labels"][index])


def read_shd_all(path, sensor_size=SENSOR_SIZE, allow_unsorted: bool = False) -> tuple[list[np.ndarray], np.ndarray]:
    """Every sample's events and the labels."""
    with _open(path) as f:
        labels = np.asarray(f["labels"][:], dtype=np.int64)
        return [_sample(f, i, path, sensor_size, allow_unsorted) for i in range(len(labels))], labels


def write_shd(path, samples, labels) -> None:
    """Write event arrays (``x`` = unit, ``t`` in us) and labels in the SHD layout."""
    import h5py

    if len(samples) != len(labels):
        raise ValueError(f"{path}: {len(samples)} samples but {len(labels)} labels")
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(np.float32))
        units = f.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, ev in enumerate(samples):
            times[i] = (ev["t"] / 1e6).astype(np.float32)
            units[i] = ev["x"].astype(np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))


__all__ = ["SENSOR_SIZE", "read_shd", "read_shd_all", "write_shd"]
