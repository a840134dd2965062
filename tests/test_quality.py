"""The shape of the code, checked: lint and types clean, no import cycle,
each layer importing only what the README's Design section allows, and the
environment read in the CLI alone. A finding fails the suite."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ocibuild"
VENV_BIN = Path(sys.executable).parent

# What each layer may import from ocibuild (besides itself), bottom to top.
# The Design section of the README shows the same table.
BOTTOM = {"errors", "fsutil", "progress"}
ALLOWED = {
    "errors": set(),
    "fsutil": {"errors"},
    "progress": set(),
    "children": set(),
    "oci": {"errors", "fsutil"},
    "toolchains": {"errors"},
    "gosource": {"errors", "oci", "toolchains"},
    "diagnoses": {"errors", "oci", "gosource"},
    "gomodules": BOTTOM | {"oci", "gosource", "fabric"},
    "fabric": BOTTOM | {"oci", "gosource", "diagnoses"},
    "engines": BOTTOM | {"oci", "children"},
    "outputs": BOTTOM | {"oci", "engines"},
    "registry": BOTTOM | {"oci", "outputs", "__init__"},      # __init__: the version, for User-Agent
    "builders": BOTTOM | {"oci", "gosource", "toolchains", "engines", "children"},
    "transports": BOTTOM | {"oci", "outputs", "engines", "registry"},
    "sbom": BOTTOM | {"oci"},
    "build": BOTTOM | {"oci", "gosource", "toolchains", "gomodules", "diagnoses", "fabric", "builders",
                       "outputs", "registry", "transports", "sbom", "__init__"},    # __init__: the SBOM's tool version
    "metadata": BOTTOM | {"oci", "outputs", "build"},
    "extbuilder": BOTTOM | {"oci", "gosource", "fabric", "engines", "build", "builders"},
    "cli": BOTTOM | {"oci", "gosource", "toolchains", "gomodules", "diagnoses", "fabric", "builders",
                     "outputs", "registry", "transports", "build", "extbuilder", "sbom", "metadata", "__init__"},
    "__init__": set(),
    "__main__": {"cli"},
}
# Third-party packages kept out of the lower layers: the core touches no
# engine, no network and no terminal.
FORBIDDEN_THIRD_PARTY = {
    "oci": {"click", "rich", "httpx", "python_on_whales"},
    "gosource": {"click", "rich", "httpx", "python_on_whales"},
    "toolchains": {"click", "rich", "httpx", "python_on_whales"},
    "gomodules": {"click", "rich", "httpx", "python_on_whales"},
    "diagnoses": {"click", "rich", "httpx", "python_on_whales"},
    "sbom": {"click", "rich", "httpx", "python_on_whales"},
    "fabric": {"click", "rich", "httpx", "python_on_whales"},
    "outputs": {"click", "rich", "httpx"},
    "registry": {"click", "rich", "python_on_whales"},
    "builders": {"click", "rich", "httpx"},
    "build": {"click", "rich"},
    "extbuilder": {"click", "rich", "httpx"},
}


def _modules() -> dict[str, Path]:
    """Dotted module name (relative to ocibuild) → file."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, top_level_only: bool) -> set[str]:
    """First-party modules (dotted, relative to ocibuild) and third-party
    packages (prefixed "3:") that `name` imports."""
    tree = ast.parse(path.read_text(), str(path))
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    for node in nodes:
        if top_level_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ocibuild"):
                    found.add(a.name.removeprefix("ocibuild").lstrip(".") or "__init__")
                else:
                    found.add("3:" + a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
                targets = [mod] if node.module else [".".join(base + [a.name]) for a in node.names]
                found.update(t or "__init__" for t in targets)
            elif node.module and node.module.startswith("ocibuild"):
                found.add(node.module.removeprefix("ocibuild").lstrip(".") or "__init__")
            elif node.module:
                found.add("3:" + node.module.split(".")[0])
    return found


def _layer(name: str) -> str:
    return name.split(".")[0]


def _resolve(dep: str, modules: dict[str, Path]) -> str:
    """`from .x import name` names the module x; `from . import __version__`
    the package itself."""
    while dep and dep not in modules:
        dep = dep.rpartition(".")[0]
    return dep or "__init__"


def test_no_import_cycle():
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        deps = set()
        for dep in _imports(name, path, top_level_only=True):
            if dep.startswith("3:"):
                continue
            dep = _resolve(dep, modules)
            if dep != name and dep in modules:
                deps.add(dep)
        graph[name] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph[n]):
            if state.get(d) == 1:
                cycle = stack[stack.index(d):] + [d]
                pytest.fail("import cycle: " + " -> ".join(f"ocibuild.{m}" for m in cycle))
            if d not in state:
                visit(d)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_each_layer_imports_only_what_it_may():
    problems = []
    modules = _modules()
    for name, path in modules.items():
        layer = _layer(name)
        allowed = ALLOWED[layer] | {layer}
        for dep in sorted(_imports(name, path, top_level_only=False)):
            if dep.startswith("3:"):
                if dep[2:] in FORBIDDEN_THIRD_PARTY.get(layer, set()):
                    problems.append(f"ocibuild.{name} imports {dep[2:]}")
            elif _layer(dep := _resolve(dep, modules)) not in allowed:
                problems.append(f"ocibuild.{name} imports ocibuild.{dep}")
    assert not problems, "layering broken:\n" + "\n".join(problems)


def test_only_the_cli_reads_the_environment():
    readers = []
    for name, path in _modules().items():
        if name == "cli":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            text = ast.unparse(node) if isinstance(node, ast.Attribute) else ""
            if text in ("os.environ", "os.getenv", "os.path.expanduser", "os.environb"):
                readers.append(f"ocibuild.{name}:{node.lineno} uses {text}")
    assert not readers, "\n".join(readers)


def test_ruff_finds_nothing():
    proc = subprocess.run([str(VENV_BIN / "ruff"), "check", "ocibuild", "tests", "scripts/bench",
                           "scripts/benchmarks", "--output-format", "concise"],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_nothing():
    proc = subprocess.run([str(VENV_BIN / "mypy")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
