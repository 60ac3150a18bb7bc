"""AEDAT 2.0 (jAER) addresses packed by hand from the format description: the DVS128 and DAVIS
layouts, the samples and special events that are not polarity events, mirrored columns, byte
offsets in errors, the readers' defaults and the writer's addresses."""

import struct

import numpy as np
import pytest

from spikelab import data
from spikelab.data.events import EventFormatError
from spikelab.data.formats import aedat2
from spikelab.data.formats._source import Source
from tests.event_tuples import as_tuples

HEADER = b"#!AER-DAT2.0\r\n# by hand\r\n"


def _file(pairs) -> bytes:
    """The header, then big-endian (uint32 address, int32 timestamp) pairs."""
    return HEADER + b"".join(struct.pack(">Ii", a, t) for a, t in pairs)


def _dvs128(column, y, p, sync=0):
    return p | column << 1 | y << 8 | sync << 15


def _davis(column, y, p, special=0, aps=0):
    return aps << 31 | y << 22 | column << 12 | p << 11 | special << 10


def test_dvs128_addresses_by_hand():
    raw = _file([(_dvs128(0, 0, 1), 10),  # column 0 is x = 127 (jAER mirrors the DVS128's columns)
                 (_dvs128(3, 5, 0, sync=1), 15),  # an external sync event: not a polarity event
                 (_dvs128(127, 127, 0), 20),
                 (_dvs128(64, 9, 1) | 1 << 20, 30)])  # bits above 15 are not part of the address
    assert as_tuples(aedat2.decode_aedat2(raw)) == [(127, 0, 10, 1), (0, 127, 20, 0), (63, 9, 30, 1)]


@pytest.mark.parametrize("camera, width, height", [("davis240", 240, 180), ("davis346", 346, 260)])
def test_davis_addresses_by_hand(camera, width, height):
    raw = _file([(_davis(0, 0, 1), 10),  # column 0 is x = width - 1
                 (_davis(5, 6, 1, aps=1), 11),  # an APS sample
                 (_davis(5, 6, 1, aps=1) | 1 << 11, 12),  # an IMU sample
                 (_davis(5, 6, 0, special=1), 13),  # a special (external input) event
                 (_davis(width - 1, height - 1, 0), 20),
                 (_davis(7, 8, 1), 30)])
    events = aedat2.decode_aedat2(raw, camera=camera)
    assert as_tuples(events) == [(width - 1, 0, 10, 1), (0, height - 1, 20, 0), (width - 8, 8, 30, 1)]
    with pytest.raises(EventFormatError, match=f"at byte {len(HEADER) + 8}: event 1 .* outside the {width}x{height}"):
        aedat2.decode_aedat2(_file([(_davis(1, 1, 1), 1), (_davis(1, height, 1), 2)]), camera=camera)


@pytest.mark.parametrize("camera, size", [("dvs128", (128, 128)), ("davis240", (240, 180)), ("davis346", (346, 260))])
def test_sensor_size_of_each_camera(camera, size):
    assert aedat2.pieces(Source("a.aedat", HEADER), None, camera=camera)[0] == size
    assert aedat2.pieces(Source("a.aedat", HEADER), None, camera=camera, sensor_size=(9, 9))[0] == (9, 9)
    with pytest.raises(ValueError, match="camera: expected one of"):
        aedat2.pieces(Source("a.aedat", HEADER), None, camera="dvs640")


def test_errors_name_the_byte_of_the_event_past_dropped_ones():
    raw = _file([(_dvs128(1, 1, 1), 50), (_dvs128(1, 1, 1, sync=1), 60), (_dvs128(1, 1, 1), 40)])
    with pytest.raises(EventFormatError, match="a.aedat at byte .*: timestamps decrease at event 1") as err:
        aedat2.decode_aedat2(raw, path="a.aedat")
    assert err.value.offset == len(HEADER) + 2 * 8


def test_readers_refuse_unsorted_events_by_default(tmp_path):
    raw = _file([(_dvs128(1, 1, 1), 50), (_dvs128(2, 2, 0), 40)])
    (tmp_path / "u.aedat").write_bytes(raw)
    for decode_it in (lambda: aedat2.decode_aedat2(raw), lambda: aedat2.read_aedat2(tmp_path / "u.aedat")):
        with pytest.raises(EventFormatError, match="timestamps decrease"):
            decode_it()
    assert aedat2.read_aedat2(tmp_path / "u.aedat", allow_unsorted=True)["t"].tolist() == [40, 50]


@pytest.mark.parametrize("camera, width, height",
                         [("dvs128", 128, 128), ("davis240", 240, 180), ("davis346", 346, 260)])
def test_writer_addresses(tmp_path, camera, width, height):
    events = data.make_events([0, width - 1, 5], [height - 1, 0, 7], [1, 2, 3], [1, 0, 1])
    aedat2.write_aedat2(tmp_path / "w.aedat", events, camera=camera)
    raw = (tmp_path / "w.aedat").read_bytes()
    assert raw.startswith(b"#!AER-DAT2.0\r\n")
    pairs = np.frombuffer(raw[-24:], np.dtype([("a", ">u4"), ("t", ">i4")]))
    pack = _dvs128 if camera == "dvs128" else _davis
    assert pairs["a"].tolist() == [pack(width - 1, height - 1, 1), pack(0, 0, 0), pack(width - 6, 7, 1)]
    assert pairs["t"].tolist() == [1, 2, 3]
    assert np.array_equal(aedat2.read_aedat2(tmp_path / "w.aedat", camera=camera), events)
