"""The descriptor tables' layouts (``sql/schema.sql``, section descriptors) and the containers that
carry them (:class:`RegionFrames`, :class:`DescriptorTables`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

REGION_SCHEMA: dict[str, Any] = {
    "session_id": pl.Utf8, "method": pl.Utf8, "modality": pl.Utf8, "region": pl.Int32, "role": pl.Utf8,
    "role_source": pl.Utf8, "role_reason": pl.Utf8,
    "n_chips": pl.Int32, "area_nm2": pl.Float64, "eds_counts": pl.Float64,
    "d_spacing_nm": pl.Float64, "d_spacing_unc_nm": pl.Float64, "d_spacing_note": pl.Utf8,
    "lattice_strength": pl.Float64, "crystallinity": pl.Float64,
    "square_px": pl.Int32, "square_row": pl.Int32, "square_col": pl.Int32,
    # issue 13: core chips, uncertainty, superlattice, per sample x dose pooling
    "n_core_chips": pl.Int32, "boundary_share": pl.Float64, "core_eds_counts": pl.Float64,
    "d_spacing_se_nm": pl.Float64, "d_spacing_ci_low": pl.Float64, "d_spacing_ci_high": pl.Float64,
    "d_spacing_n_tiles": pl.Int32, "superlattice_nm": pl.Float64,
    "pair_d_spacing_nm": pl.Float64, "pair_d_ci_low": pl.Float64, "pair_d_ci_high": pl.Float64,
    "pair_n_acquisitions": pl.Int32,
}
COMPOSITION_SCHEMA: dict[str, Any] = {
    "session_id": pl.Utf8, "method": pl.Utf8, "modality": pl.Utf8, "region": pl.Int32,
    "element": pl.Utf8, "atomic_percent": pl.Float64,
    "counting_se": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
    "atomic_percent_core": pl.Float64, "counting_se_core": pl.Float64,
    "ci_low_core": pl.Float64, "ci_high_core": pl.Float64,
    "pair_atomic_percent": pl.Float64, "pair_ci_low": pl.Float64, "pair_ci_high": pl.Float64,
    "pair_n_acquisitions": pl.Int32, "pair_basis": pl.Utf8,
}


@dataclass(frozen=True)
class RegionFrames:
    """``regions`` (one row per region) and ``composition`` (one row per region x element)."""

    regions: pl.DataFrame
    composition: pl.DataFrame

    def __iter__(self):
        yield self.regions
        yield self.composition


@dataclass
class DescriptorTables:
    """Everything :func:`mmlake.descriptors.describe_session` produces, keyed like the lake tables.

    ``replicates`` (in memory only) holds the bootstrap replicates of every role composition, role
    d-spacing and shift, so the sessions of one sample x dose can be pooled
    (:func:`mmlake.descriptors.pool_acquisitions`)."""

    regions: pl.DataFrame
    region_composition: pl.DataFrame
    composition_shift: pl.DataFrame
    params: dict = field(default_factory=dict)  # everything that shaped the numbers, for provenance
    replicates: dict = field(default_factory=dict, repr=False)

    def tables(self) -> dict[str, pl.DataFrame]:
        """``{lake table: frame}`` for ``Lake.replace_partition``."""
        from mmlake.roles import SHIFT_TABLE

        return {"regions": self.regions, "region_composition": self.region_composition,
                SHIFT_TABLE: self.composition_shift}
