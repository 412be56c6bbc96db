#!/usr/bin/env python3
"""The house rules on the shape of the code, checked in CI (ops/test.sh):

- no Rust source file over 500 lines;
- no import circle between the modules of a crate;
- tests/README.md has a row for every FR-xxx and SC-xxx of the specification, and
  every test it names (`path.rs` :: `name`) exists.

A module's imports are the `crate::a::b` and `super::` paths in its code (comments,
doc links included, do not count). An edge
a -> b is lifted to the children of the two modules' nearest common ancestor, so
`http::routes::system -> commands` counts as `http -> commands`; a module using its
own parent or child is not an edge. Function length is clippy's job
(`clippy::too_many_lines`, clippy.toml). Exits 1 with one line per finding.
"""

import re
import sys
from pathlib import Path

MAX_LINES = 500
CRATES = ["shared", "infra", "producer", "consumer", "engine", "tests", "ops/capacity"]
PATH = re.compile(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def module_of(src: Path, file: Path) -> tuple:
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def paths_in(code: str):
    """`(kind, segments)` of every `crate::`/`super::` path, brace groups included
    (`use crate::{a, b::c}` yields `a` and `b::c`)."""
    for kind, group in GROUP.findall(code):
        for item in re.findall(r"[a-z_][a-z0-9_]*(?:::[a-z_][a-z0-9_]*)*", group):
            yield kind, tuple(item.split("::"))
    for kind, tail in PATH.findall(code):
        yield kind, tuple(tail.split("::")[1:])


def edges(src: Path):
    files = sorted(p for p in src.rglob("*.rs") if "bin" not in p.relative_to(src).parts)
    modules = {module_of(src, f) for f in files}
    for f in files:
        here = module_of(src, f)
        code = "\n".join(line.split("//", 1)[0] for line in f.read_text().splitlines())
        for kind, segs in paths_in(code):
            target = segs if kind == "crate" else here[:-1] + segs
            # The longest prefix that is a module (the rest are items).
            while target and target not in modules:
                target = target[:-1]
            yield here, target


def lifted(a: tuple, b: tuple):
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    if k == len(a) or k == len(b):
        return None  # one contains the other
    return a[: k + 1], b[: k + 1]


def cycles(graph: dict):
    seen, stack, found = set(), [], []

    def visit(node):
        if node in stack:
            found.append(stack[stack.index(node):] + [node])
            return
        if node in seen:
            return
        seen.add(node)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            visit(nxt)
        stack.pop()

    for node in sorted(graph):
        visit(node)
    return found


REQUIREMENTS = [f"FR-{n:03}" for n in range(1, 21)] + ["FR-021a", "FR-021b", "FR-021c"]
CRITERIA = [f"SC-{n:03}" for n in range(1, 10)]


def index_problems(root: Path) -> list:
    index = root / "tests/README.md"
    if not index.is_file():
        return ["tests/README.md is missing"]
    text = index.read_text()
    found = []
    rows = {m.group(1) for m in re.finditer(r"^\| (FR-\d+[a-z]?|SC-\d+) \|", text, re.M)}
    found += [f"tests/README.md: no row for {i}" for i in REQUIREMENTS + CRITERIA if i not in rows]
    for path, name in re.findall(r"`([\w/.-]+\.rs)` :: `(\w+)`", text):
        if path == "file.rs":
            continue
        file = root / path
        if not file.is_file() or not re.search(rf"fn {name}\b", file.read_text()):
            found.append(f"tests/README.md: {path} :: {name} is not a test there")
    return found


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    problems = []
    for crate in CRATES:
        for file in sorted((root / crate).rglob("*.rs")):
            n = sum(1 for _ in file.open())
            if n > MAX_LINES:
                problems.append(f"{file.relative_to(root)}: {n} lines (limit {MAX_LINES})")
        src = root / crate / "src"
        graph = {}
        for a, b in edges(src):
            pair = lifted(a, b)
            if pair:
                graph.setdefault(pair[0], set()).add(pair[1])
        for cycle in cycles(graph):
            shown = " -> ".join("::".join(m) for m in cycle)
            problems.append(f"{crate}: import circle {shown}")
    problems += index_problems(root)
    for p in problems:
        print(f"check-structure: {p}")
    if not problems:
        print(
            f"check-structure: ok ({len(CRATES)} crates: files <= {MAX_LINES} lines, no import circles; "
            "tests/README.md covers every FR and SC with existing tests)"
        )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
