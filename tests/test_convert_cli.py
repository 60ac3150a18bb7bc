"""``spikelab convert`` as a new user meets it: a model class in a file of the working folder, a
whole pickled model, broken files, and sites named after the calls they replace."""

from __future__ import annotations

import inspect
import io
import json
import pickle
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


# ---- pickled classes: a pure opcode walk that follows the memo --------------------------------------------------

def _import_mynet(workdir, monkeypatch):
    monkeypatch.syspath_prepend(str(workdir))
    import mynet

    sys.path.remove(str(workdir))
    return mynet


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_pickled_classes_follow_the_memo_at_every_protocol(workdir, monkeypatch, capsys, protocol):
    from spikelab.convert.load import pickled_classes

    mynet = _import_mynet(workdir, monkeypatch)
    torch.save(mynet.ResCNN().eval(), workdir / "p.pt", pickle_protocol=protocol)
    classes = pickled_classes(workdir / "p.pt")
    # protocol >= 4 fetches a module name seen before back from the memo (BINGET): never a tensor helper
    assert classes[:2] == [("mynet", "ResCNN"), ("torch.nn.modules.linear", "Linear")]
    assert ("mynet", "Block") in classes
    assert not [c for c in classes if c[0].startswith("_rebuild")]
    del sys.modules["mynet"]
    assert isinstance(load_ann(workdir / "p.pt", trust=True), nn.Module)
    assert _convert("--weights", "p.pt", "--trust") == 0
    assert "converted: 3 neuron sites" in capsys.readouterr().out


def test_pickled_classes_reads_memo_opcodes_without_unpickling(tmp_path):
    import collections
    import datetime
    import decimal
    import fractions
    import zipfile

    from spikelab.convert.load import _PLUMBING, pickled_classes

    class Recorder(pickle.Unpickler):  # the reference: the globals a real load looks up, in order
        def __init__(self, data):
            super().__init__(io.BytesIO(data))
            self.seen = []

        def find_class(self, module, name):
            self.seen.append((module, name))
            return super().find_class(module, name)

    obj = {"a": [fractions.Fraction(1, 3)] * 3, "b": decimal.Decimal("1.5"), "c": fractions.Fraction(2, 5),
           "d": (collections.OrderedDict(x=1), decimal.Decimal("2"), fractions.Fraction), "e": {1, 2},
           # several names of one module: the module's name is fetched back from the memo
           "f": [datetime.date(2020, 1, 2), datetime.timedelta(3), datetime.time(4), datetime.date(2021, 1, 1)]}
    for protocol in range(6):  # 0-1 PUT/GET text memo, 2-3 BINPUT/BINGET, 4-5 MEMOIZE and STACK_GLOBAL
        data = pickle.dumps(obj, protocol=protocol)
        reference = Recorder(data)
        reference.load()
        expected = []
        for found in reference.seen:
            if found[0] not in _PLUMBING and found not in expected:
                expected.append(found)
        with zipfile.ZipFile(tmp_path / f"p{protocol}.pt", "w") as z:
            z.writestr("archive/data.pkl", data)
        assert pickled_classes(tmp_path / f"p{protocol}.pt") == expected, protocol
    # a module that does not exist and a function that would run: named, never imported nor called
    evil = b"\x80\x04\x8c\x0enosuch_mod_xyz\x94\x8c\x03run\x94\x93\x94h\x00h\x01\x93)R."
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as z:
        z.writestr("archive/data.pkl", evil)
    assert pickled_classes(tmp_path / "evil.pt") == [("nosuch_mod_xyz", "run")]
    assert "nosuch_mod_xyz" not in sys.modules


def test_import_check_is_advisory_under_trust(workdir, monkeypatch):
    from spikelab import files
    from spikelab.convert import load as load_module

    # a class list the pre-check cannot import does not stop a file that loads
    with monkeypatch.context() as patch:
        patch.setattr(load_module, "pickled_classes", lambda path: [("nosuch_mod_xyz", "Thing")])
        assert type(load_ann("full.pt", trust=True)).__name__ == "ResCNN"

    def refuse(*args, **kwargs):
        raise ValueError("full.pt: loader says no")

    # the real load fails, every class imports: the loader's own error stands
    with monkeypatch.context() as patch:
        patch.setattr(files, "load", refuse)
        with pytest.raises(ValueError, match="^full.pt: loader says no$"):
            load_ann("full.pt", trust=True)
    # the real load fails because a class is gone: the check names it
    sys.modules.pop("mynet", None)
    (workdir / "mynet.py").write_text(MYNET.replace("class ResCNN", "class Renamed"))
    with pytest.raises(ValueError, match=r"needs mynet.ResCNN, but module 'mynet' .* has no 'ResCNN'"):
        load_ann("full.pt", trust=True)


