#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a circle.

Usage: scripts/check-module-cycles.py CRATE_SRC_DIR...   (e.g. node/src shared/src)
       scripts/check-module-cycles.py --self-test          (it finds a circle it is shown)

Each source file is a module (`lib.rs` is the crate root, `foo/mod.rs` is `foo`). Module
A depends on module B when A's code names an item that B defines: through `use`, or a
path written inline (`crate::store::Store`, `super::Foo`, `journal::commit`). A path
through a re-export (`pub use`) counts as a use of the module that defines the item, and
a re-export is not a use by itself, so a folder's `mod.rs` may list its children's items.
The crate root is left out: it only declares modules and re-exports. Test-only code
(`#[cfg(test)]` modules, and the crate's `testing` module) is left out too: tests may
reach across the layers they test.

Every circle is printed as a path of modules with the file and line of each step, and
the script exits 1. Python 3 standard library only, so CI needs nothing installed.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ITEM_DEF = re.compile(
    r"\b(?:fn|struct|enum|trait|type|const|static|union|mod)\s+(?:r#)?([A-Za-z_]\w*)"
    r"|\bmacro_rules!\s*([A-Za-z_]\w*)"
)
USE_DECL = re.compile(r"\b(pub(?:\s*\([^)]*\))?\s+)?use\s+([^;]+);")
INLINE_PATH = re.compile(r"(?<![\w:])((?:[A-Za-z_]\w*)(?:\s*::\s*(?:[A-Za-z_]\w*|\*))+)")
TEST_ONLY = {"testing"}


def strip_code(text: str) -> str:
    """Blanks comments, strings and char literals, keeping line numbers."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append("\n" * text.count("\n", i, j))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and not re.match(r"\w", text[i - 1:i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append('""' + "\n" * text.count("\n", i, end))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""' + "\n" * text.count("\n", i, j))
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.|\\u\{[0-9a-fA-F]+\}|[^\\'])'", text[i:])
            if m:
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_test_modules(code: str) -> str:
    """Blanks `#[cfg(test)] mod name { ... }` blocks, keeping line numbers."""
    pattern = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+\w+\s*\{")
    while True:
        m = pattern.search(code)
        if not m:
            return code
        depth, j = 1, m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), j) + code[j:]


def expand_use_tree(tree: str) -> list[tuple[list[str], str | None]]:
    """`a::{b, c::d as e, self}` → [(['a','b'], None), (['a','c','d'], 'e'), (['a'], None)]."""
    tree = re.sub(r"\s*(::|[{},])\s*", r"\1", re.sub(r"\s+", " ", tree.strip()))

    def split_top(s: str) -> list[str]:
        parts, depth, cur = [], 0, ""
        for ch in s:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += ch == "{"
            depth -= ch == "}"
            cur += ch
        if cur:
            parts.append(cur)
        return parts

    def walk(prefix: list[str], s: str) -> list[tuple[list[str], str | None]]:
        if s.startswith("::"):
            s = s[2:]
        brace = s.find("{")
        if brace >= 0 and s.endswith("}"):
            head = [p for p in s[:brace].split("::") if p]
            result = []
            for part in split_top(s[brace + 1:-1]):
                result += walk(prefix + head, part)
            return result
        alias = None
        if " as " in s:
            s, alias = s.split(" as ", 1)
        segs = [p for p in s.split("::") if p]
        if segs and segs[-1] == "self":
            segs = segs[:-1]
        return [(prefix + segs, alias)]

    return walk([], tree)


class Module:
    def __init__(self, path: tuple[str, ...], file: Path):
        self.path = path
        self.file = file
        raw = file.read_text()
        self.code = drop_test_modules(strip_code(raw))
        self.children: set[str] = set()
        self.defines: set[str] = set()
        self.reexports: dict[str, list[str]] = {}  # name -> absolute-ish path segments
        self.globs: list[list[str]] = []
        self.aliases: dict[str, list[str]] = {}  # a `use`d name -> its path
        self.uses: list[tuple[list[str], int]] = []  # paths named, with their line

    def line_of(self, offset: int) -> int:
        return self.code.count("\n", 0, offset) + 1


def module_path_of(src: Path, file: Path) -> tuple[str, ...] | None:
    rel = file.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts and parts[0] == "bin":
        return None  # binaries are crates of their own
    if parts in (["lib"], ["main"]):
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def load_crate(src: Path) -> dict[tuple[str, ...], Module]:
    modules = {}
    for file in sorted(src.rglob("*.rs")):
        if file.name == "main.rs" and (src / "lib.rs").exists():
            continue
        path = module_path_of(src, file)
        if path is None or any(p in TEST_ONLY for p in path):
            continue
        modules[path] = Module(path, file)
    for path, module in modules.items():
        if path:
            parent = modules.get(path[:-1])
            if parent:
                parent.children.add(path[-1])
        for m in ITEM_DEF.finditer(module.code):
            module.defines.add(m.group(1) or m.group(2))
    return modules


def absolute(module: Module, segs: list[str], modules) -> list[str] | None:
    """Makes a path absolute (starting at the crate root), or None if it is external."""
    if not segs:
        return None
    here = list(module.path)
    first = segs[0]
    if first == "crate":
        return segs[1:]
    if first in ("self", "super"):
        i = 0
        while i < len(segs) and segs[i] in ("self", "super"):
            if segs[i] == "super":
                if not here:
                    return None
                here = here[:-1]
            i += 1
        return here + segs[i:]
    if first in module.children:
        return here + segs
    if first in module.aliases:
        return module.aliases[first] + segs[1:]
    return None


def scan(modules) -> None:
    for module in modules.values():
        use_spans = []
        for m in USE_DECL.finditer(module.code):
            use_spans.append((m.start(), m.end()))
            public = bool(m.group(1)) and "super" not in (m.group(1) or "")
            line = module.line_of(m.start())
            for segs, alias in expand_use_tree(m.group(2)):
                if not segs:
                    continue
                path = absolute(module, segs, modules)
                if path is None:
                    continue
                if segs[-1] == "*":
                    if public:
                        module.globs.append(path[:-1])
                    else:
                        module.uses.append((path[:-1] + ["*"], line))
                    continue
                name = alias or segs[-1]
                module.aliases[name] = path
                if public:
                    module.reexports[name] = path
                else:
                    module.uses.append((path, line))
        code = module.code
        for start, end in use_spans:
            code = code[:start] + " " * (end - start) + code[end:]
        for m in INLINE_PATH.finditer(code):
            segs = [s.strip() for s in m.group(1).split("::")]
            path = absolute(module, segs, modules)
            if path is not None:
                module.uses.append((path, module.line_of(m.start())))


def resolve(modules, path: list[str], depth: int = 0) -> tuple[str, ...] | None:
    """The module that defines what `path` names (following re-exports)."""
    if depth > 20:
        return None
    current: tuple[str, ...] = ()
    for i, seg in enumerate(path):
        module = modules.get(current)
        if module is None:
            return current
        if seg == "*":
            return current
        if seg in module.children and (current + (seg,)) in modules:
            current = current + (seg,)
            continue
        if seg in module.reexports:
            target = module.reexports[seg] + path[i + 1:]
            return resolve(modules, target, depth + 1)
        if seg in module.defines:
            return current
        for glob in module.globs:
            found = resolve(modules, glob + [seg] + path[i + 1:], depth + 1)
            if found is not None and found != current:
                return found
        return current
    return current


def edges_of(modules):
    edges: dict[tuple[str, ...], dict[tuple[str, ...], tuple[Path, int]]] = {}
    for module in modules.values():
        if module.path == ():
            continue
        for path, line in module.uses:
            target = resolve(modules, path)
            if target is None or target == () or target == module.path:
                continue
            edges.setdefault(module.path, {}).setdefault(target, (module.file, line))
    return edges


def cycles(edges) -> list[list[tuple[str, ...]]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    nodes = set(edges) | {t for ts in edges.values() for t in ts}

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(nodes):
        if v not in index:
            strong(v)
    return out


def one_circle(edges, comp) -> list[tuple[str, ...]]:
    """A shortest circle through the component's first module."""
    members = set(comp)
    start = comp[0]
    frontier, seen = [[start]], {start}
    while frontier:
        nxt = []
        for route in frontier:
            for w in sorted(edges.get(route[-1], {})):
                if w == start:
                    return route + [start]
                if w in members and w not in seen:
                    seen.add(w)
                    nxt.append(route + [w])
        frontier = nxt
    return [start]


def name(path: tuple[str, ...]) -> str:
    return "::".join(path) or "crate"


def self_test() -> int:
    """Builds two small crates, one with a circle (through a re-export and an inline
    path) and one without, and checks the verdict on each."""
    import tempfile

    files = {
        "lib.rs": "mod a;\nmod b;\nmod c;\n",
        "a.rs": "use crate::b::Thing;\npub(crate) struct A;\n",
        "b/mod.rs": "mod inner;\npub(crate) use inner::Thing;\n",
        "b/inner.rs": "pub(crate) struct Thing;\nfn f() { let _ = crate::c::g(); }\n",
        "c.rs": "// crate::a::A in a comment is no use\n#[cfg(test)]\nmod tests { use crate::b::Thing; }\n"
                "pub(crate) fn g() -> super::a::A { crate::a::A }\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            path = Path(tmp, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        modules = load_crate(Path(tmp))
        scan(modules)
        found = cycles(edges_of(modules))
        expected = [[("a",), ("b", "inner"), ("c",)]]
        if found != expected:
            print(f"self-test: expected the circle {expected}, found {found}")
            return 1
        Path(tmp, "c.rs").write_text("pub(crate) fn g() {}\n")
        modules = load_crate(Path(tmp))
        scan(modules)
        found = cycles(edges_of(modules))
        if found:
            print(f"self-test: expected no circle, found {found}")
            return 1
    print("self-test: a circle is found, and none where there is none")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    failed = False
    for src in map(Path, argv[1:]):
        modules = load_crate(src)
        scan(modules)
        edges = edges_of(modules)
        found = cycles(edges)
        count = sum(len(v) for v in edges.values())
        if not found:
            print(f"{src}: {len(modules)} modules, {count} dependencies, no circle")
            continue
        failed = True
        print(f"{src}: {len(found)} circle(s) between modules:")
        for comp in found:
            print(f"  {{{', '.join(name(c) for c in comp)}}}")
            route = one_circle(edges, comp)
            for a, b in zip(route, route[1:]):
                file, line = edges[a][b]
                print(f"    {name(a)} -> {name(b)}   ({file}:{line})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
