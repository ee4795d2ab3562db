"""target_brevo's modules import one another in one direction only: no circle, even for types."""

from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import target_brevo

PACKAGE = Path(target_brevo.__path__[0])


def imports_of(module: str) -> set[str]:
    """The target_brevo modules one module imports, at run time or for type checking only."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "target_brevo":
            found.update(alias.name for alias in node.names)  # from target_brevo import rules
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("target_brevo."):
            found.add((node.module or "").split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("target_brevo.")
            )
    return found - {module}


def test_no_module_of_target_brevo_imports_one_that_imports_it_back() -> None:
    graph = {info.name: imports_of(info.name) for info in pkgutil.iter_modules([str(PACKAGE)])}
    assert "target" not in graph["sinks"]  # sinks know their target by a Protocol (SinkHost)

    def reaches(start: str, path: tuple[str, ...]) -> None:
        for nxt in sorted(graph.get(start, ())):
            assert nxt not in path, "import circle: " + " -> ".join((*path, nxt))
            reaches(nxt, (*path, nxt))

    for module in graph:
        reaches(module, (module,))
