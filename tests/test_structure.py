"""Package structure: the import graph of ``src/peftlab`` has no cycles, and the public API is explicit.

The graph is read with ``ast`` (nothing is imported): one node per module (a package is its ``__init__.py``), one
edge per ``import``/``from ... import`` statement that runs when the module is imported, relative imports
resolved. An edge goes to the module an import names: ``from .tuners.lora import LoraConfig`` -> ``tuners.lora``,
``from . import io`` -> ``io`` (a sub-module), ``from . import x`` -> the package itself when ``x`` is not a
module. Parent packages that Python also initialises are not edges (else every module would "import" the package
root, which imports them all), nor are ``importlib.import_module`` calls (``peftlab.tuners`` finds its method
folders that way).
"""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "peftlab"

Graph = dict[str, dict[str, int]]  # module -> {imported module: line of the first such import}


# --- the graph ------------------------------------------------------------------------------------------------
def _modules(src: Path, package: str) -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (file, is a package)."""
    found = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(statements: list[ast.stmt], in_functions: bool) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported: module level, inside if/try/with/for and class
    bodies; not under ``if TYPE_CHECKING:`` (its ``else`` runs); inside functions only if ``in_functions``."""
    found: list[ast.Import | ast.ImportFrom] = []
    for node in statements:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if in_functions:
                found += _imports(node.body, in_functions)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            found += _imports(node.orelse, in_functions)
        else:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    found += _imports([child], in_functions)
                elif isinstance(child, (ast.excepthandler, ast.match_case)):
                    found += _imports(child.body, in_functions)
    return found


def _known(name: str, modules: dict) -> str | None:
    """``name`` or its nearest enclosing module that is part of the package (None: outside it)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(src: Path = SRC, package: str = PACKAGE, in_functions: bool = False) -> Graph:
    modules = _modules(src, package)
    graph: Graph = {name: {} for name in modules}
    for name, (path, is_package) in modules.items():
        here = name if is_package else name.rpartition(".")[0]  # the package relative imports start from
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), str(path)).body, in_functions):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            for target in targets:
                target = _known(target, modules)
                if target is not None and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One import cycle as a closed path ``[a, b, ..., a]``, or None when the graph is acyclic."""
    done: set[str] = set()
    for root in sorted(graph):
        if root in done:
            continue
        path, on_path = [root], {root}
        stack = [iter(sorted(graph[root]))]
        while stack:
            child = next(stack[-1], None)
            if child is None:
                stack.pop()
                done.add(path[-1])
                on_path.discard(path.pop())
            elif child in on_path:
                return path[path.index(child):] + [child]
            elif child not in done:
                path.append(child)
                on_path.add(child)
                stack.append(iter(sorted(graph[child])))
    return None


def describe_cycle(graph: Graph, cycle: list[str]) -> str:
    steps = [f"{a} (line {graph[a][b]}) -> {b}" for a, b in zip(cycle, cycle[1:])]
    return "import cycle:\n  " + "\n  ".join(steps)


# --- the checks -----------------------------------------------------------------------------------------------
def test_module_level_import_graph_is_acyclic():
    graph = import_graph()
    assert len(graph) > 50 and "peftlab.tuners.lora.model" in graph["peftlab.tuners.lora"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(graph, cycle)


def test_no_function_level_import_hides_a_cycle():
    """An import moved into a function to dodge a cycle (how config <-> registry <-> tuners and Solo's homotopy <->
    model used to work) still is one: move the shared piece into a module both can import instead. Imports inside
    functions that only defer a slow module are fine."""
    graph = import_graph(in_functions=True)
    cycle = find_cycle(graph)
    assert cycle is None, describe_cycle(graph, cycle)


def test_no_module_imports_the_package_root():
    """``peftlab/__init__.py`` is the public facade and imports nearly everything; a module inside the package
    imports what it needs from where it is defined (``__version__`` from ``peftlab._version``)."""
    graph = import_graph(in_functions=True)
    offenders = sorted(f"{name} (line {edges[PACKAGE]})" for name, edges in graph.items() if PACKAGE in edges)
    assert not offenders, f"these modules import from the package root {PACKAGE!r}: {offenders}"


def _write_package(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_check_finds_cycles(tmp_path):
    """The checker itself: a relative cycle through a sub-package is found, imports under TYPE_CHECKING and in
    functions are not module level, and class bodies / try blocks are."""
    _write_package(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": """
            from typing import TYPE_CHECKING
            from .sub import b
            if TYPE_CHECKING:
                from . import c
            def f():
                from . import d
            """,
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": """
            class K:
                try:
                    from ..c import thing
                except ImportError:
                    pass
            """,
        "pkg/c.py": "import pkg.a\nthing = 1\n",
        "pkg/d.py": "from pkg import a\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.sub.b": 3}
    assert graph["pkg.sub.b"] == {"pkg.c": 4}
    cycle = find_cycle(graph)
    assert cycle == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"], cycle
    assert "pkg.c (line 1) -> pkg.a" in describe_cycle(graph, cycle)
    (tmp_path / "pkg" / "c.py").write_text("thing = 1\n", encoding="utf-8")  # break it: acyclic at module level
    assert find_cycle(import_graph(tmp_path, "pkg")) is None
    lazy = import_graph(tmp_path, "pkg", in_functions=True)  # ... but a.f -> d -> a is one through a function
    assert find_cycle(lazy) == ["pkg.a", "pkg.d", "pkg.a"]


# --- the public API (peftlab is imported only here: the graph checks above must report a cycle, not fail on it) --
def _builtin_config_names() -> list[str]:
    """Config class names of the methods peftlab ships (other tests register methods of their own)."""
    from peftlab.registry import registered_methods

    names = [e.config_cls.__name__ for e in registered_methods() if e.config_cls.__module__.startswith("peftlab.")]
    assert len(names) >= 8, names
    return names


def test_every_registered_config_class_is_exported_by_name():
    import peftlab

    names = _builtin_config_names()
    missing = [name for name in names if getattr(peftlab, name, None) is not getattr(peftlab.tuners, name)]
    assert not missing, f"add these to the imports of peftlab/__init__.py: {missing}"
    unlisted = [name for name in names if name not in peftlab.__all__]
    assert not unlisted, f"add these to peftlab.__all__: {unlisted}"


def test_the_public_api_is_explicit():
    """``peftlab/__init__.py`` names what it exports (no ``import *``), and ``__all__`` lists only real names."""
    import peftlab

    tree = ast.parse((SRC / PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    stars = [node.lineno for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names)]
    assert not stars, f"peftlab/__init__.py: star import at line(s) {stars}"
    assert len(set(peftlab.__all__)) == len(peftlab.__all__)
    assert [name for name in peftlab.__all__ if not hasattr(peftlab, name)] == []
    for name in ("__version__", "get_peft_model", "PeftModel", "PeftConfig", "LoraConfig", "SoloConnectionConfig"):
        assert name in peftlab.__all__


def test_a_low_level_module_imported_first_sees_every_method():
    """Imported first in a fresh interpreter, the registry still knows every built-in method (importing it runs
    ``peftlab/__init__``, which imports ``peftlab.tuners``): the registry needs no lazy loader of the methods."""
    code = ("import peftlab.registry as registry\nfrom peftlab.config import PeftConfig\n"
            "print(' '.join(registry.list_methods()))\n"
            "print(type(PeftConfig.from_dict({'peft_type': 'LORA'})).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    from peftlab.registry import registered_methods

    names, config_name = out.stdout.split("\n")[:2]
    builtin = {e.peft_type.upper() for e in registered_methods() if e.config_cls.__module__.startswith("peftlab.")}
    assert set(names.split()) == builtin
    assert config_name == "LoraConfig"
