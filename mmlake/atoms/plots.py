"""Pictures (PNG bytes, matplotlib Agg): the column overlay on the HAADF image and a per-chip
order-parameter map. Both draw from the ``atom_columns`` / ``chip_order`` frames, nothing else."""

from __future__ import annotations

import numpy as np

_SUB_COLOURS = {"A": "#ff3b30", "B": "#00c8ff"}


def _fig(w: float, h: float):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, 1, figsize=(w, h))


def _png(fig, dpi: int) -> bytes:
    from mmlake.plots import to_png

    return to_png(fig, dpi=dpi)


def column_overlay(image: np.ndarray, columns, title: str = "", *, max_columns: int = 60000,
                   size_in: float = 5.0, dpi: int = 90) -> bytes:
    """HAADF image (1-99 % contrast) with every column: filled dot coloured by sublattice where its
    local lattice fits, a cross where it does not."""
    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    fig, ax = _fig(size_in * min(1.6, w / h) if h else size_in, size_in)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0, 1)
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest")
    n = len(columns)
    ms = float(np.clip(180.0 / np.sqrt(max(n, 1)), 0.3, 4.0))
    if n:
        cols = columns if n <= max_columns else columns.sample(max_columns, seed=0)
        y, x = cols["y_px"].to_numpy(), cols["x_px"].to_numpy()
        fit = cols["lattice_fit"].fill_null(False).to_numpy().astype(bool)
        sub = cols["sublattice"].to_numpy()
        for lab, colour in _SUB_COLOURS.items():
            m = fit & (sub == lab)
            if m.any():
                ax.plot(x[m], y[m], ".", ms=ms, color=colour, label=f"{lab} ({int(m.sum())})")
        if (~fit).any():
            ax.plot(x[~fit], y[~fit], "x", ms=ms, mew=0.6, color="#ffd60a", label=f"no lattice ({int((~fit).sum())})")
        ax.legend(loc="upper right", fontsize=6, markerscale=2, framealpha=0.6)
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.set_title(f"{title}\n{n} columns".strip(), fontsize=8)
    ax.axis("off")
    return _png(fig, dpi)


def order_map(order, n_rows: int, n_cols: int, parameter: str = "disorder", title: str = "", *,
              size_in: float = 4.0, dpi: int = 90) -> bytes:
    """Chip map of one ``chip_order`` parameter (chip_index = row * n_cols + col; nulls grey)."""
    import polars as pl

    if parameter not in order.columns:
        raise ValueError(f"parameter {parameter!r} is not a chip_order column")
    if len(order) != n_rows * n_cols:
        raise ValueError(f"order has {len(order)} rows for a {n_rows}x{n_cols} grid")
    v = order.sort("chip_index")[parameter].cast(pl.Float64).fill_null(np.nan).to_numpy().reshape(n_rows, n_cols)
    fig, ax = _fig(size_in * min(1.6, n_cols / max(n_rows, 1)) + 0.8, size_in)
    cmap = __import__("matplotlib").colormaps["magma"].with_extremes(bad="#9e9e9e")
    finite = v[np.isfinite(v)]
    vmin, vmax = (0.0, 1.0) if parameter in ("disorder", "lattice_fraction") else (
        (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0.0, 1.0))
    im = ax.imshow(np.ma.masked_invalid(v), cmap=cmap, vmin=vmin, vmax=vmax if vmax > vmin else vmin + 1e-9,
                   interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04).ax.tick_params(labelsize=6)
    ax.set_title(f"{title}\n{parameter} per chip".strip(), fontsize=8)
    ax.axis("off")
    return _png(fig, dpi)
