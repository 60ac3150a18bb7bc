"""Spiking Heidelberg Digits / Spiking Speech Commands HDF5 (``shd_train.h5`` and the like).

Layout: ``spikes/times`` (one float array per sample, seconds), ``spikes/units`` (one uint16
array per sample, the input channel 0..699) and ``labels``. A sample becomes events with
``x`` = unit, ``y`` = 0, ``p`` = 1 and ``t`` in integer microseconds; sensor size
``(700, 1, 1)``.
"""

from __future__ import annotations

import numpy as np

from spikelab.data.events import EventFormatError, check_events, make_events

SENSOR_SIZE = (700, 1, 1)
_REQUIRED = ("spikes/times", "spikes/units", "labels")


def _open(path):
    import h5py

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


def _sample(f, index: int, path, sensor_size, allow_unsorted: bool) -> np.ndarray:
    times = np.asarray(f["spikes/times"][index], dtype=np.float64)
    units = np.asarray(f["spikes/units"][index], dtype=np.int64)
    if times.shape != units.shape:
        raise EventFormatError(path, f"sample {index}: {times.size} times but {units.size} units")
    if times.size and (not np.isfinite(times).all() or times.min() < 0):
        raise EventFormatError(path, f"sample {index}: spike times must be finite and non-negative seconds")
    events = make_events(units, np.zeros_like(units), np.round(times * 1e6).astype(np.int64), np.ones_like(units))
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
