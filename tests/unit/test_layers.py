"""The import contract: ddnn's layers import downward only, and no module imports itself back.

The graph is read from the source (``ast``), so it sees every import, including the ones inside
functions that a run-time check would only meet on some code path. A failure names the import
(file:line) and the two layers, e.g. ``ddnn/policies/base.py:12: ddnn.evaluation (policies →
evaluation)``: move the code to the layer that owns it rather than widening :data:`LAYERS`.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("ddnn", "services")
GENERATED = "ddnn.pb"  # made by `make proto`, not committed: a leaf of the base layer, never scanned

# Layer -> the layers it may import directly (and, transitively, everything below those).
# Siblings in one layer may import each other; the cycle test keeps that acyclic.
LAYERS: dict[str, tuple[str, ...]] = {
    "base": (),  # errors, paths, logging, generated protobuf
    "data/models": ("base",),  # datasets, networks, checkpoints, tensor codecs, energy model
    "training": ("data/models",),
    "engines": ("data/models",),  # ONNX export/bundles and the torch / onnxruntime / openvino parts
    "policies": ("data/models",),
    "evaluation": ("policies", "engines"),
    "calibration": ("evaluation",),  # fitting policies, and the sweeps built on that
    "experiments": ("calibration", "training"),
    "runtime": ("policies", "engines"),  # the inference engine, run-time control, Triton export/launch/client
    "serving": ("runtime",),  # gRPC plumbing shared by the services, process launching
    "testbed": ("serving",),
    "cli": ("experiments", "serving", "testbed"),
    "entry": ("cli",),  # `python -m` entry points
    "services": ("serving",),  # the edge, cloud and load generator processes
}

# Module (or package) -> layer; the longest matching prefix wins.
MODULE_LAYERS: dict[str, str] = {
    "ddnn": "base",  # the package's own __init__
    "ddnn.errors": "base",
    "ddnn.paths": "base",
    "ddnn.logs": "base",
    GENERATED: "base",
    "ddnn.data": "data/models",
    "ddnn.models": "data/models",
    "ddnn.checkpoint": "data/models",
    "ddnn.codec": "data/models",
    "ddnn.energy": "data/models",
    "ddnn.outcome": "data/models",  # its lowest user is ddnn.energy ("dropped", "cloud")
    "ddnn.training": "training",
    "ddnn.engines": "engines",
    "ddnn.export": "engines",
    "ddnn.policies": "policies",
    "ddnn.evaluation": "evaluation",
    "ddnn.calibration": "calibration",
    "ddnn.sweep": "calibration",
    "ddnn.experiments": "experiments",
    "ddnn.inference": "runtime",
    "ddnn.control": "runtime",
    "ddnn.runreport": "runtime",
    "ddnn.triton": "runtime",
    "ddnn.serving": "serving",
    "ddnn.launch": "serving",
    "ddnn.testbed": "testbed",
    "ddnn.cli": "cli",
    "ddnn.__main__": "entry",
    "ddnn.testbed.__main__": "entry",
    "ddnn.triton.__main__": "entry",
    "services": "services",
}

# Import cycles among modules that cannot be removed, each with the reason. Empty: there are none.
ALLOWED_CYCLES: list[frozenset[str]] = []


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (the longest known prefix of what the statement names)
    path: Path
    line: int
    typing_only: bool = False  # under `if TYPE_CHECKING:`: never runs, so it cannot close a cycle

    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            name = module_name(path)
            if name != GENERATED and not name.startswith(GENERATED + "."):
                found[name] = path
    return found


def known(name: str) -> str | None:
    """The module ``name`` refers to (a module, or the package holding it), or None if external."""
    if name == GENERATED or name.startswith(GENERATED + "."):
        return GENERATED
    while name and name not in modules():
        name = name.rpartition(".")[0]
    return name or None


def _targets(source: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importing module's package
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
    # `from pkg import name` names a submodule when one exists, else an attribute of pkg.
    return [f"{base}.{a.name}" if known(f"{base}.{a.name}") == f"{base}.{a.name}" else base for a in node.names]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


@cache
def imports() -> tuple[Import, ...]:
    """Every import statement of every module, at module level or inside functions and classes."""
    found = []
    for source, path in modules().items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in _targets(source, path, node):
                    target = known(name)
                    if target is not None and target != source:
                        found.append(Import(source, target, path, node.lineno, id(node) in typing_only))
    return tuple(found)


def layer_of(module: str) -> str | None:
    for prefix in sorted(MODULE_LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return MODULE_LAYERS[prefix]
    return None


@cache
def reachable(layer: str) -> frozenset[str]:
    """``layer`` and every layer below it."""
    return frozenset({layer}).union(*(reachable(d) for d in LAYERS[layer]))


def violations(found: tuple[Import, ...]) -> list[str]:
    """One line per import that leaves its layer's reach."""
    bad = []
    for imp in found:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src is not None and dst is not None and dst not in reachable(src):
            bad.append(f"{imp.where()}: {imp.source} imports {imp.target} ({src} → {dst})")
    return list(dict.fromkeys(bad))  # `from m import a, b` is one import


def cycles(found: tuple[Import, ...]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {m: set() for m in modules()}
    for imp in found:
        if imp.target in graph and not imp.typing_only:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_layers_form_a_dag_and_every_module_has_one():
    for layer, below in LAYERS.items():
        assert layer not in set().union(*(reachable(d) for d in below)), f"layer {layer} reaches itself"
    assert set(MODULE_LAYERS.values()) <= set(LAYERS)
    unplaced = [m for m in modules() if layer_of(m) is None]
    assert not unplaced, f"modules without a layer (add them to MODULE_LAYERS in {Path(__file__).name}): {unplaced}"


def test_imports_point_down_the_layers():
    bad = violations(imports())
    assert not bad, "imports that go up (or across) the layers:\n" + "\n".join(bad)


def test_the_library_never_imports_the_services():
    bad = [f"{i.where()}: {i.source} imports {i.target}" for i in imports()
           if i.source.startswith("ddnn") and i.target.split(".")[0] == "services"]
    assert not bad, "ddnn must work without services/:\n" + "\n".join(bad)


def test_no_import_cycles():
    found = [c for c in cycles(imports()) if frozenset(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(" ↔ ".join(c) for c in found)


def test_the_graph_sees_function_local_and_relative_imports():
    # The contract is only as good as the graph: a hidden import inside a function must count.
    policies = modules()["ddnn.policies.base"]
    source = "def f():\n    from ddnn.evaluation import route_samples\n"
    node = ast.parse(source).body[0].body[0]
    assert _targets("ddnn.policies.base", policies, node) == ["ddnn.evaluation"]
    fake = Import("ddnn.policies.base", "ddnn.evaluation", policies, 2)
    assert violations((fake,)) == [
        "ddnn/policies/base.py:2: ddnn.policies.base imports ddnn.evaluation (policies → evaluation)"]
    relative = ast.parse("from ..evaluation import routing\n").body[0]
    assert _targets("ddnn.policies.base", policies, relative) == ["ddnn.evaluation.routing"]
    assert any(i.source == "ddnn.cli.reproduce" and i.target.startswith("ddnn.experiments") for i in imports()), \
        "function-local imports (ddnn.cli.reproduce imports experiments inside run) are missing from the graph"
