"""pyproject.toml declares, with bounds, everything minimix and aioxmpp import, and what is
installed keeps to it (scripts/install.py relaxes aioxmpp's lxml pin; README, Install)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import aioxmpp

ROOT = Path(__file__).resolve().parent.parent
#: aioxmpp's own test and benchmark tooling, never imported by minimix
AIOXMPP_TOOLING = ("e2etest", "benchtest")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", requirement).group())


def declared() -> dict[str, list[str]]:
    """pyproject's dependencies: canonical name -> its requirement strings."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found: dict[str, list[str]] = {}
    for requirement in project["dependencies"]:
        found.setdefault(requirement_name(requirement), []).append(requirement)
    return found


def imported_top_levels(package: Path) -> set[str]:
    """Top-level modules imported by the .py files under ``package``, except those imported
    inside ``try: … except ImportError`` (optional) and the standard library's."""
    names: set[str] = set()
    for path in package.rglob("*.py"):
        if set(path.relative_to(package).parts) & set(AIOXMPP_TOOLING):
            continue
        with warnings.catch_warnings():  # aioxmpp's old escapes in docstrings
            warnings.simplefilter("ignore")
            tree = ast.parse(path.read_bytes(), str(path))
        optional = {
            id(node)
            for t in ast.walk(tree)
            if isinstance(t, ast.Try) and any(_catches_import_error(h) for h in t.handlers)
            for stmt in t.body
            for node in ast.walk(stmt)
        }
        for node in ast.walk(tree):
            if id(node) in optional:
                continue
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names}


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return any(isinstance(k, ast.Name) and k.id in ("ImportError", "ModuleNotFoundError") for k in kinds)


def test_every_module_minimix_or_aioxmpp_imports_comes_from_a_declared_dependency():
    owners = importlib.metadata.packages_distributions()
    ours = declared()
    modules = imported_top_levels(ROOT / "daemon" / "minimix") | imported_top_levels(
        Path(aioxmpp.__file__).parent
    )
    modules -= {"minimix", "aioxmpp"}
    assert {"lxml", "OpenSSL", "dns", "pytz", "multidict"} <= modules  # the scan sees them
    undeclared = {m: owners.get(m) for m in modules if not {canonical(d) for d in owners.get(m, [])} & set(ours)}
    assert not undeclared, f"imported but not in pyproject's dependencies: {undeclared}"


def test_every_dependency_of_aioxmpp_is_declared_with_a_lower_and_an_upper_bound():
    ours = declared()
    for requirement in importlib.metadata.requires("aioxmpp"):
        name = requirement_name(requirement)
        assert name in ours, f"aioxmpp requires {requirement}; pyproject does not declare {name}"
        unmarked = [r for r in ours[name] if ";" not in r]
        assert any(">=" in r and "<" in r.replace("<=", "") for r in unmarked), (
            f"{name}: {ours[name]} needs a lower and an upper bound"
        )


def test_the_installed_aioxmpp_allows_todays_lxml_and_pip_check_is_clean():
    assert "lxml<7,>=4.0" in importlib.metadata.requires("aioxmpp")  # scripts/install.py's
    r = subprocess.run(
        [sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr
