"""exspy's X-ray line database as mmlake uses it: line energies and weights, line families, the
detector width law (Fiori & Newbury, as exspy) and atomic weights."""

from __future__ import annotations

import functools

import numpy as np


@functools.lru_cache(maxsize=None)
def _elements_db() -> dict:
    from exspy.material import elements

    return {k: elements[k].as_dictionary() for k in elements.keys()}


@functools.lru_cache(maxsize=1)
def element_symbols() -> frozenset[str]:
    """Element symbols with X-ray lines in exspy's database (the one quantification uses).

    Why not `exspy.material.elements`: importing exspy imports hyperspy.api and every signal class
    (1.5-3 s), and session.yaml is validated (the landing sensor, registration) where nothing else
    from exspy may be needed. The database is a dict literal in exspy's `_misc/elements.py`: its keys
    are read with `ast` (~30 ms) without running exspy; if that layout ever changes, exspy is
    imported instead."""
    import ast
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("exspy")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        try:
            tree = ast.parse((Path(folder) / "_misc" / "elements.py").read_text())
        except (OSError, SyntaxError):
            continue
        for node in tree.body:
            if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                    and any(isinstance(t, ast.Name) and t.id == "elements" for t in node.targets)):
                keys = {k.value for k in node.value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}
                if keys:
                    return frozenset(keys)
    return frozenset(_elements_db())


def known_element(symbol: str) -> bool:
    return isinstance(symbol, str) and symbol in element_symbols()


def element_lines(element: str) -> dict[str, tuple[float, float]]:
    """``{line_name: (energy_keV, weight)}`` of an element from exspy's database."""
    db = _elements_db()[element]
    lines = db.get("Atomic_properties", {}).get("Xray_lines", {})  # H, He, Li have none
    return {f"{element}_{ln}": (float(p["energy (keV)"]), float(p["weight"])) for ln, p in lines.items()}


def line_energy(line: str) -> float:
    el = line.split("_", 1)[0]
    return element_lines(el)[line][0]


def atomic_weight(element: str) -> float:
    return float(_elements_db()[element]["General_properties"]["atomic_weight"])


def line_family(line: str) -> list[tuple[str, float, float]]:
    """(line, energy keV, weight relative to ``line``) for every line of ``line``'s shell (the shell
    letter contained in the line name, as exspy's ``EDSModel.add_family_lines``)."""
    el, ln = line.split("_", 1)
    lines = element_lines(el)
    w0 = lines[line][1]
    return sorted(
        ((name, e, w / w0) for name, (e, w) in lines.items() if ln[0] in name.split("_", 1)[1]),
        key=lambda t: t[1],
    )


def fwhm_kev(energy_kev, resolution_mnka_ev: float = 130.0):
    """Detector FWHM (keV) at ``energy_kev`` from the FWHM at Mn Ka (eV): Fiori & Newbury, as
    exspy's ``get_FWHM_at_Energy``: FWHM^2 = 2.5 (E - E_MnKa)[eV] + FWHM_MnKa^2."""
    e_ref = line_energy("Mn_Ka")
    e = np.asarray(energy_kev, dtype=float)
    return np.sqrt(np.maximum(2.5 * (e - e_ref) * 1000.0 + resolution_mnka_ev**2, 1.0)) / 1000.0
