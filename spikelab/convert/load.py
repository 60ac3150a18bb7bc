"""Loading the ANN to convert: a module, a full saved model, or a state_dict plus an architecture.

The architecture is ``module:Class`` (imported with the working folder first on ``sys.path``, as
``python -m`` does), ``path/to/file.py:Class``, or a torchvision name. Every failure is a
``ValueError`` naming what was looked for, where, and why it failed.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import keyword
import os
import pickletools
import re
import sys
import traceback
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator, Mapping, Optional, Union

import torch
from torch import nn

# modules of the globals that any torch.save file holds (tensor rebuilding, containers)
_PLUMBING = {"__builtin__", "builtins", "collections", "copyreg", "_codecs", "torch", "torch._utils",
             "torch._tensor", "torch.serialization", "numpy", "numpy.core.multiarray", "numpy._core.multiarray"}


@contextlib.contextmanager
def _first_on_path(folder: Union[str, Path]) -> Iterator[None]:
    """``folder`` first on ``sys.path`` for the duration (as ``python -m`` puts the working folder); taken
    off again however the body ends (an error, an exception of the user's code)."""
    folder = str(folder)
    sys.path.insert(0, folder)
    try:
        importlib.invalidate_caches()  # a file written a moment ago must be seen
        yield
    finally:
        if sys.path and sys.path[0] == folder:
            del sys.path[0]
        else:  # the code run moved it: the first occurrence is the one put there above
            try:
                sys.path.remove(folder)
            except ValueError:
                pass


def _where(err: BaseException, prefer: Optional[str] = None, only: bool = False) -> str:
    """``file, line N`` of the error: in ``prefer`` (the user's file) when it is on the traceback,
    else (unless ``only``) where it was raised."""
    if isinstance(err, SyntaxError) and err.filename and err.lineno:
        return f"{err.filename}, line {err.lineno}"
    frames = [f for f in traceback.extract_tb(err.__traceback__) if not f.filename.startswith("<")]
    if prefer is not None:
        mine = [f for f in frames if os.path.abspath(f.filename) == os.path.abspath(prefer)]
        frames = mine if (mine or only) else frames
    return f"{frames[-1].filename}, line {frames[-1].lineno}" if frames else ""


def _failure(err: BaseException, prefer: Optional[str] = None, only: bool = False) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    where = _where(err, prefer, only)
    return f"{type(err).__name__}: {text}" + (f" (at {where})" if where else "")


def _import_module(name: str, spec: str) -> ModuleType:
    """``import name`` with the working folder first on the path; errors name the module, the
    folder searched and the underlying reason."""
    cwd = os.getcwd()
    with _first_on_path(cwd):
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as err:
            parts = name.split(".")
            if err.name in {".".join(parts[:i]) for i in range(2, len(parts) + 1)}:
                parent = err.name.rpartition(".")[0]
                raise ValueError(f"{spec}: cannot import module {name!r}: the package {parent!r} "
                                 f"({_origin(parent)}) has no {err.name.rpartition('.')[2]!r}") from None
            if err.name == parts[0]:
                top = parts[0]
                raise ValueError(
                    f"{spec}: cannot import module {name!r}: no {top}.py (nor a {top}/ package) in the working "
                    f"folder {cwd}, and none on the Python path ({type(err).__name__}: {err}). Run from the "
                    f"folder that holds {top}.py, or give the file: path/to/{parts[-1]}.py:"
                    f"{spec.rpartition(':')[2] or 'Class'}") from None
            raise ValueError(f"{spec}: importing module {name!r} failed: {_failure(err, _origin(name))}. "
                             "The error is inside that module (or something it imports): fix it, or install "
                             "what it needs") from None
        except Exception as err:  # noqa: BLE001 - any error of the user's module code, reported with its place
            raise ValueError(f"{spec}: importing module {name!r} failed: {_failure(err, _origin(name))}") from None


def _origin(name: str) -> Optional[str]:
    """The file that ``import name`` would run, without running it."""
    try:
        found = importlib.util.find_spec(name)
    except Exception:  # noqa: BLE001 - a parent package that fails to import
        return None
    return found.origin if found is not None else None


_MISSING = object()
# the modules run from files: resolved path -> ((mtime_ns, size) when it was run, the module)
_FILE_MODULES: dict[str, tuple[tuple[int, int], ModuleType]] = {}


def _same_file(module: Any, path: Path) -> bool:
    found = getattr(module, "__file__", None)
    try:
        return bool(found) and Path(found).resolve() == path
    except (OSError, RuntimeError, TypeError, ValueError):
        return False


def _file_module_name(path: Path) -> str:
    """The file's stem when ``import <stem>`` would run this very file (or nothing), so classes pickle
    under the name a plain import finds; else a private name of its own that shadows nothing (not the
    standard library's ``code``, not another module of that name the user imported)."""
    stem = path.stem
    if stem.isidentifier() and not keyword.iskeyword(stem) and stem not in sys.stdlib_module_names \
            and stem not in sys.builtin_module_names:
        held = sys.modules.get(stem, _MISSING)
        if held is _MISSING or _same_file(held, path):
            try:
                found = importlib.util.find_spec(stem)
            except Exception:  # noqa: BLE001 - a module without a spec, a broken package: the name is taken
                found = _MISSING
            if found is None or (found is not _MISSING and found.origin
                                 and Path(found.origin).resolve() == path):
                return stem
    safe = re.sub(r"\W", "_", stem)
    return f"spikelab_user_{safe}_{hashlib.sha1(str(path).encode()).hexdigest()[:12]}"


def _import_file(path: Path, spec: str) -> ModuleType:
    """Run the Python file ``path`` as a module (its folder first on ``sys.path``, as for a script).

    The file runs once: a later call for the same, unchanged file (same resolved path, mtime and
    size) gives the same module, and a module of that file the user imported is used as it is. It is
    registered in ``sys.modules`` (classes must be findable by name, for pickling and dataclasses)
    under its stem only when that shadows nothing, else under a private ``spikelab_user_...`` name;
    if running it fails, whatever held that name before is put back."""
    path = path if path.is_absolute() else Path(os.getcwd()) / path
    if not path.is_file():
        raise ValueError(f"{spec}: no such file {path}")
    resolved = path.resolve()
    stat = resolved.stat()
    stamp = (stat.st_mtime_ns, stat.st_size)
    ran = _FILE_MODULES.get(str(resolved))
    if ran is not None and ran[0] == stamp and sys.modules.get(ran[1].__name__) is ran[1]:
        return ran[1]
    name = _file_module_name(resolved)
    held = sys.modules.get(name, _MISSING)
    if held is not _MISSING and (ran is None or held is not ran[1]) and _same_file(held, resolved):
        return held  # the user's own import of this file: as ``import`` would give it
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{spec}: {path} is not a Python file that can be imported (expected a .py file)")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        with _first_on_path(path.parent):
            module_spec.loader.exec_module(module)
    except BaseException as err:
        if held is _MISSING:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = held
        if not isinstance(err, Exception):  # KeyboardInterrupt, SystemExit: not the file's error to report
            raise
        raise ValueError(f"{spec}: running {path} failed: {_failure(err, str(path))}") from None
    _FILE_MODULES[str(resolved)] = (stamp, module)
    return module


def _module_classes(module: ModuleType) -> list[str]:
    """The nn.Module subclasses the module holds, those it defines first."""
    classes = [(k, v) for k, v in vars(module).items()
               if inspect.isclass(v) and issubclass(v, nn.Module) and not k.startswith("_")]
    own = [k for k, v in classes if v.__module__ == module.__name__]
    return own + [k for k, _ in classes if k not in own]


def import_model(spec: str) -> Any:
    """The object named by ``module:Class`` or ``path/to/file.py:Class`` (not called)."""
    module_part, colon, attr = spec.rpartition(":")
    if not colon or not module_part or not attr:
        raise ValueError(f"{spec}: expected 'module:Class' or 'path/to/file.py:Class'")
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        module = _import_file(Path(module_part), spec)
    else:
        module = _import_module(module_part, spec)
    where = f"module {module.__name__!r} ({getattr(module, '__file__', None) or 'built in'})"
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        classes = _module_classes(module)
        held = (f"its nn.Module classes: {', '.join(classes)}" if classes
                else "it holds no nn.Module class")
        raise ValueError(f"{spec}: {where} has no {attr!r}; {held}") from None
    if not callable(obj):
        raise ValueError(f"{spec}: {attr!r} in {where} is a {type(obj).__name__}, not an nn.Module class "
                         "or a function returning one")
    return obj


def _arch_kwargs(arch_kwargs: Optional[Mapping[str, Any]], legacy: dict) -> dict:
    """The architecture's keyword arguments: the ``arch_kwargs`` dict (any key, even one named like a
    parameter of the caller), plus those given loose as keyword arguments (the older form)."""
    if arch_kwargs is None:
        arch_kwargs = {}
    if not isinstance(arch_kwargs, Mapping):
        raise ValueError(f"arch_kwargs: expected a dict of the architecture's keyword arguments, got a "
                         f"{type(arch_kwargs).__name__}")
    bad = [k for k in arch_kwargs if not isinstance(k, str)]
    if bad:
        raise ValueError(f"arch_kwargs: keyword argument names must be strings, got {bad[:4]}")
    both = sorted(set(arch_kwargs) & set(legacy))
    if both:
        raise ValueError(f"arch_kwargs: {', '.join(both)} given twice, in arch_kwargs and as a keyword argument")
    return {**legacy, **arch_kwargs}


def _takes(factory: Any) -> str:
    """``Class(a, b=1)``: what the factory accepts, for an error message ('' when unknown)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return ""
    return f"{getattr(factory, '__name__', 'it')}{signature}"


def _build_failed(arch: str, what: str, factory: Any, kwargs: dict, err: BaseException, where: str) -> ValueError:
    given = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
    takes = _takes(factory) if isinstance(err, TypeError) else ""
    return ValueError(f"{arch}: building the model {what}({given}) failed: {_failure(err, where, only=True)}"
                      + (f"; it takes {takes}" if takes else "") + ". Give constructor arguments as JSON on the "
                      "command line (--model-args '{\"classes\": 10}') or in Python as "
                      "load_ann(..., arch_kwargs={\"classes\": 10})")


def build_architecture(arch: str, arch_kwargs: Optional[Mapping[str, Any]] = None, **kwargs) -> nn.Module:
    """An untrained model from ``module:Class`` / ``path/to/file.py:Class`` or a torchvision name,
    called with ``arch_kwargs`` (a dict: any key reaches the class, even ``arch`` or ``weights``;
    loose keyword arguments are taken too, the older form). The working folder is searched first, as
    ``python -m`` does. A constructor that fails (a ``TypeError`` for arguments it does not take
    included) is a ``ValueError`` naming the class, the arguments given and those it takes."""
    kwargs = _arch_kwargs(arch_kwargs, kwargs)
    if ":" in arch or arch.endswith(".py"):
        if arch.endswith(".py"):
            raise ValueError(f"{arch}: name the class too: '{arch}:Class'")
        factory = import_model(arch)
        try:
            model = factory(**kwargs)
        except Exception as err:  # noqa: BLE001 - the user's constructor; reported with its place
            raise _build_failed(arch, arch.rpartition(":")[2], factory, kwargs, err, _source_file(factory)) \
                from None
        if not isinstance(model, nn.Module):
            raise ValueError(f"{arch}: returned a {type(model).__name__}, expected an nn.Module")
        return model
    if Path(os.getcwd(), f"{arch}.py").is_file():
        raise ValueError(f"{arch}: {arch}.py is in the working folder; name the class: '{arch}:Class'")
    try:
        from torchvision import models as tv
    except Exception:  # noqa: BLE001 - torchvision missing or broken beside this torch
        raise ValueError(f"{arch}: looks like a torchvision name, but torchvision does not import here; "
                         "give the architecture as 'module:Class' or 'path/to/file.py:Class'") from None
    try:
        builder = tv.get_model_builder(arch)  # not get_model(arch, **kwargs): a 'name' key would clash
    except ValueError as err:
        raise ValueError(f"{arch}: unknown torchvision model ({err}); for your own model give "
                         "'module:Class' or 'path/to/file.py:Class'") from None
    try:
        return builder(**kwargs)
    except Exception as err:  # noqa: BLE001 - torchvision's builder refusing the arguments
        raise _build_failed(arch, f"torchvision {arch}", builder, kwargs, err, None) from None


def _source_file(obj) -> Optional[str]:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


def _state_dict_of(obj) -> Optional[dict]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    return None


def _archive(path: Path) -> Optional[zipfile.ZipFile]:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        return None


def _is_torchscript(path: Path) -> bool:
    archive = _archive(path)
    if archive is None:
        return False
    with archive:
        return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in archive.namelist())


_STRING_OPS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"}
_MARK = object()  # a MARK on the simulated stack


def _globals_in(data: bytes) -> Iterator[tuple[str, str]]:
    """The ``(module, name)`` of every GLOBAL / INST / STACK_GLOBAL of a pickle, in order. A pure walk of
    its opcodes (``pickletools.genops``) that follows the stack and the memo only as far as strings and
    marks go, so a module name fetched back from the memo (protocol 4 ``BINGET``) is read right;
    nothing is unpickled."""
    stack: list[Any] = []
    memo: dict[int, Any] = {}
    for op, arg, _ in pickletools.genops(data):
        name = op.name
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[int(arg)] = stack[-1]
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo[int(arg)])
        elif name == "DUP":
            stack.append(stack[-1])
        elif name in _STRING_OPS:
            stack.append(arg if isinstance(arg, str) else None)
        elif name == "GLOBAL":
            module, _, attr = str(arg).partition(" ")
            yield module, attr
            stack.append(None)
        else:
            if name == "STACK_GLOBAL":
                attr, module = stack[-1], stack[-2]
                if isinstance(module, str) and isinstance(attr, str):
                    yield module, attr
            elif name == "INST":
                module, _, attr = str(arg).partition(" ")
                yield module, attr
            for kind in reversed(op.stack_before):
                if kind is pickletools.stackslice:
                    while stack[-1] is not _MARK:
                        stack.pop()
                elif kind is pickletools.markobject:
                    if stack.pop() is not _MARK:
                        raise ValueError("damaged pickle: no MARK where one is expected")
                else:
                    stack.pop()
            for kind in op.stack_after:
                stack.append(_MARK if kind is pickletools.markobject else None)


def pickled_classes(path: Union[str, Path]) -> list[tuple[str, str]]:
    """The ``(module, name)`` of the classes and functions a torch.save file names, in the order the
    unpickler would meet them, beyond the plumbing every file holds; read without running it."""
    archive = _archive(Path(path))
    if archive is None:
        return []
    found: list[tuple[str, str]] = []
    try:
        with archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            if not names:
                return []
            for module, name in _globals_in(archive.read(names[0])):
                if module not in _PLUMBING and (module, name) not in found:
                    found.append((module, name))
    except Exception:  # noqa: BLE001 - a damaged file: the loader reports it
        return found
    return found


def _user_class(classes: list[tuple[str, str]]) -> Optional[tuple[str, str]]:
    """The first class from the user's own code (not torch, not the standard library)."""
    for module, name in classes:
        top = module.split(".")[0]
        if top not in ("torch", "spikelab", "torchvision", "numpy") and top not in sys.stdlib_module_names:
            return module, name
    return None


def _untrusted(path: Path, classes: list[tuple[str, str]]) -> str:
    theirs = [f"{m}.{n}" for m, n in classes if m.split(".")[0] != "torch"]
    torch_classes = len(classes) - len(theirs)
    shown = ", ".join(theirs[:4]) + (", ..." if len(theirs) > 4 else "")
    if torch_classes:
        shown += (" and " if shown else "") + f"{torch_classes} torch class{'es' if torch_classes > 1 else ''}"
    own = _user_class(classes)
    if own is None:
        arch, note = "module:Class", ""
    elif own[0] == "__main__":
        arch = f"path/to/script.py:{own[1]}"
        note = f" ({own[1]} was defined in a script run directly: name that script's file)"
    else:
        arch, note = f"{own[0]}:{own[1]}", ""
    return (f"{path}: this weights file holds pickled Python objects ({shown}), not only tensors: a whole saved "
            "model, or a checkpoint with objects in it. Loading it would run code from the file, so it is refused. "
            "Two fixes: (1) where the model is defined, save its weights as data, "
            "torch.save(model.state_dict(), 'weights.pt'), and convert with --weights weights.pt --model "
            f"{arch}{note} (Python: load_ann('weights.pt', arch={arch!r})); or (2) if you made this file or "
            "trust its source, add --trust (Python: load_ann(path, trust=True))")


def _check_importable(path: Path, classes: list[tuple[str, str]]) -> None:
    """Import the modules a trusted file's classes live in, so a failure names the module, the folder
    searched and the inner error instead of the unpickler's bare 'No module named'."""
    for module, name in classes:
        if module == "__main__":
            if not hasattr(sys.modules["__main__"], name):
                raise ValueError(
                    f"{path}: this model (class __main__.{name}) was saved from a script run directly, and that "
                    "class is not defined here. In that script, save torch.save(model.state_dict(), "
                    f"'weights.pt') and convert with --weights weights.pt --model path/to/script.py:{name}")
            continue
        if module.split(".")[0] in ("torch", "spikelab", "torchvision") or module in sys.builtin_module_names:
            continue
        where = _import_module(module, f"{path} (needs {module}.{name})")
        obj: Any = where
        for part in name.split("."):
            obj = getattr(obj, part, None)
        if obj is None:
            held = ", ".join(_module_classes(where)) or "none"
            raise ValueError(f"{path}: the saved model needs {module}.{name}, but module {module!r} "
                             f"({getattr(where, '__file__', '')}) has no {name!r} (its nn.Module classes: {held}); "
                             "was the class renamed since the file was saved?")


def _import_advice(path: Path, classes: list[tuple[str, str]]) -> Optional[ValueError]:
    """Why a trusted load that has failed could not rebuild its classes (the module that does not
    import, and why), or None when they all import: advisory, asked only once the real load failed."""
    try:
        _check_importable(path, classes)
    except ValueError as err:
        return err
    except Exception:  # noqa: BLE001 - the pre-check itself broke: the loader's own error stands
        return None
    return None


def load_ann(weights: Union[str, Path, nn.Module, dict], arch: Optional[str] = None, trust: bool = False,
             arch_kwargs: Optional[Mapping[str, Any]] = None, **kwargs) -> nn.Module:
    """The ANN to convert, in ``eval()`` mode.

    ``weights`` may be a module, a path to a fully saved model (read only with ``trust=True``:
    unpickling runs code), or a state_dict (or a path to one, possibly inside
    ``{"state_dict": ...}`` / ``{"model": ...}``); a state_dict needs ``arch`` (``module:Class``,
    ``path/to/file.py:Class`` or a torchvision name), called with the dict ``arch_kwargs`` (any key
    reaches the class, even ``trust`` or ``weights``; loose keyword arguments ``**kwargs`` are taken
    as well, the older form). Key or shape mismatches are reported with the offending names.
    """
    from spikelab import files

    arch_kwargs = _arch_kwargs(arch_kwargs, kwargs)
    if isinstance(weights, nn.Module):
        return weights.eval()
    obj = weights
    if isinstance(weights, (str, Path)):
        path = Path(weights)
        if path.is_file() and _is_torchscript(path):
            raise ValueError(
                f"{path}: a TorchScript model (torch.jit.save), which holds compiled code, not the Python model "
                "that conversion traces. Save the weights instead, torch.save(model.state_dict(), 'weights.pt'), "
                "and convert with --weights weights.pt --model module:Class")
        classes = pickled_classes(path) if path.is_file() else []
        try:
            with _first_on_path(os.getcwd()):  # a trusted whole model rebuilds classes from the working folder
                obj = files.load(path, trust=trust, what="weights file")
        except files.UntrustedFileError as err:
            if not classes:
                raise
            raise files.UntrustedFileError(_untrusted(path, classes)) from err
        except Exception:
            advice = _import_advice(path, classes) if trust and classes else None
            if advice is None:
                raise
            raise advice from None
    if isinstance(obj, torch.jit.ScriptModule):
        raise ValueError(f"weights: {weights!r} is a TorchScript model; conversion needs the Python model: save "
                         "its state_dict and give the architecture")
    if isinstance(obj, nn.Module):
        return obj.eval()
    state = _state_dict_of(obj)
    if state is None:
        held = type(obj).__name__ + (f" with keys {sorted(map(str, obj))[:8]}" if isinstance(obj, dict) else "")
        raise ValueError(f"weights: {weights if isinstance(weights, (str, Path)) else type(weights).__name__} holds "
                         f"neither a model nor a state_dict (a {held})")
    if arch is None:
        raise ValueError("arch: a state_dict needs the architecture (--model module:Class, path/to/file.py:Class "
                         "or a torchvision name; Python: load_ann(path, arch=...))")
    model = build_architecture(arch, arch_kwargs)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        lines = []
        if missing:
            lines.append(f"missing from the checkpoint: {missing[:10]}{' ...' if len(missing) > 10 else ''}")
        if unexpected:
            lines.append(f"not in {arch}: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
        for k in shapes[:10]:
            lines.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}")
        source = weights if isinstance(weights, (str, Path)) else "weights"
        raise ValueError(f"{source}: the checkpoint does not match {arch}: " + "; ".join(lines))
    model.load_state_dict(state)
    return model.eval()


__all__ = ["load_ann", "build_architecture", "import_model", "pickled_classes"]
