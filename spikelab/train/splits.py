"""Deterministic, label-stratified selections of a dataset: a validation hold-out and a subset.

Pure functions of the labels (or only the size) and a seed: the same configuration picks the
same samples on every machine and in every DDP process.
"""

from __future__ import annotations

import numbers
from typing import Optional, Sequence, Union

import numpy as np

from spikelab.train.config import ConfigError, check_split

_HOLDOUT, _SUBSET = 1, 2  # salts: the hold-out and the subset draw from different streams


class DatasetView:
    """Samples ``indices`` of ``dataset``, in that order (like ``torch.utils.data.Subset``), that
    also passes on the dataset's attributes (``sensor_size``, ``classes``, ``events(i)``, ...)."""

    def __init__(self, dataset, indices: Sequence[int], role: str = "subset") -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.role = role

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[int(self.indices[index])]

    def events(self, index: int):
        """The raw events and label of sample ``index`` of this view."""
        return self.dataset.events(int(self.indices[index]))

    def __getattr__(self, name: str):
        if name in ("dataset", "indices", "role") or name.startswith("__"):  # while unpickling
            raise AttributeError(name)
        value = getattr(self.dataset, name)
        if name in ("targets", "samples"):  # per-sample lists: this view's entries only
            if isinstance(value, np.ndarray) or hasattr(value, "index_select"):
                return value[self.indices]
            return [value[int(i)] for i in self.indices]
        return value

    def __repr__(self) -> str:
        return f"DatasetView({self.role}: {len(self)} of {len(self.dataset)} samples of {self.dataset!r})"


def dataset_labels(dataset) -> Optional[np.ndarray]:
    """Every sample's label when it can be read without decoding the samples, else None.

    Knows :class:`DatasetView`, spikelab's event datasets (whose ``samples`` hold the label
    second; SHD's labels are one array in its HDF5 file) and datasets with a ``targets`` array.
    """
    if isinstance(dataset, DatasetView):
        labels = dataset_labels(dataset.dataset)
        return None if labels is None else labels[dataset.indices]
    from spikelab.data.datasets import SHD, EventDataset

    if isinstance(dataset, SHD):
        import h5py

        path = dataset.samples[0][0]
        with h5py.File(path, "r") as f:
            return np.asarray(f["labels"][:], dtype=np.int64)
    if isinstance(dataset, EventDataset):
        return np.asarray([s[1] for s in dataset.samples], dtype=np.int64)
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return np.asarray(targets).reshape(-1)
    return None


def stratified_choice(count: int, labels: Optional[np.ndarray], size: int,
                      rng: np.random.Generator) -> np.ndarray:
    """``count`` of ``range(size)``, sorted, drawn by ``rng``: each label gets its share
    (largest remainders round it), or a plain random draw where ``labels`` is None."""
    if labels is None:
        return np.sort(rng.permutation(size)[:count])
    classes, inverse = np.unique(labels, return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(classes))
    exact = sizes * count / size
    take = np.floor(exact).astype(np.int64)
    take[np.argsort(-(exact - take), kind="stable")[:count - int(take.sum())]] += 1
    chosen = [rng.permutation(np.flatnonzero(inverse == c))[:take[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def split_indices(size: int, val_split: Optional[float] = None, subset: Union[int, float, None] = None,
                  seed: int = 0, labels: Optional[np.ndarray] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """(training indices, validation indices or None) of a training set of ``size`` samples.

    ``val_split`` (a fraction in (0, 1)) of the samples is held out first, stratified by
    ``labels`` when given; then ``subset`` (a count, or a fraction of what is left) is kept of
    the rest for training. The hold-out depends only on ``(seed, val_split)``, not on
    ``subset``, so runs on different subsets are compared on the same validation samples.
    """
    check_split(val_split, subset)
    if isinstance(subset, numbers.Integral):
        subset = int(subset)  # a NumPy integer is a count too
    labels = None if labels is None else np.asarray(labels).reshape(-1)
    if labels is not None and len(labels) != size:
        raise ValueError(f"labels: expected {size} labels, got {len(labels)}")
    train, val = np.arange(size, dtype=np.int64), None
    if val_split is not None:
        if size < 2:
            raise ConfigError(f"data.val_split: the training set holds {size} sample(s); at least 2 are needed "
                              "to hold some out for validation")
        count = min(max(int(round(val_split * size)), 1), size - 1)
        val = stratified_choice(count, labels, size, np.random.default_rng([seed, _HOLDOUT]))
        train = np.setdiff1d(train, val, assume_unique=True)
    if subset is not None:
        left = len(train)
        count = subset if isinstance(subset, int) else max(int(round(subset * left)), 1)
        if count > left:
            held = f" ({size - left} of its {size} are held out by data.val_split)" if val is not None else ""
            raise ConfigError(f"data.subset: {count} training samples asked, but the training set holds {left}{held}")
        part = labels[train] if labels is not None else None
        train = train[stratified_choice(count, part, left, np.random.default_rng([seed, _SUBSET]))]
    return train, val


def split_dataset(dataset, val_split: Optional[float] = None, subset: Union[int, float, None] = None,
                  seed: int = 0) -> tuple:
    """(training part, validation part or None) of ``dataset`` as :class:`DatasetView` s
    (see :func:`split_indices`; stratified by label where :func:`dataset_labels` finds them).
    The dataset itself is returned as the training part when nothing is to be split."""
    if val_split is None and subset is None:
        return dataset, None
    train, val = split_indices(len(dataset), val_split, subset, seed, dataset_labels(dataset))
    return (DatasetView(dataset, train, "train"),
            DatasetView(dataset, val, "validation") if val is not None else None)


__all__ = ["DatasetView", "split_indices", "split_dataset"]
