"""Interactive per-campaign report: one self-contained plotly HTML file.

plotly.js is written INLINE into the file (no CDN): it opens offline, from a file share or an e-mail
attachment. Sections:

1. sessions of the campaign (sample, dose, chip grid, segmentations present);
2. ordered-vs-disordered film composition shift vs dose, per method / modality (``composition_shift``
   view), one panel per sample x element;
3. d-spacing of the ordered and disordered film per session and method (``regions``; amorphous regions
   have none and are listed with their reason);
4. per session: the HAADF image (binned), the chip labels of every method x modality coloured by role
   (hover: label, role, chips, d-spacing, crystallinity), the composition of ordered vs disordered film
   (Figs. 4-5), and the modality agreement (Table I) where the ``agreement`` table has rows.

Everything is read from the lake (read-only); tables that do not exist yet, or sessions without an
output, give empty sections, never an error. :func:`render_report` works on the collected frames,
so it can be tested without a lake.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from mmlake.plots import ROLE_COLORS

_ELEMENT_ORDER = ("La", "Fe", "O")
_EXTRA_COLORS = ["#e377c2", "#ff7f0e", "#2ca02c", "#d62728", "#17becf", "#aec7e8", "#98df8a", "#ffbb78"]


@dataclass
class CampaignData:
    """Frames a report is drawn from (all filtered to one campaign)."""

    campaign: str
    sessions: pl.DataFrame
    regions: pl.DataFrame = field(default_factory=pl.DataFrame)
    composition: pl.DataFrame = field(default_factory=pl.DataFrame)
    shift: pl.DataFrame = field(default_factory=pl.DataFrame)
    labels: pl.DataFrame = field(default_factory=pl.DataFrame)  # session_id, method, modality, chip_index, label
    grids: pl.DataFrame = field(default_factory=pl.DataFrame)  # chip_grids rows
    agreement: pl.DataFrame = field(default_factory=pl.DataFrame)
    images: dict = field(default_factory=dict)  # session_id -> (binned HAADF, bin factor)
    order: dict = field(default_factory=dict)  # mmlake.report_order.collect_order: columns, order, contrast


def _table(lake, name: str) -> bool:
    return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                           [name])["n"][0])


def _binned(img: np.ndarray, max_px: int = 192) -> tuple[np.ndarray, int]:
    f = max(1, math.ceil(max(img.shape) / max_px))
    h, w = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3)), f


def collect_campaign(lake, campaign: str, with_images: bool = True) -> CampaignData:
    """Read everything the report shows for ``campaign`` from the lake."""
    from mmlake.chips import ChipGrid

    sessions = lake.query("select * from sessions where campaign = ? order by sample, dose_dpa", [campaign])
    ids = sessions["session_id"].to_list() if len(sessions) else []
    data = CampaignData(campaign, sessions)
    if not ids:
        return data
    q = "select t.* from {t} t where t.session_id in (select unnest(?::VARCHAR[]))"
    for attr, name in (("regions", "regions"), ("composition", "region_composition"), ("labels", "segment_labels"),
                       ("grids", "chip_grids"), ("agreement", "agreement")):
        if _table(lake, name):
            setattr(data, attr, lake.query(q.format(t=name), [ids]))
    if _table(lake, "ordered_disordered_shift"):
        data.shift = lake.query("select * from composition_shift where campaign = ?", [campaign])
    from mmlake.report_order import collect_order

    data.order = collect_order(lake, ids)
    if with_images and len(data.grids):
        for g in data.grids.iter_rows(named=True):
            if g.get("haadf_stack_sha"):
                try:
                    grid = ChipGrid(int(g["chip_px"]), int(g["n_rows"]), int(g["n_cols"]))
                    img = grid.untile(lake.get_array(g["haadf_stack_sha"], mmap=True))
                    data.images[g["session_id"]] = _binned(np.asarray(img, dtype=np.float32))
                except Exception:  # a missing object must not cost the whole report
                    pass
    return data


def _discrete_scale(colors: list[str]):
    n = len(colors)
    if n == 1:
        return [[0, colors[0]], [1, colors[0]]]
    scale = []
    for i, c in enumerate(colors):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def _fig_html(fig, div_id: str) -> str:
    return fig.to_html(include_plotlyjs=False, full_html=False, div_id=div_id,
                       config={"displaylogo": False, "responsive": True})


def _shift_figure(shift: pl.DataFrame):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    samples = sorted(set(shift["sample"].to_list()))
    elements = sorted(set(shift["element"].to_list()), key=lambda e: (_ELEMENT_ORDER.index(e)
                                                                      if e in _ELEMENT_ORDER else 9, e))
    fig = make_subplots(rows=len(samples), cols=len(elements), shared_xaxes=True,
                        subplot_titles=[f"{s}: {e}" for s in samples for e in elements])
    keys = shift.select("method", "modality").unique().sort(["method", "modality"]).rows()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf"]
    for k, (m, d) in enumerate(keys):
        for i, s in enumerate(samples):
            for j, e in enumerate(elements):
                part = shift.filter((pl.col("method") == m) & (pl.col("modality") == d) & (pl.col("sample") == s)
                                    & (pl.col("element") == e)).sort("dose_dpa")
                if part.is_empty():
                    continue
                y = part["percent_diff"].fill_null(np.nan).to_numpy()
                err = {}
                if "ci_low" in part.columns:  # 95 % bootstrap interval (core figures by default)
                    err = {"error_y": {"type": "data", "symmetric": False, "visible": True, "thickness": 1,
                                       "array": np.nan_to_num(part["ci_high"].fill_null(np.nan).to_numpy() - y).tolist(),
                                       "arrayminus": np.nan_to_num(y - part["ci_low"].fill_null(np.nan).to_numpy()).tolist()}}
                fig.add_trace(go.Scatter(
                    x=part["dose_dpa"].to_list(), y=part["percent_diff"].to_list(), mode="lines+markers", **err,
                    name=f"{m} / {d}", legendgroup=f"{m}/{d}", showlegend=(i == 0 and j == 0),
                    line={"color": palette[k % len(palette)], "dash": "solid" if d == "ensemble" else "dot"},
                    customdata=np.stack([part["ordered_at_pct"].to_numpy(), part["disordered_at_pct"].to_numpy(),
                                         part["percent_diff_renorm"].fill_null(np.nan).to_numpy()], 1),
                    hovertemplate=(f"{m} / {d}<br>dose %{{x}} dpa<br>{e}: %{{y:+.2f}} %<br>"
                                   "ordered %{customdata[0]:.2f} at.%<br>disordered %{customdata[1]:.2f} at.%"
                                   "<br>renormalised over the compared elements: %{customdata[2]:+.2f} %"
                                   "<extra></extra>")), row=i + 1, col=j + 1)
    fig.add_hline(y=0, line_width=1, line_color="#999")
    fig.update_xaxes(title_text="dose (dpa)", row=len(samples))
    fig.update_yaxes(title_text="disordered vs ordered (%)", col=1)
    fig.update_layout(height=260 * len(samples) + 80, margin={"t": 60, "l": 60, "r": 20, "b": 40},
                      title="Percent difference of disordered vs ordered film, 100 (dis - ord) / ord "
                            "(core chips; bars: 95 % bootstrap interval over chips)")
    return fig


def _dspacing_figure(regions: pl.DataFrame, sessions: pl.DataFrame):
    import plotly.graph_objects as go

    film = regions.filter(pl.col("role").is_in(["film_ordered", "film_disordered"])
                          & pl.col("d_spacing_nm").is_not_null())
    order = sessions["session_id"].to_list()
    fig = go.Figure()
    for role, sym in (("film_ordered", "circle"), ("film_disordered", "diamond")):
        part = film.filter(pl.col("role") == role)
        if part.is_empty():
            continue
        fig.add_trace(go.Scatter(
            x=[f"{s} | {m}/{d}" for s, m, d in part.select("session_id", "method", "modality").rows()],
            y=part["d_spacing_nm"].to_list(), mode="markers", name=role,
            marker={"color": ROLE_COLORS[role], "symbol": sym, "size": 9},
            error_y=_d_error(part),
            customdata=np.stack([part["region"].to_numpy(), part["n_chips"].to_numpy(),
                                 part["square_px"].fill_null(0).to_numpy()], 1),
            hovertemplate="%{x}<br>region %{customdata[0]} (%{customdata[1]} chips)<br>d = %{y:.4f} nm"
                          "<br>square %{customdata[2]} px<extra></extra>"))
    rank = {sid: i for i, sid in enumerate(order)}
    cats = sorted({f"{s} | {m}/{d}" for s, m, d in film.select("session_id", "method", "modality").rows()},
                  key=lambda c: (rank.get(c.split(" | ")[0], len(rank)), c))
    fig.update_layout(title="Film d-spacing (FFT of the largest square inside each region; bars: 95 % "
                            "bootstrap interval over chip tiles, else the peak-width resolution)", height=420,
                      yaxis_title="d-spacing (nm)", margin={"t": 50, "b": 160},
                      xaxis={"categoryorder": "array", "categoryarray": cats})
    return fig


def _d_error(part: pl.DataFrame) -> dict:
    """Error bars of d-spacings: the 95 % tile-bootstrap interval where there is one, else the
    width-based resolution figure."""
    d = part["d_spacing_nm"].to_numpy()
    unc = part["d_spacing_unc_nm"].fill_null(0).to_numpy()
    if "d_spacing_ci_low" not in part.columns:
        return {"type": "data", "array": unc.tolist(), "visible": True}
    lo = part["d_spacing_ci_low"].fill_null(np.nan).to_numpy()
    hi = part["d_spacing_ci_high"].fill_null(np.nan).to_numpy()
    return {"type": "data", "symmetric": False, "visible": True,
            "array": np.where(np.isfinite(hi), hi - d, unc).tolist(),
            "arrayminus": np.where(np.isfinite(lo), d - lo, unc).tolist()}


def _labels_figure(sid: str, data: CampaignData):
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lab = data.labels.filter(pl.col("session_id") == sid) if len(data.labels) else pl.DataFrame()
    g = data.grids.filter(pl.col("session_id") == sid).to_dicts() if len(data.grids) else []
    img = data.images.get(sid)
    keys = sorted(lab.select("method", "modality").unique().rows()) if len(lab) else []
    if not g or (not keys and img is None):
        return None
    g = g[0]
    n_rows, n_cols = int(g["n_rows"]), int(g["n_cols"])
    reg = data.regions.filter(pl.col("session_id") == sid) if len(data.regions) else pl.DataFrame()
    info = {}
    for r in reg.iter_rows(named=True):
        d = f"{r['d_spacing_nm']:.3f} nm" if r["d_spacing_nm"] is not None else (r["d_spacing_note"] or "-")[:40]
        c = f"{r['crystallinity']:.2f}" if r["crystallinity"] is not None else "-"
        info[(r["method"], r["modality"], r["region"])] = (r["role"] or "-", r["n_chips"], d, c)
    panels = ([("HAADF", None)] if img is not None else []) + [(f"{m} / {d}", (m, d)) for m, d in keys]
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig = make_subplots(rows=nrow, cols=ncol, subplot_titles=[p[0] for p in panels],
                        horizontal_spacing=0.03, vertical_spacing=0.08)
    for k, (title, key) in enumerate(panels):
        row, col = k // ncol + 1, k % ncol + 1
        if key is None:
            im, f = img
            lo, hi = (float(v) for v in np.percentile(im, [1, 99]))
            fig.add_trace(go.Heatmap(z=im, colorscale="Gray", zmin=lo, zmax=hi, showscale=False, hoverinfo="skip"),
                          row=row, col=col)
        else:
            part = lab.filter((pl.col("method") == key[0]) & (pl.col("modality") == key[1]))
            z = np.full(n_rows * n_cols, -1, dtype=np.int64)
            z[part["chip_index"].to_numpy()] = part["label"].fill_null(-1).to_numpy()
            uniq = sorted(set(int(v) for v in z if v >= 0))
            colors, extra = [], 0
            for u in uniq:
                role = info.get((key[0], key[1], u), ("-",))[0]
                if role in ROLE_COLORS:
                    colors.append(ROLE_COLORS[role])
                else:
                    colors.append(_EXTRA_COLORS[extra % len(_EXTRA_COLORS)])
                    extra += 1
            idx = {u: i for i, u in enumerate(uniq)}
            zc = np.array([idx.get(int(v), np.nan) if v >= 0 else np.nan for v in z], dtype=float)
            text = np.array([("label %d<br>role %s<br>%s chips<br>d %s<br>crystallinity %s" %
                              (v, *info.get((key[0], key[1], int(v)), ("-", "-", "-", "-"))))
                             if v >= 0 else "unassigned" for v in z], dtype=object)
            fig.add_trace(go.Heatmap(
                z=zc.reshape(n_rows, n_cols), text=text.reshape(n_rows, n_cols), hoverinfo="text",
                colorscale=_discrete_scale(colors or ["#7f7f7f"]), zmin=-0.5, zmax=max(len(uniq), 1) - 0.5,
                showscale=False), row=row, col=col)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{k + 1 if k else ''}", showticklabels=False,
                         row=row, col=col)
        fig.update_xaxes(showticklabels=False, row=row, col=col)
    fig.update_layout(height=290 * nrow + 60, margin={"t": 50, "l": 10, "r": 10, "b": 10},
                      title=f"{sid}: chip labels coloured by role (substrate purple, ordered film blue, "
                            "disordered film brown, cap olive)")
    return fig


def _composition_figure(sid: str, data: CampaignData):
    import plotly.graph_objects as go

    if not len(data.regions) or not len(data.composition):
        return None
    reg = data.regions.filter((pl.col("session_id") == sid) & pl.col("role").is_in(["film_ordered", "film_disordered"]))
    if reg.is_empty():
        return None
    comp = data.composition.filter(pl.col("session_id") == sid).join(
        reg.select("method", "modality", "region", "role", "n_chips"), on=["method", "modality", "region"])
    comp = comp.filter(pl.col("atomic_percent").is_not_null())
    shown = comp.group_by("element").agg(pl.col("atomic_percent").max()).filter(pl.col("atomic_percent") >= 0.5)
    comp = comp.filter(pl.col("element").is_in(shown["element"].to_list()))  # drop absent elements' noise
    if comp.is_empty():
        return None
    agg = (comp.group_by("method", "modality", "role", "element")
           .agg(((pl.col("atomic_percent") * pl.col("n_chips")).sum() / pl.col("n_chips").sum()).alias("at"))
           .sort("method", "modality", "element"))
    fig = go.Figure()
    for role in ("film_ordered", "film_disordered"):
        part = agg.filter(pl.col("role") == role)
        if part.is_empty():
            continue
        fig.add_trace(go.Bar(
            x=[[f"{m}/{d}" for m, d in part.select("method", "modality").rows()], part["element"].to_list()],
            y=part["at"].to_list(), name=role, marker_color=ROLE_COLORS[role],
            hovertemplate="%{x}<br>%{y:.2f} at.%<extra>" + role + "</extra>"))
    fig.update_layout(barmode="group", height=380, title=f"{sid}: film composition, ordered vs disordered "
                      "(summed-spectrum Cliff-Lorimer, chip-weighted over regions)", yaxis_title="at.%",
                      margin={"t": 50, "b": 80})
    return fig


def _agreement_figure(sid: str, data: CampaignData):
    import plotly.graph_objects as go

    if not len(data.agreement) or "ami" not in data.agreement.columns:
        return None
    a = data.agreement.filter(pl.col("session_id") == sid)
    if a.is_empty():
        return None
    methods = sorted(set(a["method"].to_list()))
    pairs = list(dict.fromkeys(a["pair"].to_list()))
    z = np.full((len(methods), len(pairs)), np.nan)
    for r in a.iter_rows(named=True):
        if r["ami"] is not None:
            z[methods.index(r["method"]), pairs.index(r["pair"])] = r["ami"]
    fig = go.Figure(go.Heatmap(z=z, x=pairs, y=methods, zmin=0, zmax=1, colorscale="Viridis",
                               text=np.where(np.isfinite(z), np.round(z, 2).astype(str), ""),
                               texttemplate="%{text}", hovertemplate="%{y} %{x}: AMI %{z:.3f}<extra></extra>"))
    fig.update_layout(height=120 + 40 * len(methods), title=f"{sid}: adjusted mutual information (Table I)",
                      margin={"t": 50, "b": 40})
    return fig


def _html_table(frame: pl.DataFrame, cols: list[str]) -> str:
    cols = [c for c in cols if c in frame.columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = []
    for row in frame.select(cols).iter_rows():
        cells = "".join(f"<td>{html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td>" for v in row)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222}
h1{font-size:22px} h2{font-size:18px;margin-top:32px;border-bottom:1px solid #ddd} h3{font-size:15px}
table{border-collapse:collapse;font-size:12px;margin:8px 0} td,th{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f4f4} .note{color:#666;font-size:12px}
"""


