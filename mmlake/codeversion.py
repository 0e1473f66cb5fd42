"""Code versions derived from the code itself.

Why: hand-kept version constants drift (outputs changed in later commits without a version bump, so
the stale schedule never saw the change). `module_code_version(module, name)` hashes the module defining an asset
together with every project module it imports, transitively (`mmlake.*`, `assets.*`, `resources.*`),
so editing any function that can shape an asset's rows gives that asset a new version, and the stale
schedule re-materializes it and everything downstream.

Left out on purpose, because they cannot change stored rows: modules that only draw pictures or
move bytes (`INFRASTRUCTURE` below). Library versions are recorded separately (materializations.software).
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import re
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

PROJECT_PACKAGES = ("mmlake", "assets", "resources")
INFRASTRUCTURE = frozenset({
    "mmlake.lake", "mmlake.errors", "mmlake.plots", "mmlake.raster", "mmlake.atoms.plots", "mmlake.codeversion", "mmlake.migrate",
    "mmlake.sqlguard", "assets.common", "assets.partitions", "assets.checks", "assets.sensors",
    "assets.schedules", "assets.runner", "assets.cli", "assets.definitions", "assets.scaleout",
    "resources.lake", "resources.landing",
})


_ROOT = Path(__file__).resolve().parent.parent


def _module_file(name: str) -> Path | None:
    mod = sys.modules.get(name)
    path = getattr(mod, "__file__", None) if mod is not None else None
    if path is None and name.split(".")[0] in PROJECT_PACKAGES:
        # from the file tree, never importlib.util.find_spec: that imports every parent package,
        # and `from mmlake.crystal.models import x` made it import torch just to version an asset
        base = _ROOT.joinpath(*name.split("."))
        for cand in (base.with_suffix(".py"), base / "__init__.py"):
            if cand.is_file():
                return cand
        if name.split(".")[0] in ("mmlake", "assets", "resources"):
            return None
        # a project package outside this tree (the tests version a temporary package): ask importlib
    if path is None:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        path = spec.origin if spec is not None else None
    return Path(path) if path and path.endswith(".py") else None


# An import statement at the start of a (continuation-joined) line: `from X import a, b`,
# `from X import (a,\n b)` or `import X.y as z, w`. Function-level imports are indented lines too.
_IMPORT_LINE = re.compile(
    r"^[ \t]*(?:from[ \t]+(?P<base>\.*[\w.]*)[ \t]+import[ \t]*(?P<names>\([^)]*\)|[^\n;]*)"
    r"|import[ \t]+(?P<plain>[^\n;]*))",
    re.M,
)


def _names(group: str) -> list[str]:
    """`a as b, c` / `(a,  # note\n c)` -> ['a', 'c']."""
    group = re.sub(r"#[^\n]*", "", group).strip().strip("()")
    return [part.split()[0] for part in group.replace("\n", " ").split(",") if part.split()]


def _scan_imports(source: str) -> list[tuple[int, str, list[str]]]:
    """(level, module, names) of every import statement, by a line scan.

    Why not `ast`: parsing and walking the ~115 project modules cost ~0.3 s at every start of the
    code location (each asset computes its version while its module is imported). The scan sees
    what a parse sees on this tree (tests/test_identity.py compares the two over every project
    module); a docstring line that reads like an import can only add a module to a version, never
    drop one."""
    found = []
    for m in _IMPORT_LINE.finditer(source.replace("\\\n", " ")):
        if m.group("plain") is not None:
            for n in _names(m.group("plain")):
                found.append((0, n, []))
            continue
        base = m.group("base")
        level = len(base) - len(base.lstrip("."))
        found.append((level, base[level:], _names(m.group("names"))))
    return found


def _ast_imports(source: str) -> list[tuple[int, str, list[str]]]:
    """The same triples from a full parse: the reference the scan is tested against."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(0, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [a.name for a in node.names]))
    return found


@lru_cache(maxsize=None)
def _imports(name: str, scan=_scan_imports) -> tuple[str, ...]:
    """Project modules imported anywhere in module `name` (function-level imports included)."""
    path = _module_file(name)
    if path is None:
        return ()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for level, base, imported in scan(path.read_text()):
        if not imported:  # import a.b.c
            names = [base]
        else:
            if level:
                parent = package.split(".")[: len(package.split(".")) - level + 1]
                base = ".".join(p for p in [*parent, base] if p)
            names = [base] + [f"{base}.{a}" for a in imported]
        for n in names:
            if n.split(".")[0] in PROJECT_PACKAGES and _module_file(n) is not None:
                found.add(n)
    return tuple(sorted(found))


def module_closure(names: list[str]) -> list[str]:
    """The project modules reachable from `names` by imports, without the infrastructure modules."""
    seen: set[str] = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        stack.extend(m for m in _imports(n) if m not in INFRASTRUCTURE)
    return sorted(n for n in seen if n not in INFRASTRUCTURE)


def module_code_version(module_name: str, name: str, *, extra: tuple[str, ...] = ()) -> str:
    """code_version for something defined in module `module_name` (usable while that module is still
    being imported, e.g. in an asset decorator): '<name>-<12 hex>' over the module's file, `name`
    and the project modules it imports, transitively."""
    h = hashlib.sha256()
    h.update(name.encode())
    h.update(_module_file(module_name).read_bytes())
    for mod in module_closure([m for m in _imports(module_name) if m not in INFRASTRUCTURE] + list(extra)):
        h.update(mod.encode())
        h.update(_module_file(mod).read_bytes())
    return f"{name}-{h.hexdigest()[:12]}"


def source_hash(path: str | Path) -> str:
    """sha256 of one file (for tests and for assets built from data files)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
