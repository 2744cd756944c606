"""The layers of docs/architecture.md, held: every import between modelreg's modules goes
down the drawing (or stays in its layer), no modules import each other in a cycle, and the
rules the drawing states hold.

Imports are read from the source (``ast``): function-local imports count like module-level
ones (moving an import into a function hides a cycle, it does not remove it); only imports
under ``if TYPE_CHECKING:`` are left aside, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"

#: The layers, lowest first, as docs/architecture.md draws them.  A module belongs to the
#: layer of the longest prefix that names it (a prefix names a module and what is inside it;
#: one ending in ``.__init__`` names only the package itself); it may import modules of its
#: own layer and of the layers below.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("modelreg.errors", "modelreg.types", "modelreg.keys", "modelreg.names",
                    "modelreg.paging", "modelreg.hookspecs", "modelreg.interfaces",
                    "modelreg.models", "modelreg.storage.errors", "modelreg.db",
                    "modelreg.version", "modelreg.settings", "modelreg.permissions")),
    ("infrastructure", ("modelreg.jobs", "modelreg.openapi", "modelreg.logs",
                        "modelreg.metrics", "modelreg.plugins", "modelreg.storage",
                        "modelreg.migrations", "modelreg.worker", "modelreg.security.http",
                        "modelreg.auditing")),
    ("domain", ("modelreg.policy", "modelreg.validation",
                "modelreg.registry", "modelreg.files", "modelreg.security",
                "modelreg.scanning")),
    ("web", ("modelreg.ops", "modelreg.registry.views", "modelreg.files.views",
             "modelreg.security.views", "modelreg.scanning.views",
             # the registry as plugin views see it (request.modelreg), on the services
             "modelreg.plugin_api",
             # the packages' includeme add the routes their views serve
             "modelreg.files.__init__", "modelreg.security.__init__")),
    ("assembly", ("modelreg", "modelreg.config", "modelreg.cli", "modelreg.asgi",
                  "modelreg.servers", "modelreg.limits", "modelreg.api", "modelreg.testing",
                  # the core's own plugins, written against modelreg.api as any plugin is
                  "modelreg.storage.local", "modelreg.validation.builtin")),
]
#: The view modules of the domain packages.
WEB_MODULES = ("modelreg.registry.views", "modelreg.files.views", "modelreg.security.views",
               "modelreg.scanning.views")
DOMAIN_PACKAGES = ("modelreg.registry", "modelreg.files", "modelreg.security",
                   "modelreg.scanning", "modelreg.policy", "modelreg.validation")
WEB = [name for name, _ in LAYERS].index("web")


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def layer_of(module: str) -> int:
    """The rank of ``module``'s layer in :data:`LAYERS`."""
    best, rank = "", -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            name = prefix.removesuffix(".__init__")
            exact = prefix.endswith(".__init__")
            if (module == name if exact else within(module, name)) and len(prefix) > len(best):
                best, rank = prefix, index
    if rank < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS and the drawing")
    return rank