def render_report(data: CampaignData, title: str | None = None) -> str:
    """The report as one HTML string, plotly.js inline."""
    import plotly
    from plotly.offline import get_plotlyjs

    title = title or f"mmlake campaign report: {data.campaign}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='note'>generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M UTC} by mmlake.report "
             f"(plotly {plotly.__version__}, inline); {len(data.sessions)} session(s)</p>"]
    figs: list[str] = []

    def add(fig, name):
        if fig is not None:
            div = f"fig{len(figs)}"
            figs.append(div)
            parts.append(_fig_html(fig, div))
        else:
            parts.append(f"<p class='note'>{html.escape(name)}: nothing to show yet.</p>")

    parts.append("<h2>Sessions</h2>")
    if len(data.sessions):
        s = data.sessions
        if len(data.labels):
            segs = (data.labels.group_by("session_id").agg(
                pl.concat_str([pl.col("method"), pl.col("modality")], separator="/").unique().sort()
                .str.join(", ").alias("segmentations")))
            s = s.join(segs, on="session_id", how="left")
        parts.append(_html_table(s, ["session_id", "sample", "dose_dpa", "acquired_at", "instrument", "chip_px",
                                     "pixel_size_nm", "segmentations"]))
    else:
        parts.append("<p class='note'>No sessions of this campaign in the lake.</p>")
    parts.append("<h2>Composition shift vs dose</h2><p class='note'>Intra-sample percent difference of the "
                 "disordered against the ordered film (preprint II.B): positive = richer in the disordered "
                 "film. Solid lines: ensemble modality.</p>")
    add(_shift_figure(data.shift) if len(data.shift) else None, "composition shift")
    parts.append("<h2>Film d-spacing</h2>")
    if len(data.regions):
        add(_dspacing_figure(data.regions, data.sessions)
            if len(data.regions.filter(pl.col("role").is_in(["film_ordered", "film_disordered"])
                                       & pl.col("d_spacing_nm").is_not_null())) else None, "d-spacing")
        nulls = data.regions.filter(pl.col("role").is_in(["film_ordered", "film_disordered"])
                                    & pl.col("d_spacing_nm").is_null())
        if len(nulls):
            parts.append("<h3>Film regions without a d-spacing</h3>")
            parts.append(_html_table(nulls.sort("session_id", "method", "modality", "region"),
                                     ["session_id", "method", "modality", "region", "role", "n_chips",
                                      "crystallinity", "d_spacing_note"]))
    else:
        add(None, "d-spacing")
    from mmlake.report_order import contrast_figure, order_figure

    order = data.order or {}
    parts.append("<h2>Column order, disordered vs ordered film</h2><p class='note'>From the atomic columns "
                 "(assets atom_columns, region_order): mean over the disordered film's chips / mean over the "
                 "ordered film's; above 1 = more disordered.</p>")
    contrast = order.get("contrast")
    add(contrast_figure(contrast) if contrast is not None and len(contrast) else None, "column order contrast")
    grids = {g["session_id"]: g for g in data.grids.iter_rows(named=True)} if len(data.grids) else {}
    for sid in data.sessions["session_id"].to_list() if len(data.sessions) else []:
        parts.append(f"<h2>Session {html.escape(sid)}</h2>")
        add(_labels_figure(sid, data), "segmentations")
        add(_composition_figure(sid, data), "ordered vs disordered composition")
        add(_agreement_figure(sid, data), "agreement")
        add(order_figure(sid, data.images.get(sid), grids.get(sid), order.get("columns", pl.DataFrame()),
                         order.get("order", pl.DataFrame())), "column order")
    check = ("<script>document.addEventListener('DOMContentLoaded',function(){"
             "var n=document.querySelectorAll('.js-plotly-plot').length;"
             f"document.body.setAttribute('data-plots-rendered',String(n));document.body.setAttribute("
             f"'data-plots-expected','{len(figs)}');}});</script>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>"
            f"<script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + check + "</body></html>")


def write_campaign_report(lake, campaign: str, path: str | Path, title: str | None = None) -> Path:
    """Collect ``campaign`` from ``lake`` and write the self-contained HTML report to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(collect_campaign(lake, campaign), title)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
