"""The package's modules import each other without a cycle, and the layers stay apart.

The graph is read statically with ``ast``: every import statement that can run counts,
including those inside functions, since a lazy import only hides a cycle (it still ties the
two modules to each other). Imports under ``if TYPE_CHECKING:`` never run and are left out.
``from package import name`` points at the submodule ``package.name`` when there is one,
else at the package.

Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those implicit edges are
left out. With them, any package whose ``__init__`` re-exports a submodule that imports a
sibling (``export/__init__`` -> ``export.onnx_export`` -> ``export.check``, which runs
``export/__init__`` first) would read as a cycle, though Python resolves it: the submodule
finishes before ``__init__`` goes on. An explicit ``from napari_kdseg.export import X`` in one
of ``export``'s own submodules is still an edge, and a real cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import napari_kdseg

PACKAGE = Path(napari_kdseg.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imported_names(name: str, path: Path, on_import: bool = False) -> Iterator[str]:
    """Dotted names ``name`` imports (modules, or ``module.attribute`` for a from-import);
    with ``on_import``, only those that run when the module is imported (not in functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in executed_nodes(ast.parse(path.read_text(), str(path)), on_import):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: climb from this module's package
                base = package.rsplit(".", node.level - 1)[0]
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            yield from (f"{base}.{alias.name}" for alias in node.names)


def executed_nodes(tree: ast.AST, on_import: bool = False) -> Iterator[ast.AST]:
    """Every node below ``tree`` except the bodies of ``if TYPE_CHECKING:`` blocks (and of
    functions, with ``on_import``)."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for node in child.orelse:
                yield node
                yield from executed_nodes(node, on_import)
            continue
        if on_import and isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield child
        yield from executed_nodes(child, on_import)


def import_graph(on_import: bool = False, outside: bool = False) -> dict[str, set[str]]:
    """Our modules' imports of our modules; with ``outside``, also the top-level names of
    the other packages they import (``keras``, ``qtpy``...)."""
    modules = module_names()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(name, path, on_import):
            if not imported.startswith("napari_kdseg"):
                if outside:
                    targets.add(imported.partition(".")[0])
                continue
            # the longest prefix that is one of our modules: module.attribute -> module
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(sorted(graph[start]))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if following in on_path:
                return [*path[path.index(following) :], following]
            if following not in done:
                path.append(following)
                on_path.add(following)
                stack.append(iter(sorted(graph[following])))
    return None


def test_the_graph_sees_every_kind_of_import() -> None:
    graph = import_graph()
    assert "napari_kdseg.core.atomic" in graph["napari_kdseg.card"]  # from a.b import name
    assert "napari_kdseg.inference.onnx_runtime" in graph["napari_kdseg.inference.loading"]
    assert "napari_kdseg.export.check" in graph["napari_kdseg.export"]  # __init__ re-export
    assert "napari_kdseg.training.config" not in graph["napari_kdseg.card"]  # TYPE_CHECKING
    assert "napari_kdseg.models.enet" in graph["napari_kdseg.models.registry"]  # a submodule
    assert "napari_kdseg.models" not in graph["napari_kdseg.models.registry"]


def test_find_cycle_reports_the_modules_in_order() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"b"}}) == ["b", "c", "b"]
    assert find_cycle({"a": {"b", "c"}, "b": {"d"}, "c": {"d"}, "d": set()}) is None


def test_modules_import_each_other_without_a_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


#: The napari glue: the only modules that may use Qt, and that run in the viewer's process.
NAPARI_GLUE = ("_widgets", "_reader", "_writer", "_sample_data", "_layers", "_preferences")
QT = {"qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari", "magicgui", "superqt", "vispy"}
BACKENDS = {"keras", "tensorflow", "tf2onnx", "jax", "torch"}


def _is_glue(name: str) -> bool:
    return name.split(".")[1] in NAPARI_GLUE if "." in name else False


def test_nothing_below_the_napari_glue_imports_qt() -> None:
    graph = import_graph(outside=True)
    using_qt = {name: sorted(graph[name] & QT) for name in graph if graph[name] & QT}
    assert {name for name in using_qt if not _is_glue(name)} == set(), using_qt


def test_the_viewer_process_imports_no_deep_learning_backend() -> None:
    """What napari imports (the glue, and everything that imports on its way) reaches no
    Keras, TensorFlow, JAX or PyTorch; a function may still import one when the user asks for
    it (a ``.keras`` file, say). The GUI tests also check ``sys.modules`` after every test."""
    graph = import_graph(on_import=True, outside=True)
    reached, queue = set(), [name for name in graph if _is_glue(name)]
    while queue:
        name = queue.pop()
        if name not in reached:
            reached.add(name)
            queue += [target for target in graph.get(name, ()) if target in graph]
    offenders = {name: sorted(graph[name] & BACKENDS) for name in reached if graph[name] & BACKENDS}
    assert offenders == {}, offenders
