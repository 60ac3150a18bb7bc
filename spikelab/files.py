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
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as err:
        if trust:
            raise ValueError(f"{path}: not a readable torch {what} ({str(err).splitlines()[0]})") from None
        raise UntrustedFileError(
            f"{path}: this {what} holds Python objects beyond tensors, numbers, strings and containers (e.g. a "
            "whole pickled model); loading it would run code from the file. If you made it or trust its source, "
            "load it with trust=True (command line: --trust)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable torch {what} ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None


__all__ = ["load", "UntrustedFileError"]
