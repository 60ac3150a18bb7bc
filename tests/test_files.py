"""Files are data: a pickled object that would run code is refused unless the caller trusts the file."""

from __future__ import annotations

import pytest
import torch

from spikelab import files
from spikelab.cli import main


class Payload:
    """Unpickling this runs code (it calls ``ran`` below)."""

    def __reduce__(self):
        return (_ran, ("payload ran",))


RAN: list[str] = []


def _ran(message):
    RAN.append(message)
    return message


def test_code_running_pickle_refused_without_trust(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "extra": Payload()}, path)
    with pytest.raises(files.UntrustedFileError, match="evil.pt: .*would run code from the file.*--trust"):
        files.load(path)
    assert RAN == []
    assert main(["eval", str(path)]) == 2 and RAN == []
    assert main(["export", str(path), "--out", str(tmp_path / "x.nir")]) == 2 and RAN == []
    assert files.load(path, trust=True)["extra"] == "payload ran"  # the user said so


def test_data_files_load_and_bad_files_name_the_path(tmp_path):
    torch.save({"x": torch.ones(2), "y": [1, 2], "cfg": {"lr": 0.1}}, tmp_path / "ok.pt")
    assert files.load(tmp_path / "ok.pt")["y"] == [1, 2]
    (tmp_path / "cut.pt").write_bytes((tmp_path / "ok.pt").read_bytes()[:40])
    with pytest.raises(ValueError, match="cut.pt: not a readable torch file"):
        files.load(tmp_path / "cut.pt")
    with pytest.raises(FileNotFoundError, match="none.pt: no such checkpoint"):
        files.load(tmp_path / "none.pt", what="checkpoint")
