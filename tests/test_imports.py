"""The import structure of expgrid/, cluster/ and trainables/, read from the source with ``ast``.

Every ``import`` and ``from … import`` counts, also those inside functions (they run when the
function does) and under ``if TYPE_CHECKING:`` (checkers read them); each is resolved to the
module it names (``from expgrid import planning`` → ``expgrid.planning``; ``from expgrid.config
import flatten`` → ``expgrid.config``). The rules:

- no cycle among the project's modules;
- the core (``expgrid``) imports no ray, mlflow, torch, torchvision, IPython, trainables or cluster at
  module level (inside a function it may: where the driver calls out to Ray);
- no trial-side module reaches the driver side, directly or through other modules;
- no import names a project module that does not exist (a module moved, an importer left behind).

Module names that do not exist (yet) in a rule's lists are simply absent from it.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("expgrid", "cluster", "trainables")
HEAVY = ("ray", "mlflow", "torch", "torchvision", "IPython", "trainables", "cluster")  # not at the core's module level
# What runs in a trial process, and what only the driver runs (prefixes: a package covers its modules).
TRIAL_SIDE = ("expgrid.reporter", "expgrid.wire", "expgrid.stopping", "cluster.trial_side", "cluster.train_run",
              "trainables")  # fmt: skip
DRIVER_SIDE = ("expgrid.runner", "expgrid.cli", "expgrid.tracking", "expgrid.section_events", "expgrid.reports",
               "cluster.tune_section", "cluster.connect", "cluster.attach", "cluster.submit")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the module imported (a project module, or an outside package's top name)
    where: str  # file:line
    module_level: bool


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = project_modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve(name: str) -> str:
    """A project module's name as given; an outside module by its top package (torch.nn → torch)."""
    return name if name.split(".")[0] in PACKAGES else name.split(".")[0]


def _imports(module: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    found: list[Import] = []
    package = module if _is_package(module) else module.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            where = f"{path.relative_to(REPO)}:{getattr(child, 'lineno', 0)}"
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(Import(module, _resolve(alias.name), where, not in_function))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:  # relative: from the package, `level - 1` packages up
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                for alias in child.names:  # `from pkg import module` imports that module
                    sub = f"{base}.{alias.name}"
                    target = sub if sub in MODULES else base
                    found.append(Import(module, _resolve(target), where, not in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _graph() -> dict[str, dict[str, Import]]:
    """Project module → the project modules it imports (the first import of each, for its line)."""
    graph: dict[str, dict[str, Import]] = {m: {} for m in MODULES}
    for imp in IMPORTS:
        if imp.target in MODULES and imp.target != imp.source:
            graph[imp.source].setdefault(imp.target, imp)
    return graph


def _cycles(graph: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One cycle through each strongly connected group of modules (Tarjan), as its imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    cycles = []
    for group in groups:  # the shortest way back to the group's first module, inside the group
        start, members = group[0], set(group)
        paths: dict[str, list[Import]] = {start: []}
        frontier = [start]
        while frontier and not any(start in graph[m] for m in frontier):
            nxt = []
            for m in frontier:
                for w, imp in graph[m].items():
                    if w in members and w not in paths:
                        paths[w] = [*paths[m], imp]
                        nxt.append(w)
            frontier = nxt
        last = next(m for m in frontier if start in graph[m])
        cycles.append([*paths[last], graph[last][start]])
    return cycles


def _chain(imports: list[Import]) -> str:
    return imports[0].source + "".join(f"\n      → {i.target}   ({i.where})" for i in imports)


def test_the_walk_sees_every_package_and_the_imports_inside_functions():
    assert {"expgrid.runner", "expgrid.cli", "expgrid.trainable_spec", "trainables.toy"} <= set(MODULES)
    inside = [i for i in IMPORTS if i.source == "expgrid.runner" and not i.module_level]
    assert any(i.target.startswith("cluster") for i in inside)  # the runner calls out to Ray there
    assert _cycles({"a": {"b": Import("a", "b", "a.py:1", True)}, "b": {"a": Import("b", "a", "b.py:2", False)}})


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, f"{len(cycles)} import cycle(s) among the project's modules:\n" + "\n".join(
        "  " + _chain(c) for c in cycles)  # fmt: skip


def test_the_core_imports_no_heavy_library_nor_the_packages_above_it_at_module_level():
    bad = [i for i in IMPORTS if _within(i.source, ("expgrid",)) and i.module_level and i.target.split(".")[0] in HEAVY]
    assert not bad, "the core imports at module level:\n" + "\n".join(f"  {i.where}: {i.source} imports {i.target}"
                                                                      for i in bad)  # fmt: skip


def test_no_trial_side_module_reaches_the_driver_side():
    graph = _graph()
    problems = []
    for start in sorted(m for m in MODULES if _within(m, TRIAL_SIDE)):
        seen: dict[str, list[Import]] = {start: []}
        frontier = [start]
        while frontier:
            nxt = []
            for m in frontier:
                for w, imp in graph[m].items():
                    if w not in seen:
                        seen[w] = [*seen[m], imp]
                        if _within(w, DRIVER_SIDE):
                            problems.append(seen[w])
                        else:
                            nxt.append(w)
            frontier = nxt
    assert not problems, "trial-side modules reaching the driver side:\n" + "\n".join(
        "  " + _chain(p) for p in problems)  # fmt: skip


def test_every_imported_project_module_exists():
    missing = [i for i in IMPORTS if i.target.split(".")[0] in PACKAGES and i.target not in MODULES]
    assert not missing, "imports of project modules that do not exist:\n" + "\n".join(
        f"  {i.where}: {i.source} imports {i.target}" for i in missing)  # fmt: skip