def source_modules(root: Path = SRC) -> dict[str, Path]:
    """Every module of the package (Alembic's revision scripts aside) by dotted name."""
    found = {}
    for path in root.rglob("*.py"):
        if "versions" in path.parts:
            continue
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for stmt in node.body for inner in ast.walk(stmt))
    return skipped


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that module ``name`` imports (``from x import y`` counts
    as importing ``x.y`` when that is a module, else ``x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = _type_checking_nodes(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    return {m for m in found if m in modules and m != name}


def import_graph(root: Path = SRC) -> dict[str, set[str]]:
    modules = source_modules(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for succ in graph[todo.pop()]:
            if succ not in seen:
                seen.add(succ)
                todo.append(succ)
    return seen


def test_no_module_imports_in_a_cycle(graph):
    assert cycles(graph) == []


def test_imports_go_down_the_layers(graph):
    upward = [f"{name} ({LAYERS[layer_of(name)][0]}) imports {dep} "
              f"({LAYERS[layer_of(dep)][0]})"
              for name, deps in sorted(graph.items()) for dep in sorted(deps)
              if layer_of(dep) > layer_of(name)]
    assert upward == []


def test_the_job_runner_imports_no_domain_code(graph):
    domain = [(name, dep) for name, deps in graph.items() if within(name, "modelreg.worker")
              for dep in deps if any(within(dep, p) for p in DOMAIN_PACKAGES)]
    assert domain == []


def test_domain_packages_import_no_views(graph):
    views = [(name, dep) for name, deps in graph.items()
             if any(within(name, p) for p in DOMAIN_PACKAGES) and layer_of(name) < WEB
             for dep in deps if dep in WEB_MODULES or layer_of(dep) == WEB]
    assert views == []


def test_security_imports_nothing_of_the_registry_but_its_errors(graph):
    reaching = [(name, dep) for name, deps in graph.items() if within(name, "modelreg.security")
                for dep in deps
                if within(dep, "modelreg.registry") and dep != "modelreg.registry.errors"]
    assert reaching == []


def test_the_registrys_reads_import_none_of_its_writes(graph):
    """registry/queries.py reads, registry/commands.py writes on top of it, and
    registry/documents.py renders for both (docs/architecture.md, the registry's services)."""
    writes = {"modelreg.registry.commands", "modelreg.registry.services"}
    assert reachable(graph, "modelreg.registry.queries") & writes == set()
    assert reachable(graph, "modelreg.registry.documents") & {
        *writes, "modelreg.registry.queries"} == set()
    assert "modelreg.registry.queries" in graph["modelreg.registry.commands"]


def test_the_public_api_pulls_in_no_views(graph):
    # the facade plugin views use (modelreg.plugin_api) stands on the services, but nothing
    # a plugin imports loads a view module
    views = (*WEB_MODULES, "modelreg.ops")
    assert sorted(m for m in reachable(graph, "modelreg.api") if m in views) == []
    # and it imports only modules it re-exports names of
    tree = ast.parse((SRC / "modelreg" / "api.py").read_text(encoding="utf-8"))
    exported = set(ast.literal_eval(next(
        node.value for node in tree.body if isinstance(node, ast.Assign)
        and any(getattr(t, "id", None) == "__all__" for t in node.targets))))
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            names = {alias.asname or alias.name for alias in node.names}
            assert names & exported, f"modelreg.api imports {node.module} for nothing it exports"


def test_the_checks_catch_what_they_look_for(tmp_path):
    package = tmp_path / "modelreg"
    (package / "worker").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "worker" / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from . import b\n")
    (package / "b.py").write_text("from .a import f\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (package / "worker" / "run.py").write_text("from ..c import x\n")
    graph = import_graph(tmp_path)
    assert cycles(graph) == [["modelreg.a", "modelreg.b"]]  # the local import counts
    assert graph["modelreg.c"] == set()  # TYPE_CHECKING does not
    assert graph["modelreg.worker.run"] == {"modelreg.c"}


def drawing() -> dict[str, set[str]]:
    """The words of each layer in docs/architecture.md's drawing."""
    text = (SRC.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = text.split("## The layers", 1)[1].split("```", 2)[1]
    names = [name for name, _ in LAYERS]
    words: dict[str, set[str]] = {}
    current = None
    for line in block.splitlines():
        first = line.split()[0] if line.split() else ""
        if first in names:
            current = first
            line = line.replace(first, "", 1)
        if current and not line.strip().startswith("─"):
            words.setdefault(current, set()).update(
                line.replace("(", " ").replace(")", " ").replace(",", " ").split())
    return words


def test_the_drawing_in_docs_shows_the_layers_the_test_holds():
    drawn = drawing()
    assert list(drawn) == [name for name, _ in reversed(LAYERS)]  # top layer first
    missing = []
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            short = prefix.removeprefix("modelreg.").removesuffix(".__init__")
            last = short.rpartition(".")[2]
            if short not in drawn[name] and last not in drawn[name]:
                missing.append(f"{prefix} ({name})")
    assert missing == []
