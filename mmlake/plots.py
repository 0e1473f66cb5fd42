"""Static pictures (PNG bytes) for asset metadata and reports.

Image thumbnails (sessions, chips, feature and element maps, segmentation overlays, agreement) are
drawn with Pillow through :mod:`mmlake.raster` (milliseconds each), and so are the charts with axes
(the ordered-vs-disordered composition bars): nothing here imports matplotlib. The campaign report's
interactive figures are plotly (:mod:`mmlake.report`)."""

from __future__ import annotations

import numpy as np

from mmlake import raster


def session_thumbnail(haadf: np.ndarray | None, count_map: np.ndarray | None, title: str) -> bytes:
    """HAADF image and EDS total-count map side by side (Pillow, :mod:`mmlake.raster`)."""
    panels = []
    if haadf is not None:
        panels.append(raster.Panel(raster.colourise(haadf, "gray", percentiles=(1, 99))[0], "HAADF"))
    if count_map is not None:
        rgb, lo, hi = raster.colourise(count_map, "viridis")
        panels.append(raster.Panel(rgb, "EDS counts / pixel", colourbar=("viridis", lo, hi)))
    return raster.compose(panels, title)


def chip_grid_thumbnail(haadf: np.ndarray | None, chip_counts: np.ndarray | None, chip_px: int, title: str) -> bytes:
    """HAADF with the chip grid drawn over it, and EDS counts per chip."""
    panels = []
    if haadf is not None:
        h, w = np.shape(haadf)[:2]
        lines = (list(range(0, h - chip_px + 1, chip_px)), list(range(0, w - chip_px + 1, chip_px)), (255, 214, 10))
        panels.append(raster.Panel(raster.colourise(haadf, "gray", percentiles=(1, 99))[0], "HAADF + chip grid",
                                   grid_lines=lines))
    if chip_counts is not None:
        rgb, lo, hi = raster.colourise(chip_counts, "viridis")
        panels.append(raster.Panel(rgb, "EDS counts / chip", colourbar=("viridis", lo, hi)))
    return raster.compose(panels, title)


