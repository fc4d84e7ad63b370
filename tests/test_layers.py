"""The package's layers (docs/DESIGN.md): every import of every module, those inside functions
included, goes to a lower layer or to a sibling of the same layer, and no import cycle exists."""
import ast
import pathlib

import fastsoftmax

ROOT = pathlib.Path(fastsoftmax.__file__).parent

# rank of each module (prefix match, longest first); a module imports only lower ranks, or its
# own group's modules (same rank and same group), never in a cycle
LAYERS = {
    "fastsoftmax._version": (0, "leaf"),
    "fastsoftmax._policy": (0, "leaf"),
    "fastsoftmax._registry": (0, "leaf"),
    "fastsoftmax.backends": (0, "backends"),
    "fastsoftmax._canon": (1, "core"),
    "fastsoftmax._tables": (1, "core"),
    "fastsoftmax._dispatch": (2, "dispatch"),
    "fastsoftmax.ops": (3, "ops"),
    "fastsoftmax": (4, "top"),
    "fastsoftmax.dask": (4, "top"),
    "fastsoftmax._scipy_patch": (4, "top"),
    "fastsoftmax.tools": (5, "tools"),
    "fastsoftmax.__main__": (6, "main"),
}


def _modules():
    mods = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts = parts[:-1]
        mods[".".join(parts)] = (path, is_pkg)
    return mods


def _imports(name, path, is_pkg, mods):
    """The package modules ``name`` imports, with the line of each import."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                full = f"{base}.{alias.name}"
                target = full if full in mods else base
                if target in mods:
                    out.append((target, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in mods:
                    out.append((alias.name, node.lineno))
    return [(t, ln) for t, ln in out if t != name]


def _layer(name):
    best = None
    for prefix, layer in LAYERS.items():
        if name == prefix or name.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, layer)
    assert best is not None, f"{name} is in no layer: add it to LAYERS and docs/DESIGN.md"
    return best[1]


def _graph():
    mods = _modules()
    return {n: _imports(n, p, pkg, mods) for n, (p, pkg) in mods.items()}


def test_the_walker_sees_imports_inside_functions():
    graph = _graph()
    # fastsoftmax.tools.cli imports its commands' modules inside the functions that run them
    assert "fastsoftmax.tools.bench" in {t for t, _ in graph["fastsoftmax.tools.cli"]}
    assert "fastsoftmax._tables" in {t for t, _ in graph["fastsoftmax._dispatch"]}


def test_no_upward_import():
    bad = []
    for name, targets in _graph().items():
        rank, group = _layer(name)
        for target, line in targets:
            trank, tgroup = _layer(target)
            if trank > rank or (trank == rank and tgroup != group):
                bad.append(f"{name}:{line} imports {target} (layer {trank}/{tgroup} from "
                           f"{rank}/{group})")
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph = {n: {t for t, _ in ts} for n, ts in _graph().items()}
    state = {}

    def visit(n, stack):
        state[n] = "open"
        for t in graph[n]:
            if state.get(t) == "open":
                cycle = stack[stack.index(t):] + [t]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t, stack + [t])
        state[n] = "done"

    for n in graph:
        if n not in state:
            visit(n, [n])
