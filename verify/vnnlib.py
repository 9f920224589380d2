"""Parser for VNN-LIB property files (the VNN-COMP subset of SMT-LIB).

Supported: ``(declare-const X_i Real)`` / ``(declare-const Y_j Real)``, ``(assert F)`` where F
is built from ``and``, ``or`` and linear atoms ``(<= a b)``, ``(>= a b)``, ``(< a b)``,
``(> a b)`` over ``+``, ``-``, ``*`` (by a constant) and numbers. Strict inequalities are read
as non-strict (this only enlarges the violation set, so ``holds`` stays sound). A malformed
file raises :class:`VnnlibError` with the line number.
"""
from __future__ import annotations

import gzip
import itertools
import re
from pathlib import Path

import numpy as np

from .spec import Property, Term


class VnnlibError(ValueError):
    """A malformed or unsupported VNN-LIB file (message names file and line)."""


_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _tokenize(text: str) -> list[tuple[str, int]]:
    toks = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.split(";", 1)[0]
        toks.extend((m.group(0), lineno) for m in _TOKEN.finditer(line))
    return toks


def _parse_sexprs(toks: list[tuple[str, int]], where: str) -> list:
    """Nested lists of ``(token, line)``; each list is ``("(", line, [items])``."""
    stack: list[tuple[int, list]] = []
    top: list = []
    for tok, line in toks:
        if tok == "(":
            stack.append((line, []))
        elif tok == ")":
            if not stack:
                raise VnnlibError(f"{where}:{line}: unbalanced ')'")
            start, items = stack.pop()
            node = ("list", start, items)
            (stack[-1][1] if stack else top).append(node)
        else:
            (stack[-1][1] if stack else top).append(("atom", line, tok))
    if stack:
        raise VnnlibError(f"{where}:{stack[-1][0]}: '(' is never closed")
    return top


class _Parser:
    def __init__(self, where: str):
        self.where = where
        self.vars: dict[str, tuple[str, int]] = {}

    def err(self, line: int, msg: str) -> VnnlibError:
        return VnnlibError(f"{self.where}:{line}: {msg}")

    def linear(self, node) -> tuple[dict, float]:
        """A linear expression as ({var: coef}, const)."""
        kind, line, val = node
        if kind == "atom":
            if val in self.vars:
                return {val: 1.0}, 0.0
            try:
                return {}, float(val)
            except ValueError:
                raise self.err(line, f"unknown symbol '{val}' (declare it with declare-const)") from None
        if not val or val[0][0] != "atom":
            raise self.err(line, "expected an operator")
        op, args = val[0][2], [self.linear(a) for a in val[1:]]
        if op == "+":
            return self._sum(args, [1.0] * len(args))
        if op == "-":
            if len(args) == 1:
                return self._sum(args, [-1.0])
            return self._sum(args, [1.0] + [-1.0] * (len(args) - 1))
        if op == "*":
            coefs, const = {}, 1.0
            nonconst = [a for a in args if a[0]]
            if len(nonconst) > 1:
                raise self.err(line, "product of two variables is not linear")
            for a in args:
                if not a[0]:
                    const *= a[1]
            if not nonconst:
                return {}, const
            return {k: v * const for k, v in nonconst[0][0].items()}, nonconst[0][1] * const
        raise self.err(line, f"unsupported operator '{op}' in an arithmetic expression")

    @staticmethod
    def _sum(args, signs) -> tuple[dict, float]:
        coefs: dict = {}
        const = 0.0
        for (c, k), s in zip(args, signs):
            for v, w in c.items():
                coefs[v] = coefs.get(v, 0.0) + s * w
            const += s * k
        return coefs, const

    def formula(self, node) -> list[list[tuple[dict, float, int]]]:
        """DNF: a list of conjunctions of atoms ``sum coef*var <= bound`` (with line)."""
        kind, line, val = node
        if kind != "list" or not val or val[0][0] != "atom":
            raise self.err(line, "expected a formula like (<= X_0 1.0), (and ...) or (or ...)")
        op, args = val[0][2], val[1:]
        if op == "and":
            out = [[]]
            for a in args:
                out = [c1 + c2 for c1, c2 in itertools.product(out, self.formula(a))]
            return out
        if op == "or":
            return [c for a in args for c in self.formula(a)]
        if op in ("<=", ">=", "<", ">"):
            if len(args) != 2:
                raise self.err(line, f"'{op}' takes 2 arguments, got {len(args)}")
            (ca, ka), (cb, kb) = self.linear(args[0]), self.linear(args[1])
            if op in ("<=", "<"):
                coefs, bound = self._sum([(ca, ka), (cb, kb)], [1.0, -1.0])
            else:
                coefs, bound = self._sum([(cb, kb), (ca, ka)], [1.0, -1.0])
            return [[(coefs, -bound, line)]]
        raise self.err(line, f"unsupported operator '{op}' in a formula")