# ---- files given as path/to/file.py:Class ----------------------------------------------------------------------

COUNTING = textwrap.dedent('''\
    import os
    from torch import nn

    with open(os.path.join(os.path.dirname(__file__), "runs.log"), "a") as f:
        f.write("x")


    class Net(nn.Module):
        def __init__(self, width=4):
            super().__init__()
            self.fc = nn.Linear(width, 2)

        def forward(self, x):
            return self.fc(x).relu()
    ''')


def test_a_model_file_runs_once_and_again_when_edited(tmp_path, monkeypatch):
    from spikelab.convert.load import import_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "countnet_xyz.py").write_text(COUNTING)
    first = import_model("m/countnet_xyz.py:Net")
    try:
        assert import_model("m/countnet_xyz.py:Net") is first
        assert import_model(f"{tmp_path}/m/../m/countnet_xyz.py:Net") is first  # the same file, another spelling
        assert (tmp_path / "m" / "runs.log").read_text() == "x"
        assert first.__module__ == "countnet_xyz" and sys.modules["countnet_xyz"].Net is first  # the name is free
        (tmp_path / "m" / "countnet_xyz.py").write_text(COUNTING + "\nEDITED = True\n")
        second = import_model("m/countnet_xyz.py:Net")
        assert second is not first and sys.modules["countnet_xyz"].EDITED
        assert (tmp_path / "m" / "runs.log").read_text() == "xx"
    finally:
        sys.modules.pop("countnet_xyz", None)


