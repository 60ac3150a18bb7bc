"""The public API surface: every module declares ``__all__`` listing only its own names, star imports
bring in nothing else, and every public submodule is reachable as ``sl.<name>`` the same way."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import pkgutil
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import pytest

import spikelab as sl

ROOT = Path(sl.__file__).resolve().parent  # spikelab/
KERNELS = ROOT.parent / "kernels"  # installed as spikelab.kernels (see pyproject.toml)

# imports a module may need that are not dependencies of every install: ``triton`` is the ``cuda`` extra.
# A module importing one that is missing is skipped (a failure under SPIKELAB_REQUIRE_PEERS=1, see tests/needs.py);
# any other ImportError fails: the core modules must import.
OPTIONAL = ("triton",)

# every public submodule of the package, reachable as ``sl.<name>``
SUBMODULES = ("data", "layers", "models", "neurons", "surrogate", "train", "convert", "dynamic", "export", "viz",
              "stats", "testing", "files", "monitor", "kernels", "state", "runtime")
# not loaded by ``import spikelab`` (import time matters): they load on first use
LAZY = ("train", "convert", "dynamic", "export", "viz", "stats", "testing", "files")

# what a star import must never bring in: the modules and names the library itself imports
FOREIGN = ("torch", "nn", "F", "np", "numpy", "nb", "numba", "triton", "tl", "nir", "plt", "Path", "Optional", "Union",
           "Any", "Callable", "Sequence", "Iterator", "Tensor", "math", "os", "re", "sys", "json", "copy", "warnings",
           "dataclass", "dataclasses", "field", "annotations", "importlib", "functools", "tqdm", "Figure")


def _walk(path: Path, prefix: str) -> list[str]:
    """Module names under ``path`` (pkgutil, nothing imported), skipping any part starting with '_'."""
    names = []
    for info in pkgutil.iter_modules([str(path)]):
        if info.name.startswith("_"):
            continue
        names.append(prefix + info.name)
        if info.ispkg:
            names += _walk(path / info.name, prefix + info.name + ".")
    return names


MODULES = ["spikelab", "spikelab.kernels"] + sorted(_walk(ROOT, "spikelab.") + _walk(KERNELS, "spikelab.kernels."))


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as err:
        missing = (err.name or "").split(".")[0]
        if missing not in OPTIONAL:
            raise
        from tests.needs import peer

        peer(missing)  # skips here (or fails under SPIKELAB_REQUIRE_PEERS=1)
        raise


def _statements(body: list) -> typing.Iterator[ast.stmt]:
    """The module's top-level statements, those inside top-level ``if``/``try``/``with`` blocks included."""
    for node in body:
        yield node
        for block in ("body", "orelse", "finalbody"):
            if isinstance(node, (ast.If, ast.Try, ast.With)) and getattr(node, block, None):
                yield from _statements(getattr(node, block))
        for handler in getattr(node, "handlers", []):
            yield from _statements(handler.body)


def _bindings(module: ModuleType) -> dict[str, str]:
    """How the module binds each top-level name: ``"def"`` (def or class), ``"assign"``, or the module it is
    imported from."""
    tree = ast.parse(Path(module.__file__).read_text())
    package = module.__name__ if module.__file__.endswith("__init__.py") else module.__name__.rpartition(".")[0]
    found = {}
    for node in _statements(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = "def"
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        found[leaf.id] = "assign"
        elif isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package) if node.level \
                else node.module
            for alias in node.names:
                found[alias.asname or alias.name] = source
        elif isinstance(node, ast.Import):
            for alias in node.names:
                bound = alias.asname or alias.name.partition(".")[0]
                found[bound] = alias.name if alias.asname else bound
    return found


def _typing_alias(obj) -> bool:
    # A typing alias a module defines (``PathLike = Union[str, Path]``) is a spikelab name whose runtime object
    # necessarily lives in ``typing``/``builtins``: fine in ``__all__`` when a module means to export it for
    # annotations (none does today: viz.PathLike, monitor.LayerSpec, ... stay out). Importing ``typing``'s own
    # names (``Optional``, ``Sequence``) and listing them is a re-export, refused like any other.
    return typing.get_origin(obj) is not None or isinstance(obj, typing.TypeVar)


