"""The package's shape: no import cycle (imports inside functions included), no module over 600 lines,
a ground floor that imports nothing of ours, and a command line that nothing imports."""

import ast
import os
import pkgutil

import sigma_jax

ROOT = os.path.dirname(sigma_jax.__file__)
GROUND_FLOOR = {"sigma_jax._checks", "sigma_jax._x64", "sigma_jax._io", "sigma_jax._linalg"}
TOP = {"sigma_jax.cli", "sigma_jax.cli_collapse"}


def _modules():
    mods = {"sigma_jax": os.path.join(ROOT, "__init__.py")}
    for info in pkgutil.walk_packages(sigma_jax.__path__, "sigma_jax."):
        rel = info.name.split(".")[1:]
        path = os.path.join(ROOT, *rel)
        mods[info.name] = os.path.join(path, "__init__.py") if info.ispkg else path + ".py"
    return mods


def _imports(name, path, modules):
    """Modules of ours that ``name`` imports anywhere in its source (module level or inside functions)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    pkg = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
    return out


def _graph():
    mods = _modules()
    graph = {n: _imports(n, p, mods) for n, p in mods.items()}
    # the package facade re-exports on purpose and loads topic modules lazily by name; importing a
    # submodule executes its parents first, which is not an edge of ours
    graph["sigma_jax"] = set()
    return graph, mods


def _cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
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

    for v in graph:
        if v not in index:
            strong(v)
    return out


def test_no_import_cycle():
    graph, _ = _graph()
    assert _cycles(graph) == []


def test_cycle_detector_finds_a_planted_cycle():
    graph, _ = _graph()
    graph = {k: set(v) for k, v in graph.items()}
    graph["sigma_jax.report"].add("sigma_jax.core")   # core imports report: a cycle
    assert any("sigma_jax.core" in c and "sigma_jax.report" in c for c in _cycles(graph))


def test_no_module_over_600_lines():
    _, mods = _graph()
    long = {n: sum(1 for _ in open(p, encoding="utf-8")) for n, p in mods.items()}
    assert {n: k for n, k in long.items() if k > 600} == {}


def test_ground_floor_imports_only_the_ground_floor_and_nothing_imports_the_cli():
    graph, _ = _graph()
    for mod in GROUND_FLOOR:
        assert graph[mod] <= GROUND_FLOOR, (mod, graph[mod])
    for mod, deps in graph.items():
        if mod not in TOP:
            assert not deps & TOP, (mod, deps & TOP)
