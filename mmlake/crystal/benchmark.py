"""Held-out comparison in the layout of the UniMat preprint's Tables 2 and 3.

Metrics on the `test` split, per variant (xrd, composition, fused = XRD+composition aligned+fused):
- lattice lengths MAE (Å): mean over a, b, c (Niggli cell) of |pred - true|; a/b/c separately too;
- lattice angles MAE (deg): mean over alpha, beta, gamma;
- formation energy MAE (eV/atom) (NULL when the task is unavailable);
- crystal-system accuracy (%) overall and per crystal system (Table 3);
- silhouette score of the test embeddings (fusion-block output) labelled by crystal system, cosine
  metric on the raw embedding (the preprint does not say whether it scored the raw or the t-SNE
  space; the raw space is the one the heads see).
A `baseline` row predicts the training mean / majority class: anything worth keeping must beat it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import polars as pl

from mmlake.crystal import CRYSTAL_SYSTEMS

# UniMat preprint (Ock et al.), full MP-20 (45,231 structures, 60/20/20 split).
PREPRINT_TABLE1 = pl.DataFrame({
    "variant": ["structure_graph", "xrd", "structure_aligned_xrd"],
    "modality": ["Structure graph / GNN (DimeNet++)", "XRD 1D-vector / CNN", "Structure (pre-train w/ align) / GNN"],
    "lengths_mae": [0.203, 0.173, 0.136], "angles_mae": [6.052, 4.487, 4.491], "crystal_system_acc": [83.2, 83.0, 83.1],
})
PREPRINT_TABLE2 = pl.DataFrame({
    "variant": ["structure_graph", "xrd", "composition", "fused"],
    "modality": ["Structure graph / GNN (DimeNet++)", "XRD 1D-vector / CNN", "Composition elemental features / MLP",
                 "XRD & composition (align+fuse)"],
    "lengths_mae": [0.203, 0.173, 0.330, 0.128],
    "angles_mae": [6.052, 4.487, 9.639, 4.385],
    "energy_mae": [0.023, 0.314, 0.059, 0.088],
    "crystal_system_acc": [83.2, 83.0, 58.5, 85.1],
    "silhouette": [None, -0.028, -0.072, 0.132],
})
PREPRINT_TABLE3 = pl.DataFrame({
    "crystal_system": ["cubic", "hexagonal", "trigonal", "tetragonal", "orthorhombic", "monoclinic", "triclinic"],
    "train_ratio": [22.9, 19.4, 11.3, 16.7, 16.7, 15.0, 4.2],
    "test_ratio": [23.8, 19.1, 10.7, 17.3, 19.1, 14.2, 4.1],
    "accuracy_fused": [98.1, 83.6, 80.0, 83.3, 82.0, 78.1, 72.6],
})
MODALITY = {"baseline": "train mean / majority class", "xrd": "XRD 1D-vector / CNN",
            "composition": "Composition Magpie-style / MLP", "fused": "XRD & composition (align+fuse)"}
METRICS = {"lengths_mae": "angstrom", "angles_mae": "deg", "energy_mae": "eV/atom", "crystal_system_acc": "%",
           "silhouette": "1", "a_mae": "angstrom", "b_mae": "angstrom", "c_mae": "angstrom"}


@dataclass
class BenchmarkResult:
    summary: pl.DataFrame      # one row per variant (this work)
    per_system: pl.DataFrame   # Table 3 layout: one row per crystal system
    side_by_side: pl.DataFrame  # this work next to the preprint's Table 2
    rows: pl.DataFrame         # long format for the crystal_benchmark lake table
    predictions: dict[str, dict[str, np.ndarray]]

    def table(self, dataset: str) -> pl.DataFrame:
        return self.rows.with_columns(pl.lit(dataset).alias("dataset")).select(["dataset", *self.rows.columns])


def _silhouette(emb: np.ndarray, labels: np.ndarray) -> float | None:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2 or len(labels) <= len(np.unique(labels)):
        return None
    return float(silhouette_score(emb, labels, metric="cosine"))


def _metrics(pred: Mapping[str, np.ndarray], arr, idx: np.ndarray, energy_ok: bool) -> dict[str, float | None]:
    dl = np.abs(pred["lengths"] - arr.lengths[idx])
    da = np.abs(pred["angles"] - arr.angles[idx])
    e_true = arr.energy[idx]
    em = np.isfinite(e_true)
    return {
        "lengths_mae": float(dl.mean()), "angles_mae": float(da.mean()),
        "a_mae": float(dl[:, 0].mean()), "b_mae": float(dl[:, 1].mean()), "c_mae": float(dl[:, 2].mean()),
        "energy_mae": float(np.abs(pred["energy"][em] - e_true[em]).mean()) if energy_ok and em.any() else None,
        "crystal_system_acc": float(100.0 * (pred["crystal_system"] == arr.crystal_system[idx]).mean()),
        "silhouette": _silhouette(pred["embedding"], arr.crystal_system[idx]) if "embedding" in pred else None,
    }


def baseline_predictions(arr, idx: np.ndarray) -> dict[str, np.ndarray]:
    tr = arr.subset("train")
    e = arr.energy[tr]
    n = len(idx)
    return {"lengths": np.repeat(arr.lengths[tr].mean(0, keepdims=True), n, 0),
            "angles": np.repeat(arr.angles[tr].mean(0, keepdims=True), n, 0),
            "energy": np.full(n, np.nanmean(e) if np.isfinite(e).any() else np.nan),
            "crystal_system": np.full(n, np.bincount(arr.crystal_system[tr], minlength=7).argmax())}


def run_benchmark(models: Mapping[str, object], arr, *, split: str = "test", device: str = "cpu") -> BenchmarkResult:
    """Evaluate trained models (variant -> TrainedModel) on `split` of a CrystalArrays."""
    from mmlake.crystal.train import predict

    idx = arr.subset(split)
    if len(idx) == 0:
        raise ValueError(f"split: no rows with split={split!r} to benchmark on")
    preds = {"baseline": baseline_predictions(arr, idx)}
    shas = {"baseline": None}
    for variant, tm in models.items():
        preds[variant] = predict(tm.model, arr, idx, device=device)
        shas[variant] = tm.sha256
    summary_rows, long_rows = [], []
    pre = {r["variant"]: r for r in PREPRINT_TABLE2.iter_rows(named=True)}
    for variant, pr in preds.items():
        m = _metrics(pr, arr, idx, arr.energy_available)
        summary_rows.append({"variant": variant, "modality": MODALITY.get(variant, variant), "n_test": len(idx), **m})
        for metric, value in m.items():
            long_rows.append({"variant": variant, "metric": metric, "crystal_system": None, "value": value,
                              "unit": METRICS[metric], "n": len(idx),
                              "preprint_value": pre.get(variant, {}).get(metric), "weights_sha256": shas[variant]})
    summary = pl.DataFrame(summary_rows, schema={"variant": pl.String, "modality": pl.String, "n_test": pl.Int32,
                                                 **{k: pl.Float64 for k in summary_rows[0] if k in METRICS}})

    # Table 3: per crystal system
    tr = arr.subset("train")
    cs_rows = []
    p3 = {r["crystal_system"]: r for r in PREPRINT_TABLE3.iter_rows(named=True)}
    for k, name in sorted(enumerate(CRYSTAL_SYSTEMS), key=lambda t: -t[0]):
        sel = arr.crystal_system[idx] == k
        row = {"crystal_system": name,
               "train_ratio": float(100.0 * (arr.crystal_system[tr] == k).mean()),
               "test_ratio": float(100.0 * sel.mean()), "n_test": int(sel.sum())}
        for variant, pr in preds.items():
            acc = float(100.0 * (pr["crystal_system"][sel] == k).mean()) if sel.any() else None
            row[f"accuracy_{variant}"] = acc
            long_rows.append({"variant": variant, "metric": "crystal_system_acc", "crystal_system": name, "value": acc,
                              "unit": "%", "n": int(sel.sum()),
                              "preprint_value": p3[name]["accuracy_fused"] if variant == "fused" else None,
                              "weights_sha256": shas[variant]})
        row["preprint_train_ratio"] = p3[name]["train_ratio"]
        row["preprint_test_ratio"] = p3[name]["test_ratio"]
        row["preprint_accuracy_fused"] = p3[name]["accuracy_fused"]
        cs_rows.append(row)
    per_system = pl.DataFrame(cs_rows, schema={k: (pl.String if k == "crystal_system" else pl.Int32 if k == "n_test"
                                                   else pl.Float64) for k in cs_rows[0]})

    cols = ["variant", "modality", "lengths_mae", "angles_mae", "energy_mae", "crystal_system_acc", "silhouette"]
    ours = summary.select(cols).with_columns(pl.lit(f"this work ({split}, n={len(idx)})").alias("source"))
    theirs = PREPRINT_TABLE2.with_columns(pl.lit("preprint (MP-20 full)").alias("source")).select(ours.columns)
    side = pl.concat([ours, theirs.cast(ours.schema)], how="vertical")
    schema = {"variant": pl.String, "metric": pl.String, "crystal_system": pl.String, "value": pl.Float64,
              "unit": pl.String, "n": pl.Int32, "preprint_value": pl.Float64, "weights_sha256": pl.String}
    return BenchmarkResult(summary=summary, per_system=per_system, side_by_side=side,
                           rows=pl.DataFrame(long_rows, schema=schema), predictions=preds)