def test_the_walk_finds_the_library():
    for name in ("spikelab.neurons.lif", "spikelab.data.formats.aedat4", "spikelab.kernels.reference",
                 "spikelab.kernels.numba.transforms", "spikelab.export.cli", "spikelab.convert.core"):
        assert name in MODULES, name
    assert not any(part.startswith("_") for m in MODULES for part in m.split("."))


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_its_own_public_names(name):
    module = _import(name)
    assert hasattr(module, "__all__"), f"{name}: no __all__"
    names = list(module.__all__)
    assert all(isinstance(n, str) for n in names), name
    duplicates = sorted(n for n in set(names) if names.count(n) > 1)
    assert not duplicates, f"{name}: duplicates in __all__: {duplicates}"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{name}: __all__ names what the module lacks: {missing}"
    bindings = _bindings(module)
    for n in names:
        obj, how = getattr(module, n), bindings.get(n)
        if how == "def":
            continue  # defined here: its own, even where a decorator (a torch custom op, a Numba or Triton
            # kernel) reports another ``__module__``
        if isinstance(obj, ModuleType):
            assert obj.__name__.startswith("spikelab."), f"{name}.__all__: {n!r} is the module {obj.__name__}"
            continue
        if how not in (None, "assign"):  # imported
            assert how.startswith("spikelab"), f"{name}.__all__ re-exports {n!r} from {how}"
        if how == "assign" and _typing_alias(obj):
            continue
        if inspect.isclass(obj) or inspect.isroutine(obj):  # an assignment or import that names another's object
            origin = getattr(obj, "__module__", None) or ""
            assert origin.startswith("spikelab"), \
                f"{name}.__all__: {n!r} is {origin}.{getattr(obj, '__qualname__', n)}, not spikelab's"


@pytest.mark.parametrize("name", MODULES)
def test_star_import_brings_exactly_all(name):
    module = _import(name)
    namespace: dict = {}
    exec(f"from {name} import *", namespace)
    namespace.pop("__builtins__", None)
    assert set(namespace) == set(module.__all__), name
    leaked = sorted(set(namespace) & set(FOREIGN))
    assert not leaked, f"from {name} import * brings in {leaked}"


def test_every_name_in_all_resolves():
    for name in sl.__all__:
        assert getattr(sl, name) is not None, name
    assert len(sl.__all__) == len(set(sl.__all__))


def test_public_submodules_reachable_alike():
    listed = dir(sl)
    for name in SUBMODULES:
        assert name in sl.__all__, name
        assert name in listed, name
        module = getattr(sl, name)
        assert isinstance(module, ModuleType) and module.__name__ == f"spikelab.{name}", name
        assert module is sys.modules[f"spikelab.{name}"]
    assert sl.kernels.reference is importlib.import_module("spikelab.kernels.reference")
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        sl.nope  # noqa: B018


def test_lazy_submodules_load_on_first_use_and_are_listed():
    """In a fresh interpreter: ``import spikelab`` does not load them, ``dir`` lists them, access loads them."""
    code = (
        "import sys, spikelab as sl\n"
        f"lazy = {LAZY!r}\n"
        "print(sorted(m for m in lazy if 'spikelab.' + m in sys.modules))\n"
        "print(sorted(m for m in lazy if m not in dir(sl)))\n"
        "print(sorted(m for m in lazy if getattr(sl, m) is not sys.modules.get('spikelab.' + m)))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    loaded, unlisted, unreachable = proc.stdout.splitlines()[-3:]
    assert loaded == "[]", f"loaded by import spikelab: {loaded}"
    assert unlisted == "[]", f"missing from dir(spikelab): {unlisted}"
    assert unreachable == "[]", f"not reachable as spikelab.<name>: {unreachable}"
