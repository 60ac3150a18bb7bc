"""Mutation testing: plant one small bug at a time in a module and check that the tests catch it.

    .venv/bin/python tools/mutate.py spikelab/data/datasets/dvsgesture.py tests/test_datasets.py [more tests]
        [--only LINE[,LINE]] [--timeout 300] [--json out.json]

The repository is copied once to a scratch folder (``.venv``, ``.git`` and build outputs left
out); each mutant is the module with one operator changed (``<`` to ``<=``, ``+`` to ``-``,
``and`` to ``or``, a number off by one, a sign or a ``not`` dropped, ...), written into the copy;
the named tests then run on the copy (``pytest -x``, with the real sample recordings and no
skips allowed: ``SPIKELAB_REQUIRE_SAMPLES=1``, ``SPIKELAB_REQUIRE_PEERS=1``). A mutant is *killed* when they fail (or
time out) and *survives* when they pass: a survivor is a bug the tests would miss, or an
equivalent change (then say why in the review). Messages of ``raise`` statements, docstrings
and strings are not mutated. The copy imports as ``spikelab`` ahead of the editable install
(``PYTHONPATH``), its ``kernels/`` folder linked in as ``spikelab.kernels``.

Prints each survivor (line, change) and the score; ``--json`` writes them for the record.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
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


def _skipped_nodes(tree: ast.AST) -> set[int]:
    """Nodes not to mutate: inside ``raise`` statements, warnings/log calls, and docstrings."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        quiet = isinstance(node, ast.Raise) or (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("warn", "debug", "info", "warning", "set_postfix", "write"))
        if quiet:
            skip.update(id(n) for n in ast.walk(node))
    return skip


def _sites(tree: ast.AST):
    """``(node, description, apply)`` for every mutation of ``tree``; ``apply`` edits in place."""
    skip = _skipped_nodes(tree)
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


def mutants(source: str) -> list[tuple[Mutant, str]]:
    """Every mutant of ``source``: its description and its text."""
    tree = ast.parse(source)
    out = []
    sites = list(_sites(tree))
    for index, (node, change, apply) in enumerate(sites):
        mutated = copy.deepcopy(tree)
        target = list(_sites(mutated))[index][0]
        if apply == "unwrap":
            parent = next(p for p in ast.walk(mutated) for c in ast.iter_child_nodes(p) if c is target)
            for field, value in ast.iter_fields(parent):
                if value is target:
                    setattr(parent, field, target.operand)
                elif isinstance(value, list):
                    value[:] = [target.operand if v is target else v for v in value]
        else:
            apply(target)
        out.append((Mutant(index, node.lineno, change), ast.unparse(ast.fix_missing_locations(mutated))))
    return out


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


def run_tests(repo: Path, tests: list[str], timeout: float) -> bool:
    """True when the tests pass on ``repo`` (the mutant survives)."""
    # the copy lives elsewhere: point it at the real sample recordings, and let no test skip
    samples = os.environ.get("SPIKELAB_SAMPLES", str(ROOT.parent / "shared" / "samples"))
    env = {**os.environ, "PYTHONPATH": str(repo), "PYTHONDONTWRITEBYTECODE": "1", "SPIKELAB_SAMPLES": samples,
           "SPIKELAB_REQUIRE_SAMPLES": "1", "SPIKELAB_REQUIRE_PEERS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=repo, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("module", help="the file to mutate, relative to the repository root")
    parser.add_argument("tests", nargs="+", help="test files or node ids that cover it")
    parser.add_argument("--only", help="comma-separated line numbers to mutate (default: all)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per test run (a timeout kills)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    source = (ROOT / args.module).read_text()
    every = mutants(source)
    if args.only:
        lines = {int(v) for v in args.only.split(",")}
        every = [(m, text) for m, text in every if m.line in lines]
    repo = scratch_copy()
    target = repo / args.module
    try:
        if not run_tests(repo, args.tests, args.timeout):
            print("the tests fail on the unmutated copy: nothing to measure", file=sys.stderr)
            return 2
        survivors, start = [], time.perf_counter()
        for i, (mutant, text) in enumerate(every, 1):
            target.write_text(text)
            survived = run_tests(repo, args.tests, args.timeout)
            target.write_text(source)
            if survived:
                survivors.append(mutant)
            print(f"[{i}/{len(every)}] line {mutant.line}: {mutant.change}: {'SURVIVED' if survived else 'killed'}",
                  flush=True)
        killed = len(every) - len(survivors)
        print(f"\n{args.module}: {killed}/{len(every)} mutants killed "
              f"({100 * killed / max(len(every), 1):.0f}%) in {time.perf_counter() - start:.0f} s")
        for m in survivors:
            print(f"  survived: line {m.line}: {m.change}")
        if args.json:
            Path(args.json).write_text(json.dumps({
                "module": args.module, "tests": args.tests, "mutants": len(every), "killed": killed,
                "survivors": [m.__dict__ for m in survivors]}, indent=2))
        return 0
    finally:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
