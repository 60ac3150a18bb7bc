"""``spikelab convert`` as a new user meets it: a model class in a file of the working folder, a
whole pickled model, broken files, and sites named after the calls they replace."""

from __future__ import annotations

import inspect
import json
import sys
import textwrap
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spikelab.cli import main
from spikelab.convert import ConversionError, convert, load_ann, replace_relu_with_qcfs
from spikelab.files import UntrustedFileError

MYNET = textwrap.dedent('''\
    import torch
    from torch import nn
    from torch.nn import functional as F


    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc = nn.Linear(width, width)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.fc(x)) + x


    class ResCNN(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.stem = nn.Linear(6, width)
            self.layer1 = nn.Sequential(Block(width), Block(width))
            self.head = nn.Linear(width, 3)

        def forward(self, x):
            x = F.relu(self.stem(x))
            return self.head(self.layer1(x))


    HIDDEN = 3
    ''')


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A working folder holding mynet.py, its state_dict, a whole pickled model and calibration data."""
    for name in ("mynet", "brokennet"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / "mynet.py").write_text(MYNET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # only to build the fixtures' files below
    import mynet

    torch.manual_seed(0)
    model = mynet.ResCNN().eval()
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    torch.save(model, tmp_path / "full.pt")
    torch.save(torch.rand(32, 6), tmp_path / "calib.pt")
    sys.path.remove(str(tmp_path))
    del sys.modules["mynet"]  # the command must find it on its own
    yield tmp_path
    for name in ("mynet", "brokennet"):
        sys.modules.pop(name, None)


def _convert(*args: str) -> int:
    return main(["convert", "--calibration", "calib.pt", "--out", "out", *args])


def test_model_class_from_a_file_in_the_working_folder(workdir, capsys):
    assert str(workdir) not in sys.path
    assert _convert("--weights", "sd.pt", "--model", "mynet:ResCNN") == 0
    out = capsys.readouterr().out
    assert "converted: 3 neuron sites" in out
    assert "layer1.0.relu" in out and "F.relu in ResCNN.forward, mynet.py:24" in out
    report = json.loads((workdir / "out" / "conversion_report.json").read_text())["conversion"]
    assert list(report["thresholds"]) == ["relu", "layer1.0.relu", "layer1.1.relu"]
    assert report["replaces"]["layer1.1.relu"] == "nn.ReLU layer1.1.relu, in Block.forward of layer1.1, mynet.py:13"
    assert str(workdir) not in sys.path  # the working folder was on the path for the import only
    # the file form, from another folder
    (workdir / "elsewhere").mkdir()
    (workdir / "models").mkdir()
    (workdir / "models" / "net_file.py").write_text(MYNET)
    assert _convert("--weights", "sd.pt", "--model", "models/net_file.py:ResCNN", "--model-args", '{"width": 8}') == 0
    assert "net_file.py:24" in capsys.readouterr().out


def test_import_errors_name_the_module_the_folder_and_the_reason(workdir, capsys):
    assert _convert("--weights", "sd.pt", "--model", "nosuchnet:ResCNN") == 2
    err = capsys.readouterr().err
    assert "cannot import module 'nosuchnet'" in err and f"working folder {workdir}" in err
    assert "path/to/nosuchnet.py:ResCNN" in err

    # an ImportError inside the user's module shows that inner error and its line
    (workdir / "brokennet.py").write_text("import torch\nimport not_a_real_package_xyz\n")
    assert _convert("--weights", "sd.pt", "--model", "brokennet:ResCNN") == 2
    err = capsys.readouterr().err
    assert "importing module 'brokennet' failed" in err
    assert "No module named 'not_a_real_package_xyz'" in err and "brokennet.py, line 2" in err
    assert "No module named 'brokennet'" not in err

    assert _convert("--weights", "sd.pt", "--model", "mynet:ResNet") == 2
    err = capsys.readouterr().err
    assert "has no 'ResNet'; its nn.Module classes: Block, ResCNN" in err and "mynet.py" in err
    assert "Traceback" not in err

    assert _convert("--weights", "sd.pt", "--model", "mynet:HIDDEN") == 2
    assert "is a int, not an nn.Module class" in capsys.readouterr().err
    assert _convert("--weights", "sd.pt", "--model", "mynet:Block") == 2
    assert "building the model Block() failed: TypeError" in capsys.readouterr().err
    assert _convert("--weights", "sd.pt", "--model", "mynet:ResCNN", "--model-args", "{width: 8}") == 2
    assert "--model-args {width: 8}: not JSON" in capsys.readouterr().err


def test_pickled_model_needs_trust(workdir, capsys):
    assert _convert("--weights", "full.pt") == 2
    err = capsys.readouterr().err
    assert err.startswith("spikelab convert: full.pt: this weights file holds pickled Python objects (mynet.ResCNN")
    assert "would run code from the file" in err
    assert "torch.save(model.state_dict(), 'weights.pt')" in err and "--model mynet:ResCNN" in err
    assert "add --trust" in err and "Traceback" not in err
    assert not (workdir / "out").exists()
    # the same in Python
    with pytest.raises(UntrustedFileError, match=r"full.pt: .*pickled Python objects.*arch='mynet:ResCNN'.*trust=True"):
        load_ann("full.pt")
    with pytest.raises(TypeError, match="got str 'full.pt' .*load_ann"):
        convert("full.pt", torch.rand(4, 6))
    # trusted: its class is imported from the working folder
    assert _convert("--weights", "full.pt", "--trust") == 0
    assert "converted: 3 neuron sites" in capsys.readouterr().out
    # ... and when that import fails, the inner error is shown
    sys.modules.pop("mynet", None)
    (workdir / "mynet.py").write_text("import torch\n\nraise ImportError('mynet needs CUDA extensions')\n")
    assert _convert("--weights", "full.pt", "--trust") == 2
    err = capsys.readouterr().err
    assert "full.pt (needs mynet.ResCNN): importing module 'mynet' failed: ImportError: mynet needs CUDA " \
           "extensions (at " in err and "mynet.py, line 3)" in err


class Wrapped(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.features(x))


def test_torchscript_and_garbage_files_are_refused_clearly(workdir, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, but such files exist
        torch.jit.save(torch.jit.script(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))),
                       workdir / "scripted.pt")
    (workdir / "garbage.pt").write_bytes(b"not a model at all" * 4)
    for trust in ([], ["--trust"]):
        assert _convert("--weights", "scripted.pt", *trust) == 2
        err = capsys.readouterr().err
        assert "scripted.pt: a TorchScript model (torch.jit.save)" in err and "state_dict" in err
        assert _convert("--weights", "garbage.pt", *trust) == 2
        assert "garbage.pt: not a torch weights file" in capsys.readouterr().err


class SiteNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 8), nn.Linear(8, 8), nn.Linear(8, 2)
        self.act = nn.ReLU()

    def forward(self, x):
        x = self.act(self.fc1(x))
        x = F.relu(self.fc2(x)) + self.act(x)
        return self.fc3(x)


def _line(obj, text: str) -> int:
    lines, start = inspect.getsourcelines(obj)
    return start + next(i for i, line in enumerate(lines) if text in line)


def test_sites_are_named_after_the_call_they_replace():
    snn = convert(SiteNet(), torch.rand(32, 4))
    here = f"test_convert_cli.py:{_line(SiteNet.forward, 'F.relu(')}"
    names = [name for name, _ in snn.sites()]
    assert names == ["act#1", "relu", "act#2"]  # graph order; one module at two call sites
    assert snn.report["replaces"]["relu"] == f"F.relu in SiteNet.forward, {here}"
    assert snn.report["replaces"]["act#1"] == (f"nn.ReLU act, in SiteNet.forward, "
                                               f"test_convert_cli.py:{_line(SiteNet.forward, 'self.act(self.fc1')}"
                                               " (call 1 of 2)")
    assert list(snn.report["thresholds"]) == names
    assert snn.site("relu") is snn.sites()[1][1]
    assert "name='relu'" in repr(snn.site("relu"))
    # valid attribute names for the graph, the readable name kept on the site
    keys = [k for k, m in snn.graph_module.named_children() if m in [s for _, s in snn.sites()]]
    assert keys == ["site_act_1", "site_relu", "site_act_2"]
    # a QCFS model says which ReLU each QCFS stands for
    qsnn = convert(replace_relu_with_qcfs(SiteNet(), levels=4), torch.rand(32, 4))
    assert qsnn.report["replaces"]["qcfs_1"] == f"QCFS qcfs_1 in place of relu: F.relu in SiteNet.forward, {here}"
    # a module inside nn.Sequential: the line that calls the Sequential
    wrapped = convert(Wrapped(), torch.rand(8, 4))
    assert wrapped.report["replaces"] == {
        "features.1": f"nn.ReLU features.1, in nn.Sequential features, called at "
                      f"test_convert_cli.py:{_line(Wrapped.forward, 'self.features(x)')}"}
    # errors name the node and its line
    with pytest.raises(ConversionError, match=r"calibration batch of shape \(3, 5\)"):
        convert(SiteNet(), torch.rand(3, 5))

    class Gelu(nn.Module):
        def forward(self, x):
            return F.gelu(x) + F.relu(x)

    with pytest.raises(ConversionError, match=rf"gelu \(gelu\) at test_convert_cli.py:{_line(Gelu.forward, 'F.gelu')}"):
        convert(Gelu(), torch.rand(3, 5))