def test_a_model_file_shadows_no_module(tmp_path, monkeypatch):
    import code as stdlib_code

    from spikelab.convert.load import import_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.py").write_text(COUNTING)
    net = import_model("./code.py:Net")
    assert sys.modules["code"] is stdlib_code and hasattr(stdlib_code, "interact")
    assert net.__module__.startswith("spikelab_user_code_") and sys.modules[net.__module__].Net is net
    assert import_model("code.py:Net") is net
    # a module of that name the user imported from elsewhere is kept; this file gets its own name
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "helpers_xyz.py").write_text("WHO = 'theirs'\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "helpers_xyz.py").write_text(COUNTING)
    monkeypatch.syspath_prepend(str(tmp_path / "theirs"))
    import helpers_xyz

    try:
        mine = import_model("mine/helpers_xyz.py:Net")
        assert sys.modules["helpers_xyz"] is helpers_xyz and helpers_xyz.WHO == "theirs"
        assert mine.__module__.startswith("spikelab_user_helpers_xyz_")
        # the user's own import of the very file asked for is used as it is
        (tmp_path / "theirs" / "helpers_xyz.py").write_text("from torch import nn\nWHO = 'theirs'\nNet = nn.Linear\n")
        del sys.modules["helpers_xyz"]
        import helpers_xyz as again

        assert import_model("theirs/helpers_xyz.py:Net") is again.Net
        assert sys.modules["helpers_xyz"] is again
    finally:
        sys.modules.pop("helpers_xyz", None)


def test_a_failing_model_file_restores_modules_and_path(tmp_path, monkeypatch):
    from spikelab.convert.load import import_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    good = tmp_path / "m" / "flaky_xyz.py"
    good.write_text(COUNTING)
    path_before = list(sys.path)
    try:
        net = import_model("m/flaky_xyz.py:Net")
        held = sys.modules["flaky_xyz"]
        for body, reason in [("raise RuntimeError('boom')\n", "RuntimeError: boom"),
                             ("import not_a_real_package_xyz\n", "No module named 'not_a_real_package_xyz'"),
                             ("def broken(:\n", "SyntaxError"),
                             ("import os\nimport sys\nsys.path.remove(os.path.dirname(__file__))\nraise ValueError('x')\n",
                              "ValueError: x")]:
            good.write_text(COUNTING + body)
            with pytest.raises(ValueError, match=f"running .*flaky_xyz.py failed: .*{reason}"):
                import_model("m/flaky_xyz.py:Net")
            assert sys.modules["flaky_xyz"] is held and held.Net is net  # the good module is back
            assert sys.path == path_before
        # a file that never ran well leaves no module behind
        (tmp_path / "m" / "never_xyz.py").write_text("raise ImportError('needs CUDA')\n")
        with pytest.raises(ValueError, match="ImportError: needs CUDA"):
            import_model("m/never_xyz.py:Net")
        assert "never_xyz" not in sys.modules and sys.path == path_before
        # and the module:Class form, failing
        for spec in ("nosuchnet_xyz:Net", "m.never_xyz:Net"):
            with pytest.raises(ValueError):
                import_model(spec)
            assert sys.path == path_before
    finally:
        sys.modules.pop("flaky_xyz", None)


# ---- architecture arguments: one dict, any key --------------------------------------------------------------------

ODD = textwrap.dedent('''\
    from torch import nn


    class Odd(nn.Module):
        def __init__(self, weights=4, trust=False, arch="x", width=3):
            super().__init__()
            self.fc = nn.Linear(weights, width)
            self.trusted = trust

        def forward(self, x):
            return self.fc(x).relu()
    ''')


def test_model_args_reach_the_class_whatever_their_names(workdir, capsys):
    assert _convert("--weights", "sd.pt", "--model", "mynet:ResCNN", "--model-args", '{"trust": true}') == 2
    err = capsys.readouterr().err
    assert "mynet:ResCNN: building the model ResCNN(trust=True) failed: TypeError" in err
    assert "unexpected keyword argument 'trust'" in err and "it takes ResCNN(width=8)" in err
    assert "Traceback" not in err and "multiple values" not in err
    assert _convert("--weights", "sd.pt", "--model", "mynet:ResCNN", "--model-args", '{"weights": 1}') == 2
    assert "building the model ResCNN(weights=1) failed" in capsys.readouterr().err

    (workdir / "odd.py").write_text(ODD)
    sys.modules.pop("odd", None)
    try:
        torch.save({"fc.weight": torch.rand(2, 6), "fc.bias": torch.rand(2)}, workdir / "odd_sd.pt")
        torch.save(torch.rand(16, 6), workdir / "calib6.pt")
        args = '{"weights": 6, "trust": true, "arch": "y", "width": 2}'
        assert main(["convert", "--calibration", "calib6.pt", "--out", "out", "--weights", "odd_sd.pt",
                     "--model", "odd.py:Odd", "--model-args", args]) == 0
        ann = load_ann("odd_sd.pt", arch="odd:Odd", arch_kwargs={"weights": 6, "trust": True, "width": 2})
        assert ann.trusted is True and not ann.training
        # the older form, loose keyword arguments, still works; a name given both ways is refused
        assert load_ann("odd_sd.pt", arch="odd.py:Odd", arch_kwargs={"weights": 6}, width=2).trusted is False
        with pytest.raises(ValueError, match="width given twice"):
            load_ann("odd_sd.pt", arch="odd:Odd", arch_kwargs={"width": 2}, width=2)
        with pytest.raises(ValueError, match="arch_kwargs: expected a dict"):
            load_ann("odd_sd.pt", arch="odd:Odd", arch_kwargs=[("width", 2)])
    finally:
        sys.modules.pop("odd", None)


def test_torchvision_builders_get_every_argument(monkeypatch):
    import types

    from spikelab.convert import build_architecture

    def fake_net(*, weights=None, name="n", num_classes=10):
        return nn.Linear(2, num_classes)

    def get_model_builder(arch):
        if arch != "fake_net":
            raise ValueError(f"Unknown model {arch}")
        return fake_net

    tv = types.ModuleType("torchvision")
    tv.models = types.SimpleNamespace(get_model_builder=get_model_builder)
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    model = build_architecture("fake_net", {"name": "x", "weights": None, "num_classes": 3})
    assert model.out_features == 3
    with pytest.raises(ValueError, match=r"fake_net: building the model torchvision fake_net\(bogus=1\) failed: "
                                         r"TypeError.*it takes fake_net\(\*, weights=None"):
        build_architecture("fake_net", {"bogus": 1})
    with pytest.raises(ValueError, match="unknown torchvision model"):
        build_architecture("nosuch_net")
