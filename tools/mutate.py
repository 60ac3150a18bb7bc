"""Mutation testing: plant one small bug at a time in a module and check that the tests catch it.

    .venv/bin/python tools/mutate.py spikelab/data/datasets/dvsgesture.py tests/test_datasets.py [more tests]
        [--only LINE[,LINE]] [--jobs 2] [--timeout S] [--json out.json]
    .venv/bin/python tools/mutate.py --generated lif --functions forward_plain,backward_plain_fast TESTS
    .venv/bin/python tools/mutate.py MODULE TESTS --replace OLD NEW     (one planted bug, by hand)

The repository is copied to a scratch folder per job (``.venv``, ``.git`` and build outputs left
out); each mutant is the module with one operator changed (``<`` to ``<=``, ``+`` to ``-``,
``and`` to ``or``, a number off by one, a sign or a ``not`` dropped, ...), written into a copy;
the named tests then run on it (``pytest -x``, with the real sample recordings and no skips
allowed: ``SPIKELAB_REQUIRE_SAMPLES=1``, ``SPIKELAB_REQUIRE_PEERS=1``). A mutant is *killed*
when they fail (or time out) and *survives* when they pass: a survivor is a bug the tests would
miss, or an equivalent change (then say why in the review). Messages of ``raise`` statements,
warnings, docstrings and strings are not mutated. The copy imports as ``spikelab`` ahead of the
editable install, its ``kernels/`` folder linked in as ``spikelab.kernels``. Each run is a fork
of a process that has already imported torch, NumPy, Numba and pytest (never spikelab), so a
mutant costs its tests, not the interpreter's start.

``--generated FAMILY`` mutates the Numba source that ``kernels/codegen.py`` generates for a
built-in family (``lif``, ``alif``, ``cuba``, ``probabilistic``) instead of a file: the copy's
``spikelab.kernels.generated.source`` hands the mutated text to the family's kernels (only
those), compiled into a scratch kernel cache. ``--functions`` limits the mutants to the named
kernels (the generated module holds 24 variants of the same loops).

Prints each survivor (line, change) and the score; ``--json`` writes them for the record.
"""


from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SWAP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is, ast.In: ast.NotIn, ast.NotIn: ast.In}
_SWAP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Mult,
             ast.Mod: ast.FloorDiv, ast.LShift: ast.RShift, ast.RShift: ast.LShift, ast.BitAnd: ast.BitOr,
             ast.BitOr: ast.BitAnd, ast.Pow: ast.Mult}


@dataclass
class Mutant:
    index: int
    line: int
    change: str


def _symbol(op: ast.AST) -> str:
    return {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.Is: "is",
            ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
            ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.LShift: "<<", ast.RShift: ">>", ast.BitAnd: "&",
            ast.BitOr: "|", ast.Pow: "**", ast.And: "and", ast.Or: "or"}.get(type(op), type(op).__name__)


def _skipped_nodes(tree: ast.AST, functions: frozenset[str] = frozenset()) -> set[int]:
    """Nodes not to mutate: inside ``raise`` statements, warnings/log calls, type annotations and
    decorators (``parallel=True``, ``cache=True``: how Numba compiles, not what it computes); with
    ``functions``, everything outside the top-level functions of those names."""
    skip: set[int] = set()
    if functions:
        for top in tree.body:
            if not (isinstance(top, (ast.FunctionDef, ast.ClassDef)) and top.name in functions):
                skip.update(id(n) for n in ast.walk(top))
    for node in ast.walk(tree):  # annotations (postponed, never evaluated) and decorators (compile options)
        notes = [getattr(node, "annotation", None), getattr(node, "returns", None),
                 *getattr(node, "decorator_list", [])]
        for note in notes:
            if note is not None:
                skip.update(id(n) for n in ast.walk(note))
    for node in ast.walk(tree):
        quiet = isinstance(node, ast.Raise) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("warn", "debug", "info", "warning", "set_postfix", "write"))
        if quiet:
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _sites(tree: ast.AST, functions: frozenset[str] = frozenset()):
    """``(node, description, apply)`` for every mutation of ``tree``; ``apply`` edits in place."""
    skip = _skipped_nodes(tree, functions)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _SWAP_CMP:
                    new = _SWAP_CMP[type(op)]
                    yield node, f"{_symbol(op)} -> {_symbol(new())}", (lambda n, i=i, new=new: n.ops.__setitem__(i, new()))
        elif isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in _SWAP_BIN:
            new = _SWAP_BIN[type(node.op)]
            yield node, f"{_symbol(node.op)} -> {_symbol(new())}", (lambda n, new=new: setattr(n, "op", new()))
        elif isinstance(node, ast.BoolOp):
            new = ast.Or if isinstance(node.op, ast.And) else ast.And
            yield node, f"{_symbol(node.op)} -> {_symbol(new())}", (lambda n, new=new: setattr(n, "op", new()))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.Not, ast.Invert)):
            yield node, f"drop unary {type(node.op).__name__}", "unwrap"
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float) and not isinstance(node.value, bool):
            value = node.value
            new_value = value + 1 if isinstance(value, int) else (1.0 if value == 0 else value * 2)
            yield node, f"{value!r} -> {new_value!r}", (lambda n, v=new_value: setattr(n, "value", v))
        elif isinstance(node, ast.Constant) and isinstance(node.value, bool):
            yield node, f"{node.value} -> {not node.value}", (lambda n: setattr(n, "value", not n.value))


