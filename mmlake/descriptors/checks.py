"""The sum check of region compositions, as a library function the lake's asset check calls.

Per (session, method, modality, region), the atomic percents of ``region_composition`` must sum
to 100 +- ``tol`` -- the whole figure and, where the region has a core, the core figure. A region
whose every element is NULL passes only if its summed spectrum really had no counts
(``regions.eds_counts`` = 0 or NULL): a NULL composition with counts is a failure (the
quantification lost a region it should have quantified), not "no data".
"""

from __future__ import annotations

from typing import Any

import polars as pl

COMPOSITION_TOLERANCE = 0.5  # at.%


def composition_frame_problems(composition: pl.DataFrame, regions: pl.DataFrame | None = None,
                               tol: float = COMPOSITION_TOLERANCE) -> tuple[list[str], dict[str, Any]]:
    """Problems of one ``region_composition`` frame (with the ``regions`` frame for the counts)."""
    if composition.is_empty():
        return [], {"note": "no region_composition rows"}
    keys = ["session_id", "method", "modality", "region"]
    cols = [c for c in ("atomic_percent", "atomic_percent_core") if c in composition.columns]
    agg = composition.group_by(keys, maintain_order=True).agg(
        pl.len().alias("n"),
        *[pl.col(c).is_not_null().sum().alias(f"{c}__valid") for c in cols],
        *[pl.col(c).sum().alias(f"{c}__total") for c in cols])
    if regions is not None and "eds_counts" in regions.columns:
        extra = [c for c in ("n_core_chips", "core_eds_counts") if c in regions.columns]
        agg = agg.join(regions.select(*keys, "eds_counts", *extra), on=keys, how="left")
    problems, worst = [], 0.0
    for g in agg.iter_rows(named=True):
        label = f"{g['session_id']} {g['method']}/{g['modality']} region {g['region']}"
        for c in cols:
            valid, total = g[f"{c}__valid"], g[f"{c}__total"]
            what = "core " if c.endswith("_core") else ""
            if valid == 0:
                counts = g.get("core_eds_counts") if c.endswith("_core") else g.get("eds_counts")
                if counts:
                    problems.append(f"{label}: {what}composition is NULL although the region has {counts:.0f} counts")
                continue
            if valid < g["n"]:
                problems.append(f"{label}: {g['n'] - valid} of {g['n']} {what}elements NULL")
                continue
            worst = max(worst, abs(total - 100.0))
            if abs(total - 100.0) > tol:
                problems.append(f"{label}: {what}atomic percents sum to {total:.3f}")
    return problems, {"groups": len(agg), "max_abs_deviation": round(worst, 6)}


def composition_problems(lake, session_id: str | None, tol: float = COMPOSITION_TOLERANCE
                         ) -> tuple[list[str], dict[str, Any]]:
    """:func:`composition_frame_problems` on what the lake holds (all sessions when ``session_id`` is
    None); the same signature as ``assets.checks.composition_problems``."""
    def exists(name):
        return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                               [name])["n"][0])

    if not exists("region_composition"):
        return [], {"note": "no region_composition table yet"}
    where, args = ("where session_id = ?", [session_id]) if session_id else ("", [])
    comp = lake.query(f"select * from region_composition {where}", args)
    if comp.is_empty():
        return [], {"note": "no region_composition rows for this session yet"}
    regions = lake.query(f"select * from regions {where}", args) if exists("regions") else None
    return composition_frame_problems(comp, regions, tol)
