"""core/ stays one framework-free layer without import cycles, each module importable on its own."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

from .conftest import REPO_ROOT

CORE = REPO_ROOT / "core"
FRAMEWORKS = ("fiftyone", "nuclio_sdk", "cvat_sdk", "ray")


def core_modules() -> dict[str, Path]:
    """``{"gsam2.core.backends": path, "gsam2.core.detectors.sam3": path, ...}``."""
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        name = ".".join(("gsam2", *parts))
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported_core_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The core modules ``path`` imports (relative or absolute, at any depth of the file), read with ``ast``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(candidate for candidate in candidates if candidate in known and candidate != name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path of module names, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for after in sorted(graph[node]):
            if state.get(after) == 1:
                return path[path.index(after) :] + [after]
            if after not in state and (cycle := visit(after)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_core_has_no_import_cycle():
    modules = core_modules()
    # A package's __init__ re-exports its modules; importing the package is not a dependency of theirs.
    packages = {name for name, path in modules.items() if path.name == "__init__.py"}
    graph = {
        name: imported_core_modules(name, path, set(modules)) - packages
        for name, path in modules.items()
        if name not in packages
    }
    assert graph["gsam2.core.run"] >= {"gsam2.core.backends", "gsam2.core.spec"}  # the reader sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_core_imports_no_labelling_tool():
    for name, path in core_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(n.split(".")[0] in FRAMEWORKS for n in names), f"{name} imports {names}"


ISOLATED_IMPORTS = """
import importlib, sys
failures = []
for module in sys.argv[1:]:
    for loaded in [name for name in sys.modules if name == "gsam2" or name.startswith("gsam2.")]:
        del sys.modules[loaded]  # our modules only: torch & co. stay imported, so this is quick
    try:
        importlib.import_module(module)
    except Exception as error:
        failures.append(f"{module}: {type(error).__name__}: {error}")
print("\\n".join(failures))
"""


def test_every_core_module_imports_in_isolation():
    """Each core module imported first, with no other module of ours imported before it (a fresh interpreter)."""
    modules = sorted(core_modules())
    if "gsam2.core.original_checkpoints" in modules and importlib.util.find_spec("sam2") is None:
        modules.remove("gsam2.core.original_checkpoints")  # its optional packages are imported at module level
    result = subprocess.run(
        [sys.executable, "-c", ISOLATED_IMPORTS, *modules], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "", result.stdout


def test_a_spec_is_built_without_importing_torch():
    """A driver that only plans a run (or reads a CVAT function's environment) never pays for torch."""
    code = (
        "import sys; from gsam2.core.spec import RunSpec; RunSpec.from_dict(RunSpec.build(prompt='car').to_dict()); "
        "from gsam2.core import RunSpec as exported; assert exported is RunSpec; "
        "print(sorted(m for m in ('torch', 'transformers', 'supervision') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