def mutants(source: str, functions: frozenset[str] = frozenset()) -> list[tuple[Mutant, str]]:
    """Every mutant of ``source`` (inside ``functions`` when given): its description and its text.
    Only the top-level statement holding the change is rewritten; the rest keeps its text."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    out = []
    index = 0
    for top in tree.body:
        sites = list(_sites(ast.Module(body=[top], type_ignores=[]), functions if functions else frozenset()))
        if functions and not (isinstance(top, (ast.FunctionDef, ast.ClassDef)) and top.name in functions):
            sites = []
        first = min([top.lineno] + [d.lineno for d in getattr(top, "decorator_list", [])])
        for k, (node, change, apply) in enumerate(sites):
            mutated = ast.Module(body=[copy.deepcopy(top)], type_ignores=[])
            target = list(_sites(mutated, functions))[k][0]
            if apply == "unwrap":
                parent = next(p for p in ast.walk(mutated) for c in ast.iter_child_nodes(p) if c is target)
                for field, value in ast.iter_fields(parent):
                    if value is target:
                        setattr(parent, field, target.operand)
                    elif isinstance(value, list):
                        value[:] = [target.operand if v is target else v for v in value]
            else:
                apply(target)
            text = ast.unparse(ast.fix_missing_locations(mutated)) + "\n"
            out.append((Mutant(index, node.lineno, change), "".join(lines[:first - 1]) + text
                        + "".join(lines[top.end_lineno:])))
            index += 1
    return out


def replaced(source: str, old: str, new: str, functions: frozenset[str] = frozenset()) -> tuple[Mutant, str]:
    """The one mutant that replaces ``old`` by ``new`` (every occurrence; only inside ``functions``
    when given): a planted bug written by hand."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    spans = [(f.lineno, f.end_lineno) for f in tree.body if isinstance(f, (ast.FunctionDef, ast.ClassDef))
             and f.name in functions] if functions else [(1, len(lines))]
    count, first = 0, None
    for lo, hi in spans:
        for i in range(lo - 1, hi):
            if old in lines[i]:
                count += lines[i].count(old)
                first = first or i + 1
                lines[i] = lines[i].replace(old, new)
    if not count:
        raise SystemExit(f"--replace: {old!r} does not occur" + (f" in {sorted(functions)}" if functions else ""))
    return Mutant(0, first, f"{old!r} -> {new!r} ({count}x)"), "".join(lines)


def scratch_copy() -> Path:
    """The repository copied to a scratch folder, importable ahead of the editable install."""
    dest = Path(tempfile.mkdtemp(prefix="spikelab-mutate-"))
    ignore = shutil.ignore_patterns(".venv", ".git", "site", "__pycache__", "*.egg-info", "demo_out", "runs")
    for item in ROOT.iterdir():
        if item.name in (".venv", ".git", "site") or item.name.endswith(".egg-info"):
            continue
        if item.is_dir():
            shutil.copytree(item, dest / item.name, ignore=ignore)
        else:
            shutil.copy2(item, dest / item.name)
    os.symlink(dest / "kernels", dest / "spikelab" / "kernels")  # spikelab.kernels from the copy
    return dest


