"""No entry point runs code from a file without trust: a pickle whose loading would create a
folder is passed to every command and loader that reads a file; the folder never appears."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from spikelab import files
from spikelab.cli import main


class Payload:
    """Unpickling this calls ``os.mkdir(marker)``: the proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture
def evil(tmp_path):
    marker = tmp_path / "PAYLOAD_RAN"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(2)}, "config": {}, "optimizer": {}, "x": torch.zeros(4, 2, 3, 3),
                "y": torch.zeros(4, dtype=torch.long), "payload": Payload(marker)}, path)
    legacy = tmp_path / "evil_legacy.pt"
    torch.save({"payload": Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    return path, legacy, marker


@pytest.fixture
def whole_model(tmp_path):
    """A whole pickled SNN (needs --trust to load) and a clean data file."""
    import spikelab as sl

    path = tmp_path / "snn.pt"
    torch.save(sl.models.SpikingMLP(18, 3, hidden=(8,)), path)
    ann = tmp_path / "ann.pt"
    torch.save(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(18, 8), torch.nn.ReLU(),
                                   torch.nn.Linear(8, 3)), ann)
    data = tmp_path / "data.pt"
    torch.save({"x": torch.rand(6, 2, 3, 3), "y": torch.randint(0, 3, (6,))}, data)
    return path, ann, data


def _commands(tmp_path, evil_path, snn, ann, data):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "mlp", "hidden": [8]}, "train": {"epochs": 1},
                                   "out": str(tmp_path / "run")}))
    out = str(tmp_path / "out")
    return {
        "eval": ["eval", evil_path],
        "export": ["export", evil_path, "--out", str(tmp_path / "x.nir")],
        "train --resume": ["train", str(cfg), "--quiet", "--resume", evil_path],
        "convert --weights": ["convert", "--weights", evil_path, "--model", "torch.nn:Identity",
                              "--calibration", str(data), "--out", out],
        "convert --calibration": ["convert", "--weights", str(ann), "--trust", "--calibration", evil_path,
                                  "--out", out],
        "convert --test": ["convert", "--weights", str(ann), "--trust", "--calibration", str(data), "--test",
                           evil_path, "--timesteps", "2", "--out", out],
        "calibrate": ["calibrate", evil_path, "--data", str(data), "--out", out],
        "calibrate --data": ["calibrate", str(snn), "--trust", "--data", evil_path, "--out", out],
        "infer": ["infer", evil_path, "--data", str(data)],
        "infer --data": ["infer", str(snn), "--trust", "--data", evil_path],
    }


@pytest.mark.parametrize("command", ["eval", "export", "train --resume", "convert --weights", "convert --calibration",
                                     "convert --test", "calibrate", "calibrate --data", "infer", "infer --data"])
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_every_command_refuses_code_running_files(tmp_path, evil, whole_model, capsys, command, legacy):
    path, legacy_path, marker = evil
    argv = _commands(tmp_path, str(legacy_path if legacy else path), *whole_model)[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert not marker.exists(), f"{command}: the payload ran"
    assert "would run code from the file" in err and "--trust" in err, err
    assert "Traceback" not in err


def test_python_loaders_refuse_code_running_files(tmp_path, evil):
    from spikelab.convert import load_ann
    from spikelab.train import Trainer, load_config

    import spikelab as sl

    path, legacy, marker = evil
    for p in (path, legacy):
        with pytest.raises(files.UntrustedFileError):
            files.load(p)
        with pytest.raises(files.UntrustedFileError):
            load_ann(p, arch="torch.nn:Identity")
        trainer = Trainer(sl.models.SpikingMLP(4, 2, hidden=(3,)), [], [], load_config({"out": str(tmp_path)}),
                          lambda b: b, quiet=True)
        with pytest.raises(files.UntrustedFileError):
            trainer.resume(p)
    assert not marker.exists()


def test_trusted_whole_model_still_loads(whole_model):
    snn, _, _ = whole_model
    with pytest.raises(files.UntrustedFileError):
        files.load(snn)
    assert isinstance(files.load(snn, trust=True), torch.nn.Module)


def test_plain_data_files_of_other_writers_get_the_right_message(tmp_path):
    data = {"w": torch.ones(2)}
    torch.save(data, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    assert torch.equal(files.load(tmp_path / "legacy.pt")["w"], data["w"])
    # pickle protocol 4 uses opcodes the weights-only reader refuses: a full load reads it
    torch.save(data, tmp_path / "p4.pt", pickle_protocol=4)
    with pytest.raises(files.UntrustedFileError, match=r"p4.pt: .*cannot be read as plain data .*Unsupported "
                                                        r"operand.*trust=True"):
        files.load(tmp_path / "p4.pt")
    assert torch.equal(files.load(tmp_path / "p4.pt", trust=True)["w"], data["w"])
    torch.save(data, tmp_path / "p4_legacy.pt", pickle_protocol=4, _use_new_zipfile_serialization=False)
    assert torch.equal(files.load(tmp_path / "p4_legacy.pt", trust=True)["w"], data["w"])
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "scripted.pt"))
    with pytest.raises(ValueError, match=r"scripted.pt: a TorchScript archive.*torch.jit.load"):
        files.load(tmp_path / "scripted.pt")


def test_trusted_model_whose_class_is_gone_names_it(tmp_path):
    import sys
    import types

    module = types.ModuleType("spikelab_gone_module")
    Gone = type("Gone", (torch.nn.Module,), {"__module__": "spikelab_gone_module"})
    module.Gone = Gone
    sys.modules["spikelab_gone_module"] = module
    try:
        torch.save(Gone(), tmp_path / "gone.pt")
    finally:
        del sys.modules["spikelab_gone_module"]
    with pytest.raises(ValueError, match=r"gone.pt: .*class cannot be imported here .*spikelab_gone_module"):
        files.load(tmp_path / "gone.pt", trust=True)
