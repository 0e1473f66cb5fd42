"""Magpie-style composition features (Ward et al. 2016) from pymatgen's element data.

Why not matminer's `ElementProperty.from_preset("magpie")`: matminer is not installed here (and is
not a declared dependency); its Magpie preset reads Magpie's own element tables. pymatgen, already a
dependency, carries the same kind of periodic-table data, so the features are computed here:
the same six fraction-weighted statistics (mean, average deviation, min, max, range, mode) over
20 elemental properties, plus Magpie's stoichiometric L_p norms (p = 0, 2, 3, 5, 7, 10).
126 features in all (`FEATURE_NAMES`). They are Magpie-*style*: covalent radius, ground-state
volume/band gap/magnetic moment and elemental space group (Magpie tables) are replaced by pymatgen's
empirical atomic radius, molar volume, first ionisation energy and electron affinity.

Statistics (f_i atomic fraction, p_i property of element i):
  mean = sum f_i p_i; avg_dev = sum f_i |p_i - mean|; min/max/range over present elements;
  mode = p of the element with the largest fraction (ties: the smallest p), as Magpie.

Valence counts (NsValence ... NfValence) are the electrons outside the noble-gas core in pymatgen's
`electronic_structure` ("[Ar].3d10.4s2.4p5" -> s 2, p 5, d 10, f 0), Magpie's convention; unfilled
counts are capacity - occupancy for each partly or fully occupied subshell (2, 6, 10, 14).

Missing elemental data (pymatgen has no Pauling X for He/Ne/Ar, no atomic radius for He/Ne/Kr/Xe/Rn/
Fr/Cm/Es/Lr, no molar volume for Fr/Lr): imputed with the value of the nearest element of the same
group (closest row, the heavier one on a tie) that has it, else the median over Z = 1..103. Every
imputation used by a structure is reported as (material_id, element, property, value, rule), or,
with `missing="skip"`, the structure is skipped and counted.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import numpy as np
import polars as pl

Progress = Callable[[str, int, int], None]

PROPERTIES = (
    "Number", "MendeleevNumber", "AtomicWeight", "MeltingT", "Column", "Row", "AtomicRadius",
    "Electronegativity", "NsValence", "NpValence", "NdValence", "NfValence", "NValence",
    "NsUnfilled", "NpUnfilled", "NdUnfilled", "NfUnfilled", "NUnfilled", "MolarVolume", "IonizationEnergy",
)
STATS = ("mean", "avg_dev", "min", "max", "range", "mode")
NORMS = (0, 2, 3, 5, 7, 10)
FEATURE_META = [(f"{s}_{p}", p, s) for p in PROPERTIES for s in STATS] + [(f"L{p}_norm", "stoichiometry", f"L{p}")
                                                                           for p in NORMS]
FEATURE_NAMES = [m[0] for m in FEATURE_META]
_CAP = {"s": 2, "p": 6, "d": 10, "f": 14}
MAX_Z = 103


def _valence(electronic_structure: str) -> dict[str, float]:
    occ = {"s": 0, "p": 0, "d": 0, "f": 0}
    for term in electronic_structure.split("."):
        m = re.fullmatch(r"(\d+)([spdf])(\d+)", term.strip())
        if m:
            occ[m.group(2)] += int(m.group(3))
    unf = {k: (_CAP[k] - v if v > 0 else 0) for k, v in occ.items()}
    return {
        "NsValence": occ["s"], "NpValence": occ["p"], "NdValence": occ["d"], "NfValence": occ["f"],
        "NValence": sum(occ.values()),
        "NsUnfilled": unf["s"], "NpUnfilled": unf["p"], "NdUnfilled": unf["d"], "NfUnfilled": unf["f"],
        "NUnfilled": sum(unf.values()),
    }


def _raw_properties(symbol: str) -> dict[str, float | None]:
    from pymatgen.core import Element

    el = Element(symbol)

    def num(v):
        try:
            x = float(v)
        except (TypeError, ValueError):
            return None
        return x if np.isfinite(x) else None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = {
            "Number": num(el.Z), "MendeleevNumber": num(el.mendeleev_no), "AtomicWeight": num(el.atomic_mass),
            "MeltingT": num(el.melting_point), "Column": num(el.group), "Row": num(el.row),
            "AtomicRadius": num(el.atomic_radius), "Electronegativity": num(el.X),
            "MolarVolume": num(el.molar_volume), "IonizationEnergy": num(el.ionization_energy),
        }
        out.update(_valence(el.electronic_structure))
    return out


@lru_cache(maxsize=1)
def element_table() -> tuple[dict[str, np.ndarray], dict[tuple[str, str], tuple[float, str]]]:
    """(symbol -> property vector with imputations, (symbol, property) -> (imputed value, rule))."""
    from pymatgen.core import Element

    raw = {Element.from_Z(z).symbol: _raw_properties(Element.from_Z(z).symbol) for z in range(1, MAX_Z + 1)}
    imputed: dict[tuple[str, str], tuple[float, str]] = {}
    medians = {p: float(np.median([r[p] for r in raw.values() if r[p] is not None])) for p in PROPERTIES}
    table = {}
    for sym, r in raw.items():
        vec = []
        for p in PROPERTIES:
            v = r[p]
            if v is None:
                grp, row = r["Column"], r["Row"]
                cands = [(abs(o["Row"] - row), -o["Row"], s) for s, o in raw.items()
                         if o["Column"] == grp and o[p] is not None and s != sym]
                if cands:
                    src = min(cands)[2]
                    v, rule = raw[src][p], f"group neighbour {src}"
                else:
                    v, rule = medians[p], "median over Z=1..103"
                imputed[(sym, p)] = (v, rule)
            vec.append(v)
        table[sym] = np.asarray(vec, dtype=np.float64)
    return table, imputed


def featurize_fractions(symbols: list[str], fractions: np.ndarray) -> np.ndarray:
    """126 Magpie-style features of one composition (atomic fractions need not be normalised)."""
    table, _ = element_table()
    f = np.asarray(fractions, dtype=np.float64)
    f = f / f.sum()
    P = np.stack([table[s] for s in symbols])  # (n_el, n_prop)
    mean = f @ P
    avg_dev = f @ np.abs(P - mean)
    mn, mx = P.min(0), P.max(0)
    top = np.flatnonzero(f >= f.max() - 1e-12)
    mode = P[top].min(0)
    stats = np.stack([mean, avg_dev, mn, mx, mx - mn, mode], axis=1).reshape(-1)  # property-major
    norms = [float(len(f))] + [float((f ** p).sum() ** (1.0 / p)) for p in NORMS[1:]]
    return np.concatenate([stats, norms])


@dataclass
class CompositionFeatures:
    """Feature matrix (n, 126) float32 in `frame` row order, names, and the imputation report."""

    features: np.ndarray
    names: list[str]
    frame: pl.DataFrame  # material_id, split, formula, n_elements, n_imputed
    imputed: list[tuple[str, str, str, float, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def table(self, dataset: str) -> pl.DataFrame:
        """The `composition_features` lake table (features as FLOAT[] in `FEATURE_NAMES` order);
        skipped structures get a row with features NULL and the skip_reason."""
        ok = self.frame.with_columns(
            pl.lit(dataset).alias("dataset"),
            pl.Series("features", self.features.tolist(), dtype=pl.List(pl.Float32)),
            pl.lit(None, pl.String).alias("skip_reason"))
        bad = pl.DataFrame({"dataset": [dataset] * len(self.skipped), "material_id": [m for m, _ in self.skipped],
                            "skip_reason": [r for _, r in self.skipped]},
                           schema={"dataset": pl.String, "material_id": pl.String, "skip_reason": pl.String})
        cols = ["dataset", "material_id", "split", "formula", "n_elements", "n_imputed", "imputed", "features",
                "skip_reason"]
        return pl.concat([ok.select(cols), bad], how="diagonal_relaxed").select(cols)

    def names_table(self, dataset: str) -> pl.DataFrame:
        """The `composition_feature_names` lake table: position (1-based, as DuckDB list indexing)."""
        return pl.DataFrame({"dataset": dataset, "position": list(range(1, len(self.names) + 1)),
                             "feature": [m[0] for m in FEATURE_META],
                             "property": [m[1] for m in FEATURE_META], "stat": [m[2] for m in FEATURE_META]})

    @classmethod
    def from_table(cls, table: pl.DataFrame) -> "CompositionFeatures":
        skipped = []
        if "skip_reason" in table.columns:
            bad = table.filter(pl.col("skip_reason").is_not_null())
            skipped = list(zip(bad["material_id"].to_list(), bad["skip_reason"].to_list()))
            table = table.filter(pl.col("skip_reason").is_null())
        feats = np.asarray(table["features"].to_list(), dtype=np.float32).reshape(len(table), -1)
        if feats.shape[1] != len(FEATURE_NAMES):
            raise ValueError(f"table: features have {feats.shape[1]} columns, this code makes {len(FEATURE_NAMES)}")
        return cls(features=feats, names=list(FEATURE_NAMES),
                   frame=table.select(["material_id", "split", "formula", "n_elements", "n_imputed", "imputed"]),
                   skipped=skipped)


def composition_features(structures: pl.DataFrame, *, missing: str = "impute",
                         progress: Progress | None = None) -> CompositionFeatures:
    """Magpie-style features for each row of a `structures` frame (uses its `formula`).

    missing: "impute" (default; see module doc) or "skip" (structures with an element lacking a
    property are skipped and listed in `skipped`).
    """
    from pymatgen.core import Composition

    if missing not in ("impute", "skip"):
        raise ValueError(f"missing must be 'impute' or 'skip', got {missing!r}")
    _, imputations = element_table()
    rows, feats, report, skipped = [], [], [], []
    mids, splits, formulas = (structures[c].to_list() for c in ("material_id", "split", "formula"))
    for i, (mid, split, formula) in enumerate(zip(mids, splits, formulas)):
        comp = Composition(formula).element_composition
        syms = [el.symbol for el in comp.elements]
        if any(el.Z > MAX_Z for el in comp.elements):
            skipped.append((mid, f"element beyond Z={MAX_Z} in {formula}"))
            continue
        hits = [(mid, s, p, *imputations[(s, p)]) for s in syms for p in PROPERTIES if (s, p) in imputations]
        if hits and missing == "skip":
            skipped.append((mid, "missing elemental data: " + ", ".join(f"{s}.{p}" for _, s, p, _, _ in hits)))
            continue
        report.extend(hits)
        feats.append(featurize_fractions(syms, np.array([comp[s] for s in syms])))
        rows.append({"material_id": mid, "split": split, "formula": formula, "n_elements": len(syms),
                     "n_imputed": len(hits), "imputed": [f"{s}.{p}" for _, s, p, _, _ in hits]})
        if progress is not None and (i + 1) % 200 == 0:
            progress("composition_features", i + 1, len(mids))
    if progress is not None:
        progress("composition_features", len(mids), len(mids))
    schema = {"material_id": pl.String, "split": pl.String, "formula": pl.String, "n_elements": pl.Int32,
              "n_imputed": pl.Int32, "imputed": pl.List(pl.String)}
    X = np.asarray(feats, dtype=np.float32).reshape(len(feats), len(FEATURE_NAMES))
    return CompositionFeatures(features=X, names=list(FEATURE_NAMES), frame=pl.DataFrame(rows, schema=schema),
                               imputed=report, skipped=skipped)
