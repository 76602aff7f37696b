"""Dependencies point one way (README, Architecture): entry points → http →
jobs → realtime → agent → store, with the leaves (settings, auth, logs,
metrics, Redis connections, rate-limit policy, the root error and pacing
modules) importable from every layer above the store. The test parses every
product module's imports, those inside functions and `TYPE_CHECKING` blocks
included, and names each import that points the wrong way."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT_DIRS = ("server", "agent", "realtime", "store")

# A layer may import itself and the layers listed for it.
ALLOWED: dict[str, set[str]] = {
    "root": {"root"},
    "store": {"store", "root"},
    "agent": {"agent", "store", "root"},
    "leaf": {"leaf", "agent", "store", "root"},
    "realtime": {"realtime", "leaf", "agent", "store", "root"},
    "jobs": {"jobs", "realtime", "leaf", "agent", "store", "root"},
    "services": {"services", "jobs", "realtime", "leaf", "agent", "store", "root"},
    "http": {"http", "services", "jobs", "realtime", "leaf", "agent", "store", "root"},
    "entry": {"entry", "http", "services", "jobs", "realtime", "leaf", "agent", "store", "root"},
}


def layer(module: str) -> str:
    """The layer of a `leadstream...` module name."""
    parts = module.split(".")[1:]
    if not parts:
        return "root"
    top = parts[0]
    if top == "__main__" or module.startswith(
        ("leadstream.server.cli", "leadstream.server.jobs.worker")
    ):
        return "entry"
    if top in ("store", "agent", "realtime"):
        return top
    if top != "server":
        return "root"  # leadstream.errors, leadstream.pacing: leaves of every layer
    rest = parts[1:]
    if not rest:
        return "leaf"
    if rest[0] == "http" or module == "leadstream.server.ratelimit.middleware":
        return "http"
    if rest[0] == "jobs":
        return "jobs"
    if rest[0] == "services":
        return "services"
    return "leaf"


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = [p for p in relative.parts if p != "__init__"]
    return ".".join(["leadstream", *parts])


def product_modules() -> list[Path]:
    files = [ROOT / "__main__.py", *sorted(p for p in ROOT.glob("*.py") if p.name != "__main__.py")]
    for folder in PRODUCT_DIRS:
        files.extend(sorted((ROOT / folder).rglob("*.py")))
    return [f for f in files if f.exists()]


def imported_modules(path: Path, name: str) -> set[str]:
    """Every `leadstream...` module `path` imports, resolving relative imports."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from leadstream.server.http import app` imports a module, not a name
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {m for m in found if m == "leadstream" or m.startswith("leadstream.")}


def known(module: str) -> bool:
    """Whether `module` is a module or package of ours (not a name inside one)."""
    relative = Path(*module.split(".")[1:]) if module != "leadstream" else Path()
    return (ROOT / relative).with_suffix(".py").exists() or (
        ROOT / relative / "__init__.py"
    ).exists()


def test_the_layers_are_assigned_as_the_readme_says() -> None:
    assert layer("leadstream.store.sqlite") == "store"
    assert layer("leadstream.agent.loop") == "agent"
    assert layer("leadstream.realtime.server") == "realtime"
    assert layer("leadstream.server.config") == "leaf"
    assert layer("leadstream.server.jobs.queue") == "jobs"
    assert layer("leadstream.server.jobs.worker") == "entry"
    assert layer("leadstream.server.http.routes.leads") == "http"
    assert layer("leadstream.server.cli.main") == "entry"
    assert layer("leadstream.errors") == "root"
    assert "http" not in ALLOWED["realtime"] and "agent" not in ALLOWED["store"]


@pytest.mark.parametrize("path", product_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_one_way(path: Path) -> None:
    name = module_name(path)
    mine = layer(name)
    wrong = sorted(
        f"{target} ({layer(target)})"
        for target in imported_modules(path, name)
        if known(target) and layer(target) not in ALLOWED[mine]
    )
    assert not wrong, f"{name} ({mine}) imports against the dependency direction: {wrong}"
