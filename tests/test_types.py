"""The product code type-checks: mypy over server/, agent/, realtime/, store/
and the root modules, with the settings in pyproject.toml ([tool.mypy]).

The repository root is the `leadstream` package but is not named so on disk;
mypy sees it through a link, `.mypy_cache/typecheck/leadstream`, whose fixed
place lets mypy's cache serve the next run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("server", "agent", "realtime", "store")


def test_the_product_code_type_checks() -> None:
    base = ROOT / ".mypy_cache" / "typecheck"
    base.mkdir(parents=True, exist_ok=True)
    link = base / "leadstream"
    if not link.is_symlink() or link.resolve() != ROOT:
        link.unlink(missing_ok=True)
        link.symlink_to(ROOT, target_is_directory=True)
    targets = [arg for package in PACKAGES for arg in ("-p", f"leadstream.{package}")]
    roots = sorted(p.stem for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__"))
    targets += [arg for module in roots for arg in ("-m", f"leadstream.{module}")]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--cache-dir",
            str(ROOT / ".mypy_cache"),
            *targets,
        ],
        cwd=base,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout
