"""DVS128 Gesture (Amir et al. 2017): AEDAT 3.1 recordings cut into gestures by label CSVs."""

from __future__ import annotations

import csv
import re

import numpy as np

from spikelab.data.datasets.base import EventDataset
from spikelab.data.events import EventFormatError
from spikelab.data.formats.aedat3 import read_aedat3

TRAIN_USERS = range(1, 24)
TEST_USERS = range(24, 30)
RECORDING = re.compile(r"user(\d\d)_(\w+)\.aedat")  # userNN_<lighting>.aedat


class DVSGesture(EventDataset):
    """``root/DvsGesture/userNN_<lighting>.aedat`` with ``userNN_<lighting>_labels.csv``.

    Each CSV row ``class,startTime_usec,endTime_usec`` cuts one gesture (label = class - 1,
    11 classes) out of its recording, as ``[start, end)`` in the recording's timestamps.
    Users 1-23 form the training split, users 24-29 the test split (the published split,
    also listed in trials_to_train.txt / trials_to_test.txt).
    """

    sensor_size = (128, 128, 2)
    classes = ("hand clap", "right hand wave", "left hand wave", "right arm clockwise",
               "right arm counter clockwise", "left arm clockwise", "left arm counter clockwise",
               "arm roll", "air drums", "air guitar", "other gestures")
    name = "DVSGesture"
    source_hint = ("get DvsGesture.tar.gz from IBM's DVS128 Gesture dataset page and extract it here "
                   "(DvsGesture/user01_fluorescent.aedat ...).")

    def _index(self) -> None:
        folder = self.root / "DvsGesture"
        if not folder.is_dir():
            raise self._missing("no 'DvsGesture' folder")
        users = TRAIN_USERS if self.split == "train" else TEST_USERS
        recordings = []
        for path in sorted(folder.glob("user*.aedat")):
            match = RECORDING.fullmatch(path.name)
            if match is None:  # looks like a recording, cannot be placed in a split
                raise EventFormatError(path, "not a DVS Gesture recording name: expected userNN_<lighting>.aedat "
                                             "(NN = the user, 01-29), as in user01_fluorescent.aedat; move or "
                                             "rename it")
            user = int(match.group(1))
            if user not in TRAIN_USERS and user not in TEST_USERS:
                raise EventFormatError(path, f"user {user:02d} is in neither split (train: users 01-23, test: "
                                             "24-29); move or rename it")
            if user in users:
                recordings.append(path)
        if not recordings:
            raise self._missing(f"no recordings of users {users.start}-{users.stop - 1} (userNN_*.aedat)")
        for rec in recordings:
            labels = rec.with_name(rec.stem + "_labels.csv")
            if not labels.exists():
                raise self._missing(f"no label file {labels.name} for {rec.name}")
            with open(labels, newline="") as f:
                rows = list(csv.reader(f))
            for line, row in enumerate(rows[1:], start=2):
                try:
                    cls, start, end = (int(v) for v in row[:3])
                except ValueError:
                    raise EventFormatError(labels, f"line {line}: expected 'class,startTime_usec,endTime_usec', "
                                                   f"got {row}") from None
                if not 1 <= cls <= len(self.classes) or end <= start:
                    raise EventFormatError(labels, f"line {line}: class {cls} (1..11) or times {start}..{end}")
                self.samples.append((rec, cls - 1, start, end))
            self.sources += [rec, labels]
        self._recording = (None, None)

    def _load(self, index: int):
        path, label, start, end = self.samples[index]
        if self._recording[0] != path:  # consecutive gestures share a recording: decode it once
            self._recording = (path, read_aedat3(path, sensor_size=self.sensor_size))
        events = self._recording[1]
        t = events["t"]
        return events[np.searchsorted(t, start):np.searchsorted(t, end)], label


__all__ = ["DVSGesture"]