def parse_vnnlib(text: str, where: str = "<string>") -> Property:
    """Parse VNN-LIB text into a :class:`Property`."""
    p = _Parser(where)
    conj: list[list] = [[]]
    for kind, line, val in _parse_sexprs(_tokenize(text), where):
        if kind != "list" or not val or val[0][0] != "atom":
            raise p.err(line, "expected (declare-const ...) or (assert ...)")
        head = val[0][2]
        if head == "declare-const":
            if len(val) != 3 or val[1][0] != "atom" or val[2][0] != "atom":
                raise p.err(line, "declare-const needs a name and a sort")
            name, sort = val[1][2], val[2][2]
            m = re.fullmatch(r"([XY])_(\d+)", name)
            if not m:
                raise p.err(line, f"variable '{name}' must be named X_i (input) or Y_j (output)")
            if sort != "Real":
                raise p.err(line, f"variable '{name}' has sort '{sort}', only Real is supported")
            p.vars[name] = (m.group(1), int(m.group(2)))
        elif head == "assert":
            if len(val) != 2:
                raise p.err(line, "assert takes one formula")
            conj = [c1 + c2 for c1, c2 in itertools.product(conj, p.formula(val[1]))]
        else:
            raise p.err(line, f"unsupported command '{head}'")
    n_in = 1 + max([i for k, i in p.vars.values() if k == "X"], default=-1)
    n_out = 1 + max([i for k, i in p.vars.values() if k == "Y"], default=-1)
    if n_in == 0 or n_out == 0:
        raise VnnlibError(f"{where}:1: no X_i or no Y_j variables declared")
    boxes: dict[tuple, Term] = {}
    for atoms in conj:
        lo, hi = np.full(n_in, -np.inf), np.full(n_in, np.inf)
        rows, rhs = [], []
        for coefs, bound, line in atoms:
            coefs = {v: c for v, c in coefs.items() if c != 0.0}
            kinds = {p.vars[v][0] for v in coefs}
            if kinds == {"X"}:
                if len(coefs) != 1:
                    raise p.err(line, "input constraints must bound one variable (X_i <= c); linear input "
                                      "constraints are not supported")
                (v, c), = coefs.items()
                i = p.vars[v][1]
                if c > 0:
                    hi[i] = min(hi[i], bound / c)
                else:
                    lo[i] = max(lo[i], bound / c)
            elif kinds == {"Y"}:
                row = np.zeros(n_out)
                for v, c in coefs.items():
                    row[p.vars[v][1]] += c
                rows.append(row)
                rhs.append(bound)
            elif not kinds:
                if not 0.0 <= bound:
                    rows, rhs = None, None  # "0 <= negative" makes this conjunction false
                    break
            else:
                raise p.err(line, "constraints mixing inputs X and outputs Y are not supported")
        if rows is None:
            continue
        bad = np.where(~np.isfinite(lo) | ~np.isfinite(hi))[0]
        if bad.size:
            raise VnnlibError(f"{where}: input X_{bad[0]} has no finite lower and upper bound")
        if np.any(lo > hi):
            continue  # an empty box cannot produce a counterexample
        if not rows:
            raise VnnlibError(f"{where}: a disjunct has no output constraint (every input would violate it)")
        key = (lo.tobytes(), hi.tobytes())
        boxes.setdefault(key, Term(lo, hi, [])).groups.append((np.array(rows), np.array(rhs)))
    return Property(list(boxes.values()), Path(where).stem)


def load_vnnlib(path: str | Path) -> Property:
    """Read a ``.vnnlib`` (or ``.vnnlib.gz``) file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"VNN-LIB file not found: {path}")
    raw = gzip.open(path, "rt").read() if path.suffix == ".gz" else path.read_text()
    prop = parse_vnnlib(raw, str(path))
    prop.name = path.name.split(".")[0]
    return prop
