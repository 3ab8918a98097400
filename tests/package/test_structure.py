"""The package's structure: no import cycle (every import counts, also those inside functions), a thin command line,
small modules."""

from __future__ import annotations

import ast
from pathlib import Path

import monai_siamese

PACKAGE = Path(monai_siamese.__file__).resolve().parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (top-level or inside functions), from the source."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t and t not in modules:
                    t = t.rpartition(".")[0]
                if t and t != name and t.startswith("monai_siamese"):
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
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

    for v in graph:
        if v not in index:
            visit(v)
    return out


def _is_package_edge(a: str, b: str) -> bool:
    # a package's __init__ imports (re-exports) its own modules: not a dependency of the code in them
    return b.startswith(a + ".")


def test_no_import_cycle():
    graph = import_graph()
    # package __init__ files import their own submodules; those edges (parent -> child) are not cycles of the code
    graph = {m: {t for t in ts if not _is_package_edge(m, t)} for m, ts in graph.items()}
    assert cycles(graph) == []


def test_cli_is_argument_parsing_only_and_modules_are_small():
    cli = (PACKAGE / "cli.py").read_text()
    assert len(cli.splitlines()) <= 150
    tree = ast.parse(cli)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    big = {
        str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 500
    }
    assert big == {}


def test_readme_bundle_commands_name_existing_stacked_configs():
    """Every ``--config_file`` list in the READMEs names files that exist, ``common.json`` first (stacked configs)."""
    import re

    repo = PACKAGE.parent
    readmes = [repo / "README.md", *sorted((repo / "bundles").glob("*/docs/README.md"))]
    found = 0
    for readme in readmes:
        for files in re.findall(r"--config_file \\?\s*\"(\[[^\]]*\])\"", readme.read_text()):
            paths = [p.strip().strip("'") for p in files.strip("[]").split(",")]
            assert paths[0].endswith("configs/common.json"), (readme, files)
            for p in paths:
                assert (repo / p).is_file(), (readme, p)
            found += 1
    assert found >= 20