def _environment(cache: Path, jobs: int, jit: bool) -> None:
    """What every run sees: the real sample recordings, no skips, a scratch kernel cache (seeded
    with this user's, so the unmutated kernels are not compiled again), one thread per run when
    several run at once, and Numba's compiler switched off with ``jit=False``. Set before
    NumPy/torch/Numba are imported."""
    # where spikelab.kernels.generated.cache_dir() puts them (not imported: NumPy/torch must come later)
    roots = [os.environ.get("SPIKELAB_CACHE_DIR"), os.environ.get("SPIKELAB_CACHE"), Path.home() / ".cache" / "spikelab"]
    real = next((Path(r) / "kernels" for r in roots if r and (Path(r) / "kernels").is_dir()), Path("/nonexistent"))
    if real.is_dir():
        shutil.copytree(real, cache / "kernels", ignore=shutil.ignore_patterns("*.tmp"))
    if not jit:
        os.environ["NUMBA_DISABLE_JIT"] = "1"
    os.environ.update({
        "SPIKELAB_SAMPLES": os.environ.get("SPIKELAB_SAMPLES", str(ROOT.parent / "shared" / "samples")),
        "SPIKELAB_REQUIRE_SAMPLES": "1", "SPIKELAB_REQUIRE_PEERS": "1", "SPIKELAB_CACHE_DIR": str(cache)})
    if jobs > 1:
        for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = "1"


def _preload() -> None:
    """Import the heavy dependencies once, before forking (never spikelab: each run imports its copy)."""
    import numba  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import sympy  # noqa: F401
    import torch  # noqa: F401


_HOOK = """
from spikelab.kernels import generated as _generated
_real_source = _generated.source
def _mutated_source(key, dialect, _base=_BASE, _text=_TEXT):
    text = _real_source(key, dialect)
    return _text if dialect == "numba" and text == _base else text
_generated.source = _mutated_source
"""


def _write_stamped(path: Path, text: str) -> None:
    """Write ``text`` with a fresh modification time: Numba's cache never takes a mutant for the original."""
    path.write_text(text)
    stamp = time.time_ns()
    os.utime(path, ns=(stamp, stamp))


