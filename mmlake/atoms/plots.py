"""Pictures (PNG bytes, Pillow via :mod:`mmlake.raster`): the column overlay on the HAADF image and
a per-chip order-parameter map. Both draw from the ``atom_columns`` / ``chip_order`` frames, nothing else."""

from __future__ import annotations

import numpy as np

from mmlake import raster

_SUB_COLOURS = {"A": (255, 59, 48), "B": (0, 200, 255)}
_NO_LATTICE = (255, 214, 10)


def column_overlay(image: np.ndarray, columns, title: str = "", *, max_columns: int = 60000,
                   panel_px: int = 480) -> bytes:
    """HAADF image (1-99 % contrast) with every column: a dot coloured by sublattice where its local
    lattice fits, a yellow cross where it does not (legend with the counts)."""
    img = np.asarray(image, dtype=np.float64)
    base = raster.colourise(img, "gray", percentiles=(1, 99))[0]
    n = len(columns)
    points, legend = [], []
    if n:
        cols = columns if n <= max_columns else columns.sample(max_columns, seed=0)
        y, x = cols["y_px"].to_numpy(), cols["x_px"].to_numpy()
        fit = cols["lattice_fit"].fill_null(False).to_numpy().astype(bool)
        sub = cols["sublattice"].to_numpy()
        for lab, colour in _SUB_COLOURS.items():
            m = fit & (sub == lab)
            if m.any():
                points.append((y[m], x[m], colour, "."))
                legend.append((f"{lab} ({int(m.sum())})", colour))
        if (~fit).any():
            points.append((y[~fit], x[~fit], _NO_LATTICE, "x"))
            legend.append((f"no lattice ({int((~fit).sum())})", _NO_LATTICE))
    panel = raster.Panel(base, f"{title}\n{n} columns".strip(), legend=legend, points=points)
    return raster.compose([panel], panel_px=panel_px)


def order_map(order, n_rows: int, n_cols: int, parameter: str = "disorder", title: str = "", *,
              panel_px: int = 320) -> bytes:
    """Chip map of one ``chip_order`` parameter (chip_index = row * n_cols + col; nulls grey)."""
    import polars as pl

    if parameter not in order.columns:
        raise ValueError(f"parameter {parameter!r} is not a chip_order column")
    if len(order) != n_rows * n_cols:
        raise ValueError(f"order has {len(order)} rows for a {n_rows}x{n_cols} grid")
    v = order.sort("chip_index")[parameter].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(n_rows, n_cols)
    if parameter in ("disorder", "lattice_fraction"):
        rgb, lo, hi = raster.colourise(v, "magma", lo=0.0, hi=1.0)
    else:
        rgb, lo, hi = raster.colourise(v, "magma", percentiles=(2, 98))
    panel = raster.Panel(rgb, f"{title}\n{parameter} per chip".strip(), colourbar=("magma", lo, hi))
    return raster.compose([panel], panel_px=panel_px)
