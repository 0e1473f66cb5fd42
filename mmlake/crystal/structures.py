"""Load crystal structures from CSVs in the CDVAE layout (MP-20, perov_5, carbon_24, ...).

A CSV of this layout has one row per structure with a `cif` column (a CIF string) and any of the
target columns `formation_energy_per_atom`, `heat_all`, `band_gap`, `e_above_hull`, ... The loader
accepts one CSV or a folder holding `train.csv` / `val.csv` / `test.csv` (any subset), and returns a
`StructureSet`: a polars frame (one row per parsed structure), the rows it skipped with reasons and
the availability of each downstream task.

Conventions fixed here:
- Lattice parameters are those of the **Niggli-reduced cell** of the structure as given in the CIF
  (a <= b <= c), as in CDVAE's `build_crystal(niggli=True)` that MP-20 benchmarks (and UniMat) use.
- Space group and crystal system come from spglib via pymatgen's `SpacegroupAnalyzer` with
  `symprec=0.1` Å and `angle_tolerance=5` deg (Materials Project's settings). The CSV's own
  `spacegroup.number` (when present) is kept as `spacegroup_number_csv` for comparison.
- `split` is the file stem for train/val/test files. Rows from any other file (or every row with
  `resplit=True`) get a deterministic 60/20/20 split from sha256(material_id) (Xie et al.'s ratio).
- Energy target: `formation_energy_per_atom` if the CSV has it, else `heat_all` (perov_5). Without
  either, the formation-energy task is flagged unavailable (with a message) and the rest run.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl

from mmlake.crystal import CRYSTAL_SYSTEMS

REPO_ROOT = Path(__file__).resolve().parents[2]
# the excerpt shipped with mmlake (93 MP-20 structures, MIT licence: mmlake/data/mp20_demo/README.md);
# the larger sets are read by path (e.g. ../shared/data/mp20_excerpt, 1,112 structures)
DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "mp20_demo"
SPLITS = ("train", "val", "test")
ENERGY_COLUMNS = ("formation_energy_per_atom", "heat_all")  # first present is the energy target
CARRIED_TARGETS = ("formation_energy_per_atom", "heat_all", "band_gap", "e_above_hull")
TASKS = ("lattice_lengths", "lattice_angles", "formation_energy", "crystal_system")

Progress = Callable[[str, int, int], None]


@dataclass
class StructureSet:
    """Output of `load_structures`.

    frame:   one row per parsed structure (columns in `STRUCTURE_COLUMNS`, includes the CIF text).
    skipped: (source_row, material_id, reason) for every row that was not parsed, never dropped silently.
    tasks:   task -> None when available, else a message saying why it is not.
    source:  the path(s) read.
    """

    frame: pl.DataFrame
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    tasks: dict[str, str | None] = field(default_factory=dict)
    source: list[str] = field(default_factory=list)
    energy_column: str | None = None

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def table(self, dataset: str) -> pl.DataFrame:
        """The `structures` lake table (without materialization_id): parsed rows with skip_reason NULL,
        then one row per skipped CSV row (material_id, source_row, skip_reason; the rest NULL)."""
        ok = self.frame.with_columns(pl.lit(dataset).alias("dataset"), pl.lit(None, pl.String).alias("skip_reason"))
        bad = pl.DataFrame(
            {"dataset": [dataset] * len(self.skipped), "material_id": [m for _, m, _ in self.skipped],
             "source_row": [r for r, _, _ in self.skipped], "skip_reason": [why for _, _, why in self.skipped]},
            schema={"dataset": pl.String, "material_id": pl.String, "source_row": pl.Int32, "skip_reason": pl.String})
        cols = ["dataset", *STRUCTURE_COLUMNS, "skip_reason"]
        return pl.concat([ok.select(cols), bad], how="diagonal_relaxed").select(cols)

    def summary(self) -> dict:
        f = self.frame
        agree = None
        if f["spacegroup_number_csv"].null_count() < len(f):
            sub = f.filter(pl.col("spacegroup_number_csv").is_not_null())
            agree = float((sub["spacegroup_number"] == sub["spacegroup_number_csv"]).mean())
        return {
            "rows": len(f),
            "skipped": self.n_skipped,
            "splits": {s: int((f["split"] == s).sum()) for s in SPLITS},
            "crystal_systems": dict(f.group_by("crystal_system").len().sort("crystal_system").iter_rows()),
            "spacegroup_agreement_with_csv": agree,
            "energy_column": self.energy_column,
            "tasks": dict(self.tasks),
        }


STRUCTURE_COLUMNS = [
    "material_id", "split", "source_file", "source_row", "formula", "elements", "n_sites", "n_elements",
    "a", "b", "c", "alpha", "beta", "gamma", "volume", "density",
    "spacegroup_number", "spacegroup_symbol", "crystal_system", "crystal_system_index", "spacegroup_number_csv",
    "energy_target", *CARRIED_TARGETS, "cif",
]


def _csv_files(path: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(path, (list, tuple)):
        out: list[Path] = []
        for p in path:
            out.extend(_csv_files(p))
        return out
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        p = REPO_ROOT / p  # relative paths resolve against the repo root (../shared/data/...)
    if p.is_dir():
        files = [p / f"{s}.csv" for s in SPLITS if (p / f"{s}.csv").exists()]
        if not files:
            files = sorted(p.glob("*.csv"))
        if not files:
            raise ValueError(f"csv_path: folder {p} holds no CSV files (expected train.csv/val.csv/test.csv)")
        return files
    if not p.exists():
        raise ValueError(f"csv_path: {p} does not exist")
    return [p]


def _read_csv(path: Path) -> pl.DataFrame:
    try:
        df = pl.read_csv(path, infer_schema_length=0)  # everything as text; cast targets below
    except pl.exceptions.NoDataError:
        df = pl.DataFrame()
    if df.width == 0 or len(df) == 0:
        raise ValueError(f"csv_path: {path} is empty (no data rows); a CDVAE-layout CSV needs a header "
                         "and one row per structure with a `cif` column")
    if "cif" not in df.columns:
        raise ValueError(f"csv_path: {path} has no `cif` column (columns: {df.columns}); not a CDVAE-layout CSV")
    return df


def hash_split(material_id: str, fractions: tuple[float, float] = (0.6, 0.8)) -> str:
    """Deterministic 60/20/20 split from sha256(material_id): independent of row order."""
    u = int(hashlib.sha256(material_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if u < fractions[0] else "val" if u < fractions[1] else "test"


def _to_float(values: Sequence[str | None]) -> list[float | None]:
    out = []
    for v in values:
        try:
            x = float(v) if v not in (None, "") else None
            out.append(x if x is None or np.isfinite(x) else None)
        except ValueError:
            out.append(None)
    return out


def parse_structure(cif: str):
    """CIF text -> pymatgen Structure (raises ValueError with the reason)."""
    from pymatgen.core import Structure

    if cif is None or not str(cif).strip():
        raise ValueError("empty CIF")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            s = Structure.from_str(str(cif), fmt="cif")
        except Exception as exc:  # pymatgen raises many types for bad CIFs
            raise ValueError(f"CIF does not parse: {type(exc).__name__}: {str(exc)[:200]}") from exc
    if len(s) == 0:
        raise ValueError("CIF has no atom sites")
    if s.volume <= 1e-6:
        raise ValueError("CIF cell has zero volume")
    return s


def describe_structure(s, symprec: float = 0.1, angle_tolerance: float = 5.0) -> dict:
    """Symmetry, Niggli lattice and composition of one structure."""
    from pymatgen.symmetry.analyzer import SpacegroupAnalyzer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lat = s.lattice.get_niggli_reduced_lattice()
        sga = SpacegroupAnalyzer(s, symprec=symprec, angle_tolerance=angle_tolerance)
        sg_num = int(sga.get_space_group_number())
        sg_sym = str(sga.get_space_group_symbol())
        cs = str(sga.get_crystal_system())
    comp = s.composition
    a, b, c = lat.abc
    al, be, ga = lat.angles
    return {
        "formula": comp.reduced_formula,
        "elements": [el.symbol for el in comp.element_composition.elements],
        "n_sites": len(s),
        "n_elements": len(comp.element_composition.elements),
        "a": float(a), "b": float(b), "c": float(c),
        "alpha": float(al), "beta": float(be), "gamma": float(ga),
        "volume": float(s.volume), "density": float(s.density),
        "spacegroup_number": sg_num, "spacegroup_symbol": sg_sym,
        "crystal_system": cs, "crystal_system_index": CRYSTAL_SYSTEMS.index(cs),
    }


def load_structures(
    csv_path: str | Path | Sequence[str | Path] | None = None,
    *,
    symprec: float = 0.1,
    angle_tolerance: float = 5.0,
    resplit: bool = False,
    limit: int | None = None,
    progress: Progress | None = None,
) -> StructureSet:
    """Read CDVAE-layout CSV(s), parse every CIF and return a `StructureSet`.

    csv_path: a CSV, a folder with train/val/test CSVs, or a list of either; None = the MP-20
    excerpt shipped in `mmlake/data/mp20_demo` (DEFAULT_DATA).
    limit: keep only the first `limit` rows of each file (tests, quick looks).
    Bad rows (unparseable CIF, failed symmetry analysis) are listed in `skipped` with the reason.
    """
    if symprec <= 0:
        raise ValueError(f"symprec must be > 0, got {symprec}")
    files = _csv_files(DEFAULT_DATA if csv_path is None else csv_path)
    frames = []
    for f in files:
        df = _read_csv(f)
        if limit is not None:
            df = df.head(limit)
        frames.append((f, df))

    all_cols = set().union(*(set(df.columns) for _, df in frames))
    energy_col = next((c for c in ENERGY_COLUMNS if all(c in df.columns for _, df in frames)), None)
    tasks: dict[str, str | None] = {"lattice_lengths": None, "lattice_angles": None, "crystal_system": None}
    if energy_col is None:
        partial = [c for c in ENERGY_COLUMNS if c in all_cols]
        tasks["formation_energy"] = (
            f"formation-energy task unavailable: none of {list(ENERGY_COLUMNS)} is present in every CSV "
            f"({[str(f) for f, _ in frames]}; found in some: {partial}); the other tasks run"
        )
    else:
        tasks["formation_energy"] = None

    rows: list[dict] = []
    skipped: list[tuple[int, str, str]] = []
    total = sum(len(df) for _, df in frames)
    done = 0
    for f, df in frames:
        stem = f.stem if f.stem in SPLITS else None
        n = len(df)
        mids = df["material_id"].to_list() if "material_id" in df.columns else [None] * n
        sg_csv = df["spacegroup.number"].to_list() if "spacegroup.number" in df.columns else [None] * n
        targets = {c: (_to_float(df[c].to_list()) if c in df.columns else [None] * n) for c in CARRIED_TARGETS}
        cifs = df["cif"].to_list()
        for i in range(n):
            mid = str(mids[i]) if mids[i] not in (None, "") else f"{f.stem}:{i}"
            try:
                s = parse_structure(cifs[i])
                d = describe_structure(s, symprec, angle_tolerance)
            except Exception as exc:
                skipped.append((i, mid, f"{f.name}: {exc}"))
                continue
            split = hash_split(mid) if (resplit or stem is None) else stem
            sgc = sg_csv[i]
            try:
                sgc = int(float(sgc)) if sgc not in (None, "") else None
            except ValueError:
                sgc = None
            row = {"material_id": mid, "split": split, "source_file": str(f), "source_row": i, **d,
                   "spacegroup_number_csv": sgc}
            for c in CARRIED_TARGETS:
                row[c] = targets[c][i]
            row["energy_target"] = targets[energy_col][i] if energy_col else None
            row["cif"] = cifs[i]
            rows.append(row)
            done += 1
            if progress is not None and done % 100 == 0:
                progress("structures", done + len(skipped), total)
    if progress is not None:
        progress("structures", total, total)
    if not rows:
        raise ValueError(f"csv_path: no structure in {[str(f) for f, _ in frames]} could be parsed; "
                         f"first problems: {skipped[:3]}")
    schema = {
        "material_id": pl.String, "split": pl.String, "source_file": pl.String, "source_row": pl.Int32,
        "formula": pl.String, "elements": pl.List(pl.String), "n_sites": pl.Int32, "n_elements": pl.Int32,
        **{k: pl.Float64 for k in ("a", "b", "c", "alpha", "beta", "gamma", "volume", "density")},
        "spacegroup_number": pl.Int32, "spacegroup_symbol": pl.String, "crystal_system": pl.String,
        "crystal_system_index": pl.Int32, "spacegroup_number_csv": pl.Int32,
        "energy_target": pl.Float64, **{c: pl.Float64 for c in CARRIED_TARGETS}, "cif": pl.String,
    }
    # canonical row order (source_file, source_row): the same whether loaded here or reloaded from the lake,
    # so seeded training sees the same batches either way
    frame = pl.DataFrame(rows, schema=schema).select(STRUCTURE_COLUMNS).sort("source_file", "source_row")
    dup = frame["material_id"].is_duplicated()
    if dup.any():
        raise ValueError(f"csv_path: material_id values repeat across the CSVs "
                         f"(e.g. {frame.filter(dup)['material_id'].head(3).to_list()}); ids must be unique")
    if energy_col is not None and frame["energy_target"].null_count() == len(frame):
        tasks["formation_energy"] = f"formation-energy task unavailable: column {energy_col} has no numeric values"
    return StructureSet(frame=frame, skipped=skipped, tasks=tasks, source=[str(f) for f, _ in frames],
                        energy_column=energy_col)


def structures_from_table(frame: pl.DataFrame) -> StructureSet:
    """Rebuild a StructureSet from the `structures` lake table (for downstream assets)."""
    skipped = []
    if "skip_reason" in frame.columns:
        bad = frame.filter(pl.col("skip_reason").is_not_null())
        skipped = [(r["source_row"], r["material_id"], r["skip_reason"]) for r in bad.iter_rows(named=True)]
        frame = frame.filter(pl.col("skip_reason").is_null())
    f = frame.select(STRUCTURE_COLUMNS).sort("source_file", "source_row")
    has_e = f["energy_target"].null_count() < len(f)
    tasks = {"lattice_lengths": None, "lattice_angles": None, "crystal_system": None,
             "formation_energy": None if has_e else "formation-energy task unavailable: no energy targets stored"}
    return StructureSet(frame=f, skipped=skipped, tasks=tasks, source=sorted(set(f["source_file"].to_list())))
