"""engine/ stays pure: no clock, randomness, I/O, concurrency or shell-layer imports.

The rule is enforced by reading the source with ``ast`` (nothing under engine/ is imported
here), so a violation is reported even when the offending module would not import at all.
Relative imports (``from . import x``) are always allowed; conditional and
``TYPE_CHECKING`` imports count like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_DIR = REPO_ROOT / "engine"

FORBIDDEN_MODULES = frozenset(
    {
        "time", "datetime", "random", "secrets", "os", "sys", "io", "socket", "select",
        "selectors", "threading", "multiprocessing", "subprocess", "asyncio", "trio",
        "trio_websocket", "lmdb", "prometheus_client", "uuid", "pathlib", "shutil",
        "tempfile", "logging", "signal", "urllib", "http",
    }
)  # fmt: skip
# The shell layers wrap the I/O above; importing them would smuggle it back in.
FORBIDDEN_FIRST_PARTY = frozenset(
    {"gateway", "ledger", "persistence", "services", "simulators", "bench", "config"}
)
# Ways to import or run code that the static check above cannot see through.
DYNAMIC_IMPORT_MODULES = frozenset({"importlib", "builtins"})
DYNAMIC_CALL_NAMES = frozenset({"__import__", "exec", "eval"})


def find_impurities(root: Path) -> list[str]:
    """Every forbidden import or dynamic import under ``root``, as 'path:line: what'."""
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        where = path.relative_to(root.parent) if root.parent in path.parents else path
        problems.extend(f"{where}:{line}: {what}" for line, what in _module_impurities(tree))
    return problems


def _module_impurities(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        for module in _imported_roots(node):
            if module in FORBIDDEN_MODULES or module in FORBIDDEN_FIRST_PARTY:
                found.append((node.lineno, f"imports {module}"))  # type: ignore[attr-defined]
            elif module in DYNAMIC_IMPORT_MODULES:
                found.append((node.lineno, f"imports {module} (dynamic import)"))  # type: ignore[attr-defined]
        name = _called_name(node)
        if name in DYNAMIC_CALL_NAMES:
            found.append((node.lineno, f"calls {name}()"))  # type: ignore[attr-defined]
    return found


def _imported_roots(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name.split(".")[0] for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module.split(".")[0]]
    return []


def _called_name(node: ast.AST) -> str | None:
    if not isinstance(node, ast.Call):
        return None
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def test_engine_imports_nothing_impure() -> None:
    assert ENGINE_DIR.is_dir(), ENGINE_DIR
    problems = find_impurities(ENGINE_DIR)
    assert not problems, "engine/ must stay pure (ARCHITECTURE.md):\n" + "\n".join(problems)


def test_checker_catches_planted_violations(tmp_path: Path) -> None:
    package = tmp_path / "engine"
    (package / "mechanisms").mkdir(parents=True)
    (package / "__init__.py").write_text("from . import mechanisms\n", encoding="utf-8")
    (package / "fine.py").write_text(
        "from __future__ import annotations\nimport fractions\nfrom .fine import x\n",
        encoding="utf-8",
    )
    assert find_impurities(package) == []

    (package / "mechanisms" / "clocky.py").write_text(
        "import time\n"
        "from os.path import join\n"
        "def f():\n"
        "    import trio_websocket as tw\n"
        "    return __import__('random')\n"
        "import importlib\n"
        "from persistence import store\n",
        encoding="utf-8",
    )
    problems = find_impurities(package)
    text = "\n".join(problems)
    assert "clocky.py:1: imports time" in text
    assert "clocky.py:2: imports os" in text
    assert "clocky.py:4: imports trio_websocket" in text
    assert "clocky.py:5: calls __import__()" in text
    assert "clocky.py:6: imports importlib" in text
    assert "clocky.py:7: imports persistence" in text
    assert len(problems) == 6
