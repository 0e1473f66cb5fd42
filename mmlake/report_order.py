"""The campaign report's order pictures (issue 17): column overlay and chip disorder map per session,
and the disordered/ordered film contrast of the order parameters against dose.

Read from `atom_columns`, `chip_order` and `order_contrast_by_session` (assets `atom_columns`,
`region_order`); lakes without them give no pictures, never an error (mmlake.report's rule).
"""

from __future__ import annotations

import numpy as np
import polars as pl

#: columns drawn per session at most (evenly thinned): a 512 px demo image holds ~2,000, a 2k image ~20,000
MAX_COLUMNS = 4000
#: order parameters whose contrast the report plots (mmlake.atoms.region.CONTRAST_PARAMETERS has more)
CONTRAST_SHOWN = ("disorder", "rms_displacement_nm", "lattice_fraction")


def _table(lake, name: str) -> bool:
    return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                           [name])["n"][0])


def collect_order(lake, ids: list[str]) -> dict[str, pl.DataFrame]:
    """``{"columns", "order", "contrast"}`` frames of the sessions ``ids`` (empty where missing)."""
    out = {"columns": pl.DataFrame(), "order": pl.DataFrame(), "contrast": pl.DataFrame()}
    if not ids:
        return out
    if _table(lake, "atom_columns"):
        # thinned in SQL: every k-th column of a session, so the HTML stays small
        out["columns"] = lake.query(
            "select session_id, y_px, x_px, sublattice from (select *, row_number() over (partition by session_id "
            "order by column_index) as i, count(*) over (partition by session_id) as n from atom_columns "
            "where session_id in (select unnest(?::VARCHAR[]))) "
            f"where (i - 1) % greatest(1, ceil(n / {MAX_COLUMNS})::INTEGER) = 0", [ids])
    if _table(lake, "chip_order"):
        out["order"] = lake.query("select session_id, chip_index, row, col, disorder, rms_displacement_nm "
                                  "from chip_order where session_id in (select unnest(?::VARCHAR[]))", [ids])
    if _table(lake, "order_contrast"):
        out["contrast"] = lake.query("select * from order_contrast_by_session where session_id in "
                                     "(select unnest(?::VARCHAR[]))", [ids])
    return out


def order_figure(sid: str, image, grid_row: dict | None, columns: pl.DataFrame, order: pl.DataFrame):
    """HAADF with the found columns (A bright, B dim) next to the chip disorder map; None without data."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    cols = columns.filter(pl.col("session_id") == sid) if len(columns) else columns
    od = order.filter(pl.col("session_id") == sid) if len(order) else order
    if grid_row is None or (cols.is_empty() and od.is_empty()):
        return None
    n_rows, n_cols, chip = int(grid_row["n_rows"]), int(grid_row["n_cols"]), int(grid_row["chip_px"])
    oy, ox = int(grid_row.get("origin_y") or 0), int(grid_row.get("origin_x") or 0)
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.04,
                        subplot_titles=["atom columns found (A bright, B dim)", "chip disorder (0 lattice .. 1 none)"])
    if image is not None:
        im, f = image
        lo, hi = (float(v) for v in np.percentile(im, [1, 99]))
        # the binned image covers the chip grid (origin 0); column pixels are in the registered frame
        fig.add_trace(go.Heatmap(z=im, x0=0.5 * (f - 1), dx=f, y0=0.5 * (f - 1), dy=f, colorscale="Gray",
                                 zmin=lo, zmax=hi, showscale=False, hoverinfo="skip"), row=1, col=1)
    for lattice, color in (("A", "#ff7f0e"), ("B", "#1f77b4")):
        part = cols.filter(pl.col("sublattice") == lattice) if len(cols) else cols
        if len(part):
            fig.add_trace(go.Scattergl(x=(part["x_px"] - ox).to_list(), y=(part["y_px"] - oy).to_list(),
                                       mode="markers", marker={"size": 3, "color": color}, name=f"{lattice} columns",
                                       hoverinfo="skip"), row=1, col=1)
    if len(od):
        z = np.full(n_rows * n_cols, np.nan)
        z[od["chip_index"].to_numpy()] = od["disorder"].cast(pl.Float64).fill_null(np.nan).to_numpy()
        fig.add_trace(go.Heatmap(z=z.reshape(n_rows, n_cols), x0=0.5 * chip, dx=chip, y0=0.5 * chip, dy=chip,
                                 colorscale="Viridis", zmin=0, zmax=1, colorbar={"title": "disorder", "len": 0.8},
                                 hovertemplate="chip (%{y:.0f}, %{x:.0f}) px<br>disorder %{z:.2f}<extra></extra>"),
                      row=1, col=2)
    for c in (1, 2):
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{c if c > 1 else ''}", showticklabels=False, row=1, col=c)
        fig.update_xaxes(showticklabels=False, row=1, col=c)
    fig.update_layout(height=380, margin={"t": 50, "l": 10, "r": 10, "b": 10}, showlegend=False,
                      title=f"{sid}: column order")
    return fig


def contrast_figure(contrast: pl.DataFrame):
    """Disordered / ordered film ratio of the order parameters vs dose (ensemble modality), 95 % bars."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if contrast.is_empty():
        return None
    c = contrast.filter((pl.col("modality").is_in(["ensemble", "truth"])) & pl.col("parameter").is_in(CONTRAST_SHOWN)
                        & pl.col("ratio").is_not_null())
    if c.is_empty():
        return None
    params = [p for p in CONTRAST_SHOWN if p in set(c["parameter"])]
    fig = make_subplots(rows=1, cols=len(params), subplot_titles=params)
    palette = {"fewshot": "#1f77b4", "louvain": "#ff7f0e", "agglomerative": "#2ca02c", "truth": "#7f7f7f"}
    for j, p in enumerate(params):
        for (method, sample), part in c.filter(pl.col("parameter") == p).group_by(["method", "sample"],
                                                                                  maintain_order=True):
            part = part.sort("dose_dpa")
            y = part["ratio"].to_numpy()
            fig.add_trace(go.Scatter(
                x=part["dose_dpa"].to_list(), y=y.tolist(), mode="lines+markers", name=f"{method} {sample}",
                legendgroup=f"{method} {sample}", showlegend=j == 0,
                line={"color": palette.get(method, "#9467bd"), "dash": "dot" if method == "truth" else "solid"},
                error_y={"type": "data", "symmetric": False, "thickness": 1,
                         "array": np.nan_to_num(part["ci_high"].fill_null(np.nan).to_numpy() - y).tolist(),
                         "arrayminus": np.nan_to_num(y - part["ci_low"].fill_null(np.nan).to_numpy()).tolist()},
                hovertemplate=f"{method} {sample}<br>dose %{{x}} dpa<br>{p}: %{{y:.2f}}x<extra></extra>"),
                row=1, col=j + 1)
        fig.add_hline(y=1, line_width=1, line_color="#999", row=1, col=j + 1)
    fig.update_xaxes(title_text="dose (dpa)")
    fig.update_yaxes(title_text="disordered / ordered film", col=1)
    fig.update_layout(height=360, margin={"t": 70, "l": 60, "r": 20, "b": 40},
                      title="Column order of the disordered against the ordered film (ensemble segmentations; "
                            "truth dotted; bars: 95 % bootstrap interval)")
    return fig
