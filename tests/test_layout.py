"""The layout's import rules, read from the source (ast): who may import whom, and how.

- Each package imports from the others only what MAY_IMPORT allows (the README's layout says
  the same): product packages (shipped by pyproject) never the development packages or the
  tests, development packages never the tests.
- No module imports a private name (`_x`, or a name under a `_x` module) of another package;
  a product package's `sdk_compat.py` alone may, from singer-sdk.
- No two modules import each other, directly or through others (TYPE_CHECKING imports too).
- Every top-level package of the tree has its paragraph in the README's layout.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = (
    "tap_mailgun",
    "target_brevo",
    "mailgun_webhooks",
    "plugin_cli",
    "mailgun_validate",
    "mailgun_health",
)
DEVELOPMENT = ("fakes", "bench")
TESTS = "tests"
# What each package may import of the other packages of the tree (a module or a package).
MAY_IMPORT: dict[str, tuple[str, ...]] = {
    # The spool is standard library only: reading it does not install the receiver's server.
    "tap_mailgun": ("mailgun_webhooks.spool", "plugin_cli"),
    "target_brevo": ("plugin_cli",),
    # `register` calls Mailgun's API through its one owner: regions, waits, Retry-After.
    "mailgun_webhooks": ("tap_mailgun.client", "plugin_cli"),
    "plugin_cli": (),
    # The mapper speaks to Mailgun as the tap does; it opens its cache as the store opens its own.
    "mailgun_validate": ("tap_mailgun.client", "tap_mailgun.sdk_compat", "plugin_cli"),
    "mailgun_health": ("tap_mailgun.records",),
    "fakes": PRODUCT,
    "bench": (*PRODUCT, "fakes"),
    TESTS: (*PRODUCT, *DEVELOPMENT),
}
# The SDK internals a product package uses live in its sdk_compat module, fenced by a test.
SDK_COMPAT = "sdk_compat"
# Circles being taken apart: delete an entry once it is gone (none left).
KNOWN_CIRCLES: list[list[str]] = []


@dataclass(frozen=True)
class Import:
    """One import statement's target, as written in a module of the tree."""

    module: str  # the importing module, e.g. tap_mailgun.streams
    target: str  # the imported module, e.g. tap_mailgun.client
    names: tuple[str, ...]  # the names taken from it (empty for `import x`)
    line: int

    def __str__(self) -> str:
        taken = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.module}:{self.line} imports {self.target}{taken}"


def packages() -> list[str]:
    """Top-level Python packages of the tree."""
    return sorted(p.parent.name for p in ROOT.glob("*/__init__.py"))


def module_name(path: Path) -> str:
    """The dotted name of a source file of the tree."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """Whether `dotted` names a module or package of the tree."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> Iterator[Import]:
    """Every import of a source file, relative ones resolved; `from p import m` names module
    p.m when m is a module of the tree."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, (), node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base == "__future__":
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if is_module(sub):
                    yield Import(module, sub, (), node.lineno)
                else:
                    yield Import(module, base, (alias.name,), node.lineno)


def sources(*tops: str) -> list[Path]:
    """The source files of these top-level packages."""
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py") if "results" not in p.parts)


@cache
def tree_imports() -> tuple[Import, ...]:
    """Every import in the packages of the tree, read once."""
    return tuple(found for path in sources(*packages()) for found in imports(path))


def all_imports(*tops: str) -> list[Import]:
    """Every import in these packages."""
    return [found for found in tree_imports() if top(found.module) in tops]


def top(dotted: str) -> str:
    return dotted.split(".")[0]


def private(found: Import) -> bool:
    """Whether an import reaches a private name of a package other than its own."""
    if top(found.target) == top(found.module):
        return False
    return any(part.startswith("_") for part in (*found.target.split("."), *found.names))


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles among modules: strongly connected groups of two or more (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_every_package_of_the_tree_is_classified() -> None:
    assert packages() == sorted(MAY_IMPORT) == sorted((*PRODUCT, *DEVELOPMENT, TESTS)), (
        "A new top-level package: add it to PRODUCT or DEVELOPMENT here, and its paragraph "
        "to the README's layout (Development)."
    )


def test_product_packages_ship_alone() -> None:
    """What pyproject packages is exactly the product."""
    text = (ROOT / "pyproject.toml").read_text()
    (include,) = re.findall(r"^include = \[(.*)\]$", text, re.MULTILINE)
    assert sorted(name.strip(' "*') for name in include.split(",")) == sorted(PRODUCT)


def allowed(found: Import) -> bool:
    """Whether the layout lets the importing package import this."""
    own = top(found.module)
    return top(found.target) == own or any(
        found.target == name or found.target.startswith(f"{name}.") for name in MAY_IMPORT[own]
    )


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_each_package_imports_only_what_the_layout_allows(package: str) -> None:
    found = [i for i in all_imports(package) if top(i.target) in packages()]
    assert [str(i) for i in found if not allowed(i)] == []


def test_no_module_imports_a_private_name_of_another_package() -> None:
    found = [
        str(i)
        for i in all_imports(*packages())
        if private(i)
        and not (
            top(i.module) in PRODUCT
            and i.module.endswith(f".{SDK_COMPAT}")
            and top(i.target) == "singer_sdk"
        )
    ]
    assert found == []


def test_no_import_circle_between_modules() -> None:
    edges: dict[str, set[str]] = {}
    for found in all_imports(*packages()):
        if top(found.target) in packages() and found.target != found.module:
            edges.setdefault(found.module, set()).add(found.target)
    assert circles(edges) == KNOWN_CIRCLES, "an import circle appeared, or a known one is gone"


def test_the_checks_see_what_they_forbid() -> None:
    """The rules above fail on the shapes they are for (a private import, a circle)."""
    assert private(Import("bench.fakes", "fakes.mailgun", ("_parse_time",), 1))
    assert private(Import("tap_mailgun.x", "singer_sdk.helpers._util", (), 1))
    assert not private(Import("tap_mailgun.streams", "tap_mailgun.client", ("_x",), 1))
    assert allowed(Import("tap_mailgun.webhook_events", "mailgun_webhooks.spool", ("Spool",), 1))
    assert not allowed(Import("tap_mailgun.tap", "mailgun_webhooks.app", (), 1))
    assert not allowed(Import("target_brevo.store", "fakes.brevo", ("FakeBrevo",), 1))
    assert not allowed(Import("fakes.sandbox", "tests.conftest", (), 1))
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert allowed(Import("tap_mailgun.webhook_events", "mailgun_webhooks.spool", ("Spool",), 1))
    assert not allowed(Import("tap_mailgun.tap", "mailgun_webhooks.app", (), 1))
    assert not allowed(Import("target_brevo.store", "fakes.brevo", ("FakeBrevo",), 1))
    assert not allowed(Import("fakes.sandbox", "tests.conftest", (), 1))
    assert circles({"a": {"b"}, "b": set()}) == []
    assert any(i.target == "mailgun_webhooks.spool" for i in all_imports("tap_mailgun"))
    streams = next(imports(ROOT / "tap_mailgun" / "streams.py"))
    assert streams.module == "tap_mailgun.streams"


def test_the_readme_layout_has_a_paragraph_per_package() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme.split("### Layout", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    described = re.findall(r"^- `(\w+)/`", layout, re.MULTILINE)
    assert [name for name in packages() if name not in described] == []
    assert [name for name in described if not (ROOT / name).is_dir()] == []