def pca_map(vectors: np.ndarray, n_rows: int, n_cols: int, title: str) -> bytes:
    """First three principal components of chip vectors shown as an RGB map over the chip grid."""
    x = np.asarray(vectors, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    pcs = x @ vt[:3].T
    if pcs.shape[1] < 3:
        pcs = np.pad(pcs, ((0, 0), (0, 3 - pcs.shape[1])))
    lo, hi = pcs.min(axis=0), pcs.max(axis=0)
    rgb = ((pcs - lo) / np.where(hi > lo, hi - lo, 1)).reshape(n_rows, n_cols, 3)
    return raster.compose([raster.Panel((rgb * 255).round().astype(np.uint8), "PCA 1-3 as RGB")], title)


def element_maps(atomic_percent: np.ndarray, elements: list[str], n_rows: int, n_cols: int, title: str,
                 most: int = 6) -> bytes:
    """Per-chip atomic % maps of the elements with the highest mean, each with its colour bar."""
    at = np.asarray(atomic_percent, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(np.nanmean(at, axis=0))) if at.size else np.zeros(0, int)
    panels = []
    for j in order[:most]:
        rgb, lo, hi = raster.colourise(at[:, j].reshape(n_rows, n_cols), "magma")
        panels.append(raster.Panel(rgb, f"{elements[j]} at.%", colourbar=("magma", lo, hi)))
    return raster.compose(panels, title, panel_px=160)


# ---------------------------------------------------------------------------------------------
# Region descriptors: segmentation overlays (preprint Figs. 2-3), ordered vs disordered composition
# (Figs. 4-5) and modality agreement (Table I). Inputs are polars frames in the lake's layout.

#: Colours per physical role (the preprint's Figs. 4-5: ordered blue, disordered brown).
ROLE_COLORS = {
    "substrate": "#9467bd", "film_ordered": "#1f77b4", "film_disordered": "#8c564b", "cap": "#bcbd22",
    "interface": "#e377c2", "film": "#17becf", "unknown": "#7f7f7f",
}
_MODALITY_ORDER = ("haadf", "eds", "ensemble")


def _label_colors(labels: np.ndarray, roles: dict | None):
    """RGB lookup (n_labels, 3) uint8 and legend entries for a label array; role colours where known."""
    uniq = [int(v) for v in np.unique(labels) if v >= 0]
    lut = np.zeros((max(uniq, default=0) + 1, 3), np.uint8)
    legend = []
    for i, lab in enumerate(uniq):
        role = (roles or {}).get(lab)
        rgb = raster.hex_rgb(ROLE_COLORS.get(role) if role and role in ROLE_COLORS else raster.TAB10[i % 10])
        lut[lab] = rgb
        legend.append((f"{lab}: {role}" if role else f"label {lab}", rgb))
    return lut, legend


def _panel_order(keys):
    methods = sorted({m for m, _ in keys})
    mods = sorted({d for _, d in keys}, key=lambda d: (_MODALITY_ORDER.index(d) if d in _MODALITY_ORDER else 9, d))
    return methods, mods


def segmentation_overlay(
    haadf: np.ndarray | None,
    segmentations: dict,
    grid,
    title: str,
    roles: dict | None = None,
    alpha: float = 0.45,
) -> bytes:
    """Chip labels over the HAADF image, one panel per method (rows) x modality (columns).

    ``segmentations`` ``{(method, modality): labels (n_chips,)}`` in chip_index order; ``grid`` the
    session's :class:`mmlake.chips.ChipGrid`; ``roles`` ``{(method, modality): {label: role}}``
    colours regions by role (substrate purple, ordered film blue, disordered film brown, cap olive).
    Labels < 0 (unassigned) are left uncoloured.
    """
    if not segmentations:
        return raster.compose([], f"{title}: no segmentation")
    methods, mods = _panel_order(list(segmentations))
    shape = (grid.origin_y + grid.n_rows * grid.chip_px, grid.origin_x + grid.n_cols * grid.chip_px)
    base = None
    if haadf is not None:
        base = raster.colourise(grid.crop(np.asarray(haadf, dtype=np.float32)), "gray", percentiles=(1, 99))[0]
    panels = []
    for m in methods:
        for d in mods:
            lab = segmentations.get((m, d))
            if lab is None:
                blank = np.full((*(base.shape[:2] if base is not None else (grid.n_rows, grid.n_cols)), 3), 255, np.uint8)
                panels.append(raster.Panel(blank, f"{m} / {d}\n(no output)"))
                continue
            lab = np.asarray(lab).astype(np.int64)
            lut, legend = _label_colors(lab, (roles or {}).get((m, d)))
            if base is not None:
                pix = grid.crop(grid.upsample(lab, shape, fill=-1))
                colour = lut[np.maximum(pix, 0)].astype(np.float32)
                a = np.where(pix >= 0, alpha, 0.0)[..., None]
                rgb = (base * (1 - a) + colour * a).round().astype(np.uint8)
            else:  # one pixel per chip, unassigned white
                pix = lab.reshape(grid.n_rows, grid.n_cols)
                rgb = np.where(pix[..., None] >= 0, lut[np.maximum(pix, 0)], 255).astype(np.uint8)
            panels.append(raster.Panel(rgb, f"{m} / {d}", legend=legend[:8]))
    return raster.compose(panels, title, panel_px=200, columns=len(mods))


def _d_label(regions, method: str, modality: str, role: str) -> str:
    """d-spacing of the largest region of a role: '0.3930±0.0003 nm' (bootstrap standard error), or
    the reason it is NULL."""
    if regions is None or regions.is_empty():
        return "?"
    import polars as pl

    r = regions.filter((pl.col("method") == method) & (pl.col("modality") == modality) & (pl.col("role") == role))
    if r.is_empty():
        return "-"
    top = r.sort("n_chips", descending=True).row(0, named=True)
    if top["d_spacing_nm"] is not None:
        se = top.get("d_spacing_se_nm")
        return f"{top['d_spacing_nm']:.4f}" + (f"±{se:.4f}" if se is not None else "") + " nm"
    note = top.get("d_spacing_note") or ""
    return "amorphous" if note.startswith("amorphous") else "n/a"


def composition_bars(shift, title: str, regions=None, elements: tuple[str, ...] | None = None) -> bytes:
    """Ordered (blue) vs disordered (brown) film composition per method x modality, percent
    differences on top with their 95 % intervals (``*`` = significant) and as error bars on a second
    axis (right, black), and the roles' d-spacings in the panel titles (the preprint's Figs. 4-5).
    Core-chip figures where the rows have them, else whole-region figures. Drawn with Pillow
    (:mod:`mmlake.raster`): through matplotlib this one picture cost 1.6 s of a full-size ingest.

    ``shift``: rows of ``ordered_disordered_shift`` / the ``composition_shift`` view for one session;
    ``regions``: that session's ``regions`` rows (for the d-spacings), optional.
    """
    import polars as pl

    if shift is None or shift.is_empty():
        return raster.compose([], f"{title}: no segmentation has both an ordered and a disordered film region")
    keys = shift.select("method", "modality").unique(maintain_order=True).rows()
    methods, mods = _panel_order(keys)
    keys = [(m, d) for m in methods for d in mods if (m, d) in set(keys)]
    els = list(elements) if elements else list(dict.fromkeys(shift["element"].to_list()))
    panels = []
    for m, d in keys:
        part = shift.filter((pl.col("method") == m) & (pl.col("modality") == d))
        vals = {r["element"]: r for r in part.iter_rows(named=True)}
        core = any(v.get("percent_diff_core") is not None for v in vals.values())
        sfx = "_core" if core else ""

        def col(name, _sfx=sfx, _vals=vals):
            return np.array([_vals.get(e, {}).get(name + _sfx) if _vals.get(e, {}).get(name + _sfx) is not None
                             else np.nan for e in els], dtype=float)

        sig = [bool(vals.get(e, {}).get("significant" + sfx)) for e in els]
        rgb = composition_chart(els, col("ordered_at_pct"), col("disordered_at_pct"), col("percent_diff"),
                                col("ci_low"), col("ci_high"), sig)
        panels.append(raster.Panel(rgb, f"{m} / {d} ({'core' if core else 'whole'} chips)\n"
                                        f"d ord {_d_label(regions, m, d, 'film_ordered')}\n"
                                        f"d dis {_d_label(regions, m, d, 'film_disordered')}"))
    return raster.compose(panels, f"{title}  (bars: at.%, left; dots: dis vs ord %, 95 % interval, right)",
                          panel_px=max(CHART_PX), columns=4)


CHART_PX = (300, 230)  # (width, height) of one composition chart


def _nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About `n` round tick values (1, 2 or 5 x 10^k apart) inside [lo, hi]."""
    raw = (hi - lo) / max(n, 1)
    if not np.isfinite(raw) or raw <= 0:
        return []
    mag = 10.0 ** np.floor(np.log10(raw))
    step = next(k * mag for k in (1, 2, 5, 10) if k * mag >= raw)
    first = np.ceil(lo / step) * step
    return [float(t) for t in np.arange(first, hi + 1e-9 * step, step)]


def composition_chart(elements, ordered, disordered, pdiff, lo, hi, significant, size=CHART_PX) -> np.ndarray:
    """One composition panel as (H, W, 3) uint8 pixels: paired bars (at.%, left axis), the percent
    difference with its interval as a dot and whisker (right axis, zero line dashed grey) and the
    difference written above each pair. NaN values draw nothing."""
    from PIL import Image, ImageDraw

    W, H = size
    img = Image.new("RGB", (W, H), (255, 255, 255))
    dr = ImageDraw.Draw(img)
    f8, f9 = raster.font(8), raster.font(9)
    x0, x1, y0, y1 = 34, W - 38, 30, H - 16  # plot box: y0 top, y1 bottom (0 at.%)
    fg, grey = (20, 20, 20), (150, 150, 150)
    both = np.concatenate([ordered, disordered])
    ymax = (np.nanmax(both) if np.isfinite(both).any() else 1.0) * 1.18 + 1
    def yl(v):  # at.% -> pixel row
        return y1 - (y1 - y0) * float(v) / ymax
    span = np.concatenate([lo, hi, pdiff])
    span = span[np.isfinite(span)]
    plo, phi = (min(span.min(), 0.0), max(span.max(), 0.0)) if len(span) else (-1.0, 1.0)
    pad = 0.1 * (phi - plo or 1.0)
    plo, phi = plo - pad, phi + pad
    def yr(v):  # percent difference -> pixel row
        return y1 - (y1 - y0) * (float(v) - plo) / (phi - plo)
    dr.rectangle([x0, y0, x1, y1], outline=fg)
    for t in _nice_ticks(0.0, ymax):  # left ticks
        y = yl(t)
        dr.line([x0 - 3, y, x0, y], fill=fg)
        dr.text((x0 - 4, y), f"{t:.0f}", fill=fg, font=f8, anchor="rm")
    dr.text((2, y0 - 12), "at.%", fill=fg, font=f8)
    for t in _nice_ticks(plo, phi):  # right ticks
        y = yr(t)
        dr.line([x1, y, x1 + 3, y], fill=fg)
        dr.text((x1 + 5, y), f"{t:+.0f}", fill=fg, font=f8, anchor="lm")
    dr.text((W - 2, y0 - 12), "dis-ord %", fill=fg, font=f8, anchor="ra")
    z = yr(0.0)
    for xs in range(x0, x1, 6):  # dashed zero line of the right axis
        dr.line([xs, z, min(xs + 3, x1), z], fill=grey)
    n = max(len(elements), 1)
    step = (x1 - x0) / n
    bw = 0.3 * step
    c_ord, c_dis = raster.hex_rgb(ROLE_COLORS["film_ordered"]), raster.hex_rgb(ROLE_COLORS["film_disordered"])
    for i, e in enumerate(elements):
        cx = x0 + step * (i + 0.5)
        for v, x, c in ((ordered[i], cx - bw, c_ord), (disordered[i], cx, c_dis)):
            if np.isfinite(v) and v > 0:
                dr.rectangle([round(x), round(yl(v)), round(x + bw) - 1, y1 - 1], fill=c)
        dr.text((cx, y1 + 2), str(e), fill=fg, font=f9, anchor="ma")
        if np.isfinite(pdiff[i]):
            top = np.nanmax([ordered[i], disordered[i], 0.0])
            label = f"{pdiff[i]:+.1f}%{'*' if significant[i] else ''}"
            dr.text((cx, yl(top) - 2), label, fill=fg, font=f8, anchor="md")
            if np.isfinite(lo[i]) and np.isfinite(hi[i]):
                ya, yb = yr(lo[i]), yr(hi[i])
                dr.line([cx + bw + 3, ya, cx + bw + 3, yb], fill=fg)
                dr.line([cx + bw + 1, ya, cx + bw + 5, ya], fill=fg)
                dr.line([cx + bw + 1, yb, cx + bw + 5, yb], fill=fg)
            yp = yr(pdiff[i])
            dr.ellipse([cx + bw + 1, yp - 2, cx + bw + 5, yp + 2], fill=fg)
    # legend, top left inside the box
    for k, (text, c) in enumerate((("ordered", c_ord), ("disordered", c_dis))):
        lx, ly = x0 + 4 + 62 * k, y0 + 4
        dr.rectangle([lx, ly + 1, lx + 7, ly + 8], fill=c)
        dr.text((lx + 10, ly), text, fill=fg, font=f8)
    return np.asarray(img)


def agreement_heatmap(agreement, title: str, value: str = "ami") -> bytes:
    """Modality agreement per method (rows) and labelling pair (columns), values written in the
    cells (the preprint's Table I). ``agreement``: rows of the ``agreement`` table (method, pair,
    ami, ari) for one session."""
    from PIL import Image, ImageDraw

    if agreement is None or agreement.is_empty() or value not in agreement.columns:
        return raster.compose([], f"{title}: no agreement scores")
    methods = sorted(set(agreement["method"].to_list()))
    pairs = list(dict.fromkeys(agreement["pair"].to_list()))
    mat = np.full((len(methods), len(pairs)), np.nan)
    for r in agreement.iter_rows(named=True):
        if r[value] is not None:
            mat[methods.index(r["method"]), pairs.index(r["pair"])] = r[value]
    font, small = raster.font(11), raster.font(10)
    cw, ch, left, top = 86, 24, 96, 40
    img = Image.new("RGB", (left + cw * len(pairs) + 8, top + ch * len(methods) + 34), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.text((4, 2), title, fill=(20, 20, 20), font=font)
    d.text((4, 16), f"{value.upper()} between labellings (0 = unrelated, 1 = identical)", fill=(20, 20, 20), font=small)
    cmap = raster.lut("viridis")
    for j, p in enumerate(pairs):
        d.text((left + j * cw + cw / 2, top - 2), p[:14], fill=(20, 20, 20), font=small, anchor="md")
    for i, m in enumerate(methods):
        d.text((left - 6, top + i * ch + ch / 2), m, fill=(20, 20, 20), font=small, anchor="rm")
        for j in range(len(pairs)):
            v = mat[i, j]
            box = [left + j * cw, top + i * ch, left + (j + 1) * cw - 1, top + (i + 1) * ch - 1]
            if not np.isfinite(v):
                d.rectangle(box, fill=(235, 235, 235))
                continue
            d.rectangle(box, fill=tuple(int(c) for c in cmap[int(round(np.clip(v, 0, 1) * 255))]))
            d.text((box[0] + cw / 2, box[1] + ch / 2), f"{v:.2f}", font=font, anchor="mm",
                   fill=(255, 255, 255) if v < 0.6 else (0, 0, 0))
    return raster.to_png(img)