def _child(repo: Path, tests: list[str], module: str, text: str, generated_base: str | None) -> int:
    """In the forked process: put the mutant in place, then run the tests on the copy."""
    import pytest

    os.setsid()
    os.chdir(repo)
    sys.path.insert(0, str(repo))
    sys.dont_write_bytecode = True
    log = os.open(repo / "mutate.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # read when the unmutated run fails
    os.dup2(log, 1)
    os.dup2(log, 2)
    if generated_base is not None and text is not None:
        exec(_HOOK, {"_BASE": generated_base, "_TEXT": text})
    elif generated_base is None and text is not None:
        _write_stamped(repo / module, text)
    return int(pytest.main(["-x", "-q", "-p", "no:cacheprovider", *tests]))


class Runner:
    """Runs the tests against one mutant at a time in each of ``jobs`` scratch copies."""

    def __init__(self, module: str, tests: list[str], jobs: int, generated_base: str | None):
        self.module, self.tests, self.generated_base = module, tests, generated_base
        self.copies = [scratch_copy() for _ in range(jobs)]
        self.source = None if generated_base is not None else (ROOT / module).read_text()

    def start(self, slot: int, text: str | None) -> int:
        """Fork a run of the tests on copy ``slot`` with ``text`` as the module (None: unmutated)."""
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                code = _child(self.copies[slot], self.tests, self.module, text, self.generated_base)
            finally:
                os._exit(code)
        return pid

    def restore(self, slot: int) -> None:
        if self.source is not None:
            _write_stamped(self.copies[slot] / self.module, self.source)

    def close(self) -> None:
        for repo in self.copies:
            shutil.rmtree(repo, ignore_errors=True)


def _wait(pids: dict[int, tuple], timeout: float) -> tuple[int, bool]:
    """Wait for one of ``pids`` (pid -> (slot, started, ...)); returns (pid, passed). A run past
    ``timeout`` is killed and counts as failing."""
    while True:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            return pid, os.waitstatus_to_exitcode(status) == 0
        now = time.monotonic()
        for pid, info in pids.items():
            if now - info[1] > timeout:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        time.sleep(0.05)


def generated_source(family: str) -> str:
    """The Numba source generated for a built-in family, as this checkout generates it."""
    code = ("import sys; from spikelab.kernels import families, generated; "
            f"key = generated.register(families.GENERATED[{family!r}]()); sys.stdout.write(generated.source(key, 'numba'))")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", nargs="?", help="the file to mutate, relative to the repository root")
    parser.add_argument("tests", nargs="+", help="test files or node ids that cover it")
    parser.add_argument("--generated", metavar="FAMILY", help="mutate this built-in family's generated Numba kernels")
    parser.add_argument("--functions", help="comma-separated top-level functions or classes to mutate (default: all)")
    parser.add_argument("--only", help="comma-separated line numbers to mutate (default: all)")
    parser.add_argument("--replace", nargs=2, metavar=("OLD", "NEW"), help="one planted bug: replace OLD by NEW")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (one scratch copy each)")
    parser.add_argument("--timeout", type=float, help="seconds per test run; a run past it counts as killed "
                        "(default: 3 times the unmutated run, at least 60)")
    parser.add_argument("--jit", choices=("on", "off"), help="compile Numba code (default: off with --generated, "
                        "where a mutant would take a minute to compile; the same source then runs in Python)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.generated:
        args.tests = [args.module, *args.tests] if args.module else args.tests
        args.module = f"<generated {args.generated} kernels>"
        source = generated_source(args.generated)
    elif args.module:
        source = (ROOT / args.module).read_text()
    else:
        parser.error("name a module or --generated FAMILY")
    functions = frozenset(args.functions.split(",")) if args.functions else frozenset()
    if args.replace:
        every = [replaced(source, *args.replace, functions)]
    else:
        every = mutants(source, functions)
    if args.only:
        lines = {int(v) for v in args.only.split(",")}
        every = [(m, text) for m, text in every if m.line in lines]
    jobs = max(1, args.jobs)
    cache = Path(tempfile.mkdtemp(prefix="spikelab-mutate-cache-"))
    jit = (args.jit or ("off" if args.generated else "on")) == "on"
    _environment(cache, jobs, jit)
    _preload()
    runner = Runner(args.module, args.tests, jobs, source if args.generated else None)
    try:
        began = time.monotonic()
        for slot in range(jobs):  # the unmutated copies pass, and warm the kernel cache
            pid = runner.start(slot, None)
            _, passed = _wait({pid: (slot, began)}, args.timeout or 3600)
            if not passed:
                tail = (runner.copies[slot] / "mutate.log").read_text()[-3000:]
                print(f"{tail}\nthe tests fail on the unmutated copy: nothing to measure", file=sys.stderr)
                return 2
        timeout = args.timeout or max(60.0, 3 * (time.monotonic() - began) / jobs)
        survivors, queue, running, done, start = [], list(every), {}, 0, time.perf_counter()
        while queue or running:
            while queue and len(running) < jobs:
                slot = next(s for s in range(jobs) if s not in {v[0] for v in running.values()})
                mutant, text = queue.pop(0)
                running[runner.start(slot, text)] = (slot, time.monotonic(), mutant)
            pid, passed = _wait(running, timeout)
            slot, _, mutant = running.pop(pid)
            runner.restore(slot)
            done += 1
            if passed:
                survivors.append(mutant)
            print(f"[{done}/{len(every)}] line {mutant.line}: {mutant.change}: {'SURVIVED' if passed else 'killed'}",
                  flush=True)
        killed = len(every) - len(survivors)
        print(f"\n{args.module}: {killed}/{len(every)} mutants killed "
              f"({100 * killed / max(len(every), 1):.0f}%) in {time.perf_counter() - start:.0f} s")
        for m in sorted(survivors, key=lambda m: m.line):
            print(f"  survived: line {m.line}: {m.change}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "module": args.module, "functions": sorted(functions), "tests": args.tests, "mutants": len(every),
                "killed": killed, "jit": jit, "survivors": [m.__dict__ for m in sorted(survivors, key=lambda m: m.line)]},
                indent=2))
        return 0
    finally:
        runner.close()
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
