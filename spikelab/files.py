"""Loading torch files without running code from them.

``torch.load`` unpickles: a pickled object can run any code while it loads. :func:`load` reads
only tensors, numbers, strings and containers (``weights_only=True``) unless the caller passes
``trust=True`` (the CLIs' ``--trust``), which a user should do only for files they made or trust.
Every command and loader of the library reads ``.pt`` files through it.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Union

import torch


_ZIP_MAGIC = b"PK\x03\x04"
# the pickled magic number that opens files of torch.save(..., _use_new_zipfile_serialization=False)
_LEGACY_MAGIC = b"\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


class UntrustedFileError(ValueError):
    """A file holds Python objects that only a trusted (code-running) load can rebuild."""


def load(path: Union[str, Path], *, trust: bool = False, map_location: Any = "cpu", what: str = "file") -> Any:
    """The contents of the torch file ``path``.

    Args:
        path: the file.
        trust: also rebuild arbitrary pickled objects (whole saved models): this runs code from the
            file, so only for files you trust.
        map_location: as for ``torch.load``.
        what: what the file is, for error messages ("checkpoint", "model", ...).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such {what}")
    if not path.is_file():
        raise ValueError(f"{path}: expected a {what} file, got a folder, pipe or device")
    with open(path, "rb") as f:
        head = f.read(32)
    if not head.startswith(_ZIP_MAGIC) and not (head.startswith(b"\x80") and _LEGACY_MAGIC in head):
        found = "an empty file" if not head else f"a file starting with bytes {head[:8].hex(' ')}"
        raise ValueError(f"{path}: not a torch {what}: expected a file written by torch.save (a zip archive), "
                         f"got {found}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if trust:
            raise ValueError(f"{path}: not a readable torch {what}: its contents are damaged ({_reason(err)})") \
                from None
        if "global" in str(err).lower():  # torch names the class or function it refused
            raise UntrustedFileError(
                f"{path}: this {what} holds Python objects beyond tensors, numbers, strings and containers (e.g. a "
                "whole pickled model); loading it would run code from the file. If you made it or trust its "
                "source, load it with trust=True (command line: --trust)") from None
        raise UntrustedFileError(
            f"{path}: this {what} cannot be read as plain data ({_reason(err)}): it is damaged, or written with "
            "pickle features that only a full (code-running) load reads. If you made it or trust its source, load "
            "it with trust=True (command line: --trust)") from None
    except (ModuleNotFoundError, AttributeError) as err:  # a trusted load rebuilding classes it cannot find
        raise ValueError(f"{path}: this {what} holds objects whose class cannot be imported here ({_reason(err)}); "
                         "install the code that defines them, or save a state_dict instead") from None
    except Exception as err:  # a damaged archive fails in many ways (zip reader, unpickler, storage sizes)
        if "TorchScript" in str(err):
            raise ValueError(f"{path}: a TorchScript archive, not a torch.save {what}; load it with "
                             "torch.jit.load, or save the model's state_dict") from None
        raise ValueError(f"{path}: not a readable torch {what}: the file is truncated or damaged "
                         f"({_reason(err)})") from None


def _reason(err: BaseException) -> str:
    """The informative line of a torch error (its messages run to several paragraphs)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    picked = [line for line in lines if "unsupported" in line.lower()] or \
        [line for line in lines if "error" in line.lower() and "please" not in line.lower()] or lines[:1]
    text = picked[0].split(". ")[0] if picked else ""
    return f"{type(err).__name__}: {text[:160]}" if text else type(err).__name__


def expect_keys(obj: Any, path: Union[str, Path], keys, expected: str) -> dict:
    """``obj`` itself if it is a mapping holding every one of ``keys``; otherwise one line naming
    the file, what it holds and what was expected."""
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected {expected}, got a file holding a {type(obj).__name__}")
    missing = [k for k in keys if k not in obj]
    if missing:
        held = ", ".join(sorted(map(str, obj))[:8]) or "nothing"
        raise ValueError(f"{path}: expected {expected}; it lacks {', '.join(missing)} (it holds {held})")
    return obj


__all__ = ["load", "expect_keys", "UntrustedFileError"]
