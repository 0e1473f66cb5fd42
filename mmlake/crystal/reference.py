"""Reference interplanar spacings d(hkl) for phases seen in the STEM sessions (LaFeO3, SrTiO3).

Used by a SQL view that puts them next to the FFT d-spacings measured in STEM regions.

- Idealised cubic perovskites ABX3 (Pm-3m, B at the origin, A at the body centre, X at the face
  centres) with a = 3.93 Å for LaFeO3 (pseudo-cubic; the real phase is orthorhombic Pnma with
  a ~ 5.56, b ~ 7.86, c ~ 5.55 Å, i.e. ~sqrt(2) a_pc, 2 a_pc, sqrt(2) a_pc) and a = 3.905 Å for
  SrTiO3 (cubic at room temperature).
- When a `structures` frame holds the same reduced formula, the spacings of those structures
  (conventional standard cell) are listed as well, with source = "data:<material_id>".

Each row is one reflection family {hkl} up to `max_index` (|h|, |k|, |l| <= max_index) with
d (Å), multiplicity, the Cu K-alpha 2-theta and the relative XRD intensity (0-100, pymatgen
kinematic; absent from the list = extinct for that structure).
"""

from __future__ import annotations

import warnings
from typing import Iterable, Mapping

import polars as pl

PEROVSKITES: dict[str, dict] = {
    "LaFeO3": {"A": "La", "B": "Fe", "X": "O", "a": 3.93,
               "note": "pseudo-cubic LaFeO3 (orthorhombic Pnma ~5.56 x 7.86 x 5.55 Å; a_pc = 3.93 Å)"},
    "SrTiO3": {"A": "Sr", "B": "Ti", "X": "O", "a": 3.905, "note": "cubic SrTiO3 (Pm-3m), a = 3.905 Å"},
}
REFERENCE_COLUMNS = ["phase", "formula", "source", "material_id", "crystal_system", "a_ang", "h", "k", "l", "hkl",
                     "d_ang", "multiplicity", "two_theta_cu_deg", "xrd_rel_intensity", "note"]


def cubic_perovskite(A: str, B: str, X: str, a: float):
    """Idealised cubic perovskite ABX3 (Pm-3m), 5 atoms."""
    from pymatgen.core import Lattice, Structure

    if a <= 0:
        raise ValueError(f"a must be > 0, got {a}")
    return Structure(Lattice.cubic(a), [B, A, X, X, X],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])


def spacings(structure, max_index: int = 2) -> list[dict]:
    """Reflection families of `structure` (as given) with |h|,|k|,|l| <= max_index, largest d first."""
    from pymatgen.analysis.diffraction.xrd import XRDCalculator

    if max_index < 1:
        raise ValueError(f"max_index must be >= 1, got {max_index}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pat = XRDCalculator("CuKa").get_pattern(structure, scaled=True, two_theta_range=(0, 180))
    rows = []
    for x, y, fams, d in zip(pat.x, pat.y, pat.hkls, pat.d_hkls):
        for fam in fams:
            hkl = tuple(int(v) for v in fam["hkl"])
            if len(hkl) == 4:  # hexagonal (h k i l) -> (h k l)
                hkl = (hkl[0], hkl[1], hkl[3])
            if max(abs(v) for v in hkl) > max_index:
                continue
            rows.append({"h": hkl[0], "k": hkl[1], "l": hkl[2],
                         "hkl": "(" + " ".join(str(v) for v in hkl) + ")",
                         "d_ang": float(d), "multiplicity": int(fam["multiplicity"]),
                         "two_theta_cu_deg": float(x), "xrd_rel_intensity": float(y)})
    return sorted(rows, key=lambda r: (-r["d_ang"], r["hkl"]))


def reference_spacings(phases: Iterable[str] = ("LaFeO3", "SrTiO3"), *, max_index: int = 2,
                       structures: pl.DataFrame | None = None,
                       custom: Mapping[str, Mapping] | None = None) -> pl.DataFrame:
    """Rows of `REFERENCE_COLUMNS` for each phase: idealised cubic perovskite + matches in the data.

    custom: extra/overriding phase definitions {name: {"A":..., "B":..., "X":..., "a":..., "note":...}}.
    """
    from pymatgen.core import Composition

    defs = {**PEROVSKITES, **(custom or {})}
    out: list[dict] = []
    for phase in phases:
        if phase not in defs:
            raise ValueError(f"phases: no definition for {phase!r}; known: {sorted(defs)} (pass custom=...)")
        d = defs[phase]
        formula = Composition(f"{d['A']}{d['B']}{d['X']}3").reduced_formula
        for r in spacings(cubic_perovskite(d["A"], d["B"], d["X"], d["a"]), max_index):
            out.append({"phase": phase, "formula": formula, "source": "idealised cubic perovskite",
                        "material_id": None, "crystal_system": "cubic", "a_ang": float(d["a"]), **r,
                        "note": d.get("note")})
        if structures is not None and len(structures):
            from mmlake.crystal.structures import parse_structure
            from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

            for row in structures.filter(pl.col("formula") == formula).iter_rows(named=True):
                s = SpacegroupAnalyzer(parse_structure(row["cif"]), symprec=0.1).get_conventional_standard_structure()
                for r in spacings(s, max_index):
                    out.append({"phase": phase, "formula": formula, "source": f"data:{row['material_id']}",
                                "material_id": row["material_id"], "crystal_system": row["crystal_system"],
                                "a_ang": float(s.lattice.a), **r,
                                "note": f"conventional cell of {row['material_id']} ({row['spacegroup_symbol']})"})
    schema = {"phase": pl.String, "formula": pl.String, "source": pl.String, "material_id": pl.String,
              "crystal_system": pl.String, "a_ang": pl.Float64, "h": pl.Int32, "k": pl.Int32, "l": pl.Int32,
              "hkl": pl.String, "d_ang": pl.Float64, "multiplicity": pl.Int32, "two_theta_cu_deg": pl.Float64,
              "xrd_rel_intensity": pl.Float64, "note": pl.String}
    return pl.DataFrame(out, schema=schema).select(REFERENCE_COLUMNS)


def reference_table(frame: pl.DataFrame, dataset: str | None) -> pl.DataFrame:
    """The `crystal_reference_spacings` lake table (without materialization_id)."""
    return frame.with_columns(pl.lit(dataset, pl.String).alias("dataset")).select(["dataset", *REFERENCE_COLUMNS])
