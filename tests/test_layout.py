"""The library's layout (issue 25): packages by concern with a docstring each, only cross-cutting
modules at the root, no module over about 300 lines, no import cycle, and the old import paths the
README and the notebooks used still importing, with a DeprecationWarning, as the moved module."""

import ast
import importlib
import sys
import warnings
from pathlib import Path

import pytest

import gradinv_lib
from gradinv_lib import deprecated_paths

LIB = Path(gradinv_lib.__file__).parent
ROOT_MODULES = {"__init__", "errors", "io", "profiles", "paper_results", "plotting", "exports", "deprecated_paths"}
MAX_LINES = 310


def module_name(path: Path) -> str:
    parts = list(path.relative_to(LIB.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every gradinv_lib module ``path`` imports, at module level or inside a function: the most
    specific module each import names (``from a.b import c`` is a.b.c when c is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle():
    found = modules()
    graph = {name: imports_of(name, path, set(found)) for name, path in found.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_root_holds_packages_and_cross_cutting_modules_only():
    assert {p.stem for p in LIB.glob("*.py")} == ROOT_MODULES


def test_every_package_says_what_it_is_for():
    for init in LIB.rglob("__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 40, f"{init.relative_to(LIB.parent)}: no docstring stating its concern"


def test_no_module_over_about_300_lines():
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


@pytest.mark.parametrize("old", sorted(deprecated_paths.MOVED))
def test_old_import_paths_warn_and_give_the_moved_module(old):
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match=deprecated_paths.MOVED[old].replace(".", r"\.")):
        module = importlib.import_module(old)
    assert module is importlib.import_module(deprecated_paths.MOVED[old])


def test_public_names_come_from_the_packages():
    from gradinv_lib.attack import InversionConfig, gradinversion
    from gradinv_lib.experiments import attack_batch
    from gradinv_lib.federated import read_update, simulate_client
    assert gradinversion.__module__ == "gradinv_lib.attack.pipeline"
    assert InversionConfig.__module__ == "gradinv_lib.attack.config"
    assert attack_batch.__module__ == "gradinv_lib.experiments.run"
    assert {read_update.__module__, simulate_client.__module__} == {"gradinv_lib.federated.update_formats",
                                                                    "gradinv_lib.federated.client"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # the public surface itself never warns
        from gradinv_lib.attack import recover_labels  # noqa: F401
    with pytest.raises(ImportError, match="no_such_name"):
        from gradinv_lib.attack import no_such_name  # noqa: F401
