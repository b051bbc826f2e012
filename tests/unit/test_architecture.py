"""The house rules of docs/architecture.md, checked on the source tree (no imports executed)."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "provenance"
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
LONG_FUNCTIONS_ALLOWED = {"certify/certifier.py:Certifier.certify"}  # the pipeline reads best as one straight line
# Layers, lowest first: a module may import its own layer and the ones below. runtime (the wiring) sits under the
# faces that open it; nothing else may import it.
LAYERS = [
    {"__init__", "errors", "fsutil", "config", "observability"},
    {"media", "marks", "manifests", "sbr", "signing", "ipfs", "db", "chain", "auth"},
    {"anchoring", "certify", "verify", "trust", "nft", "jobs", "lineage"},
    {"runtime"},
    {"api", "cli", "web"},
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Provenance modules that ``path`` imports at module level (TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    nodes: list[ast.stmt] = list(tree.body)
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If | ast.Try):
            nodes.extend(node.body + node.orelse + getattr(node, "finalbody", []))
            for handler in getattr(node, "handlers", []):
                nodes.extend(handler.body)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {target for target in found if target in modules and target != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module}: its folder is in no layer of docs/architecture.md")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return out


def test_no_import_circle() -> None:
    assert _cycles(_graph()) == []


def test_imports_run_down_the_layers() -> None:
    upward = [
        f"{source} -> {target}"
        for source, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(source)
    ]
    assert len(upward) <= 1, upward


def test_the_service_never_imports_a_benchmark() -> None:
    for path in _modules().values():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names.append(node.module)
            assert not any(n == "benchmarks" or n.startswith("benchmarks.") for n in names), path


def _long_functions(body: list[ast.stmt], relative: str, prefix: str = "") -> list[str]:
    found = []
    for node in body:
        if isinstance(node, ast.ClassDef):
            found += _long_functions(node.body, relative, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            where = f"{relative}:{prefix}{node.name}"
            if length > MAX_FUNCTION_LINES and where not in LONG_FUNCTIONS_ALLOWED:
                found.append(f"{where}: {length} lines")
            found += _long_functions(node.body, relative, f"{prefix}{node.name}.")
    return found


def test_modules_and_functions_stay_small() -> None:
    big, long = [], []
    for path in _modules().values():
        source = path.read_text()
        relative = path.relative_to(PACKAGE).as_posix()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            big.append(f"{relative}: {len(source.splitlines())} lines")
        long += _long_functions(ast.parse(source).body, relative)
    assert big == [] and long == [], big + long


def _undocumented(body: list[ast.stmt], relative: str, prefix: str = "") -> list[str]:
    found = []
    for node in body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
            if not ast.get_docstring(node) and not _is_overload_or_property_setter(node):
                found.append(f"{relative}:{prefix}{node.name}")
            if isinstance(node, ast.ClassDef):
                found += _undocumented(node.body, relative, f"{prefix}{node.name}.")
    return found


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for path in _modules().values():
        tree = ast.parse(path.read_text())
        relative = path.relative_to(PACKAGE).as_posix()
        if not ast.get_docstring(tree):
            missing.append(f"{relative}: module")
        missing += _undocumented(tree.body, relative)
    assert missing == [], f"{len(missing)} public names without a docstring: {missing[:40]}"


def _is_overload_or_property_setter(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any(isinstance(d, ast.Attribute) and d.attr in {"setter", "deleter"} for d in decorators) or any(
        isinstance(d, ast.Name) and d.id == "overload" for d in decorators
    )


# Who may read the whole ``Settings``: the wiring (runtime/) and the faces (api/, cli/) that build or hand it out,
# and the chain's own builder (it opens anvil or an external RPC from a dozen settings). Everything else gets only
# the values it uses from the runtime's builders (``JobService`` its ``GenerationLimits``, the Celery queue its
# ``CeleryConfig``, ``Limits`` a ``LimitValues``, the time-stamp authority a ``TimeStampValues``, ...).
SETTINGS_READERS = {"config", "runtime", "api", "cli"}
SETTINGS_READER_MODULES = {"provenance.chain.setup"}


def test_only_the_wiring_reads_the_whole_settings() -> None:
    graph = _graph()
    readers = sorted(
        name
        for name, targets in graph.items()
        if "provenance.config" in targets
        and name.split(".")[1] not in SETTINGS_READERS
        and name not in SETTINGS_READER_MODULES
    )
    assert readers == [], f"modules outside the wiring import provenance.config: {readers}"


def test_layers_name_every_folder() -> None:
    folders = defaultdict(int)
    for module in _modules():
        folders[module.split(".")[1] if "." in module else "__init__"] += 1
    for folder in folders:
        _layer(f"provenance.{folder}")


def test_the_public_library_face() -> None:
    """Third parties verify offline with ``from provenance import ...``; every name in ``__all__`` resolves."""
    import provenance

    for name in provenance.__all__:
        assert getattr(provenance, name) is not None, name
    from provenance import ProvenanceBundle, verify_with_bundle
    from provenance.verify.bundle import verify_with_bundle as defined

    assert verify_with_bundle is defined and ProvenanceBundle.__name__ == "ProvenanceBundle"
