"""The package's layers import downward only, and no module imports itself through others.

Every import of the package's own modules is read from the source (at module level, inside
functions and under ``TYPE_CHECKING`` alike), so a cycle cannot hide behind a late import.
The layers, lowest first:

    core        pure values and rules: no Twisted, Autobahn, txredisapi, treq, zope
    interfaces  the zope interfaces the parts meet at
    services    the parts that keep state over time (Deferreds, timers, services)
    adapters    the network and the libraries that carry it
    wiring      the top-level modules that compose the rest (gateway, service, ...)
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "exchange_stream"
LAYERS = ("core", "interfaces", "services", "adapters", "wiring")
NOT_IN_CORE = ("twisted", "autobahn", "txredisapi", "treq", "zope", "prometheus_client", "txaio")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself: its version, nothing else
        return "core"
    if parts[1] in ("core", "interfaces", "services", "adapters"):
        return parts[1]
    return "wiring"


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The package's modules that ``path`` imports (``from package import module`` too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def graph() -> dict[str, set[str]]:
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {name: imports_of(path, modules) - {name} for name, path in paths.items()}


def external_imports(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_every_import_goes_to_the_same_layer_or_one_below():
    upward = [
        f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
        for module, targets in graph().items()
        for target in targets
        if LAYERS.index(layer_of(target)) > LAYERS.index(layer_of(module))
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles():
    """Tarjan's strongly connected components: any component of two or more is a cycle."""
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in edges:
        if module not in index:
            visit(module)
    assert not cycles, cycles


def test_the_core_uses_no_network_library():
    impure = {
        module_name(path): sorted(external_imports(path) & set(NOT_IN_CORE))
        for path in (PACKAGE / "core").rglob("*.py")
    }
    assert not {module: names for module, names in impure.items() if names}


def test_late_and_type_checking_imports_count(tmp_path):
    """An import under ``TYPE_CHECKING`` or inside a function is an edge like any other."""
    source = tmp_path / "example.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from exchange_stream.gateway import Gateway\n"
        "def later():\n"
        "    from exchange_stream.core import wire\n"
    )
    modules = {"exchange_stream.gateway", "exchange_stream.core", "exchange_stream.core.wire"}
    assert imports_of(source, modules) == modules


def test_the_architecture_drawing_names_every_module():
    """docs/architecture.md draws each layer with its modules: a module added without being
    drawn there fails this (market/ modules by their stem, as the drawing lists them)."""
    drawing = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    missing = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__init__.py":
            continue
        name = path.stem if path.parent.name == "market" else path.name
        if name not in drawing:
            missing.append(str(path.relative_to(PACKAGE)))
    assert not missing, f"not in docs/architecture.md: {missing}"
