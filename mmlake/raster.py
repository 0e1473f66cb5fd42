"""Raster thumbnails for asset metadata, drawn with Pillow: labelled image panels, colour bars,
legends and point overlays, composed side by side into one PNG.

Why not matplotlib: every materialization of a session asset shows one or two pictures in the
Dagster UI. Through matplotlib a full-size session spent ~5 s of its ~32 s ingest drawing them
(pyplot's import, a tight bounding box that draws every figure twice, text layout), and the PNGs
were 100-170 kB each inside Dagster's event log. These pictures are images with a title, so
Pillow draws them in milliseconds; the composition bar charts too (`mmlake.plots.composition_chart`:
1.6 s of a full-size ingest through matplotlib, ~50 ms here). The campaign report is plotly.

Colour maps are the perceptually uniform viridis / magma, interpolated from 17 anchor colours
sampled from matplotlib's tables (at most 6 of 255 levels from them), so nothing here imports
matplotlib.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

#: (17, 3) anchors at 0, 1/16, ..., 1 of matplotlib's colour maps (RGB 0-255).
_ANCHORS = {
    "viridis": [(68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141),
                (44, 114, 142), (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128), (63, 188, 115),
                (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25), (253, 231, 37)],
    "magma": [(0, 0, 4), (10, 8, 34), (29, 17, 71), (54, 16, 107), (81, 18, 124), (106, 28, 129), (131, 38, 129),
              (156, 46, 127), (183, 55, 121), (208, 65, 111), (231, 82, 99), (245, 107, 92), (252, 137, 97),
              (254, 167, 114), (254, 196, 136), (253, 226, 163), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
#: matplotlib's tab10, for labels without a role colour.
TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
         "#bcbd22", "#17becf"]
PANEL_PX = 240  # longest side of an image panel
_BG = (255, 255, 255)
_FG = (20, 20, 20)


def hex_rgb(colour: str) -> tuple[int, int, int]:
    c = colour.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


@lru_cache(maxsize=None)
def lut(name: str) -> np.ndarray:
    """(256, 3) uint8 lookup table of a colour map (computed once; read-only)."""
    if name not in _ANCHORS:
        raise ValueError(f"colour map must be one of {sorted(_ANCHORS)}, got {name!r}")
    a = np.asarray(_ANCHORS[name], dtype=np.float64)
    t = np.linspace(0.0, 1.0, len(a))
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, t, a[:, k]) for k in range(3)], axis=1).round().astype(np.uint8)
    table.setflags(write=False)
    return table


def scale(values: np.ndarray, lo: float | None = None, hi: float | None = None,
          percentiles: tuple[float, float] | None = None) -> tuple[np.ndarray, float, float]:
    """Values mapped to 0..255 (uint8; NaN -> 0) and the (lo, hi) used; `percentiles` clips contrast."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[np.isfinite(v)]
    if lo is None or hi is None:
        if finite.size == 0:
            plo, phi = 0.0, 1.0
        elif percentiles is not None:
            plo, phi = (float(p) for p in np.percentile(finite, percentiles))
        else:
            plo, phi = float(finite.min()), float(finite.max())
        lo = plo if lo is None else lo
        hi = phi if hi is None else hi
    span = hi - lo if hi > lo else 1.0
    out = np.clip((np.nan_to_num(v, nan=lo) - lo) / span, 0.0, 1.0)
    return (out * 255).round().astype(np.uint8), float(lo), float(hi)


def colourise(values: np.ndarray, cmap: str = "gray", lo: float | None = None, hi: float | None = None,
              percentiles: tuple[float, float] | None = None, bad=(158, 158, 158)):
    """(h, w, 3) uint8 RGB of a 2-D array through a colour map; NaN drawn in `bad`; returns (rgb, lo, hi)."""
    v = np.asarray(values, dtype=np.float64)
    idx, lo, hi = scale(v, lo, hi, percentiles)
    rgb = lut(cmap)[idx]
    nan = ~np.isfinite(v)
    if nan.any():
        rgb[nan] = bad
    return rgb, lo, hi


def font(size: int):
    """Pillow's bundled scalable font (no font files needed) at `size` px."""
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _fmt(v: float) -> str:
    return f"{v:.3g}" if np.isfinite(v) else "nan"


@dataclass
class Panel:
    """One image panel: RGB pixels, a title (lines), optional colour bar range and legend entries."""

    rgb: np.ndarray
    title: str = ""
    colourbar: tuple[str, float, float] | None = None  # (cmap, lo, hi)
    legend: list[tuple[str, tuple[int, int, int]]] = field(default_factory=list)
    points: list[tuple[np.ndarray, np.ndarray, tuple[int, int, int], str]] = field(default_factory=list)
    grid_lines: tuple[list[float], list[float], tuple[int, int, int]] | None = None

    def render(self, panel_px: int = PANEL_PX):
        """The panel as a PIL image (title above, picture, colour bar and legend below)."""
        from PIL import Image, ImageDraw

        h, w = self.rgb.shape[:2]
        f = panel_px / max(h, w, 1)
        W, H = max(1, round(w * f)), max(1, round(h * f))
        resample = Image.NEAREST if f >= 1 or max(h, w) <= 64 else Image.BILINEAR
        pic = Image.fromarray(np.ascontiguousarray(self.rgb, dtype=np.uint8), "RGB").resize((W, H), resample)
        if self.points or self.grid_lines is not None:
            arr = np.array(pic)
            if self.grid_lines is not None:  # half-transparent lines on the chip edges
                ys, xs, colour = self.grid_lines
                c = np.asarray(colour, np.float32)
                r = np.clip(np.rint(np.asarray(ys, float) * f).astype(int), 0, H - 1)
                k = np.clip(np.rint(np.asarray(xs, float) * f).astype(int), 0, W - 1)
                arr[r] = (0.5 * arr[r] + 0.5 * c).astype(np.uint8)
                arr[:, k] = (0.5 * arr[:, k] + 0.5 * c).astype(np.uint8)
            for ys, xs, colour, marker in self.points:
                _draw_points(arr, (np.asarray(ys) + 0.5) * f - 0.5, (np.asarray(xs) + 0.5) * f - 0.5, colour, marker)
            pic = Image.fromarray(arr, "RGB")
        big = font(11)
        lines = [ln for ln in self.title.split("\n") if ln] if self.title else []
        top = 4 + 14 * len(lines)
        bottom = (22 if self.colourbar else 0) + 13 * ((len(self.legend) + 1) // 2)
        out = Image.new("RGB", (max(W, 120) + 8, top + H + bottom + 6), _BG)
        d = ImageDraw.Draw(out)
        for i, ln in enumerate(lines):
            d.text((4, 2 + 14 * i), ln, fill=_FG, font=big)
        out.paste(pic, (4, top))
        y = top + H + 4
        small = font(9)
        if self.colourbar:
            cmap, lo, hi = self.colourbar
            bar = np.repeat(lut(cmap)[None, :, :], 8, axis=0)
            out.paste(Image.fromarray(bar, "RGB").resize((W, 8)), (4, y))
            d.text((4, y + 9), _fmt(lo), fill=_FG, font=small)
            d.text((4 + W, y + 9), _fmt(hi), fill=_FG, font=small, anchor="ra")
            y += 22
        col_w = (max(W, 120)) // 2
        for i, (text, colour) in enumerate(self.legend):
            x0, y0 = 4 + (i % 2) * col_w, y + 13 * (i // 2)
            d.rectangle([x0, y0 + 2, x0 + 8, y0 + 10], fill=colour)
            d.text((x0 + 11, y0), text[:24], fill=_FG, font=small)
        return out


def _draw_points(arr: np.ndarray, ys: np.ndarray, xs: np.ndarray, colour, marker: str) -> None:
    """Dots ('.', a 3 px plus) or crosses ('x') written straight into the (H, W, 3) pixels, in place
    (vectorised: an image of 20,000 columns takes milliseconds)."""
    H, W = arr.shape[:2]
    yi, xi = np.rint(ys).astype(np.int64), np.rint(xs).astype(np.int64)
    offs = [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)] if marker == "." else [(0, 0), (-1, -1), (1, 1), (-1, 1), (1, -1)]
    for dy, dx in offs:
        y, x = yi + dy, xi + dx
        ok = (y >= 0) & (y < H) & (x >= 0) & (x < W)
        arr[y[ok], x[ok]] = colour


def compose(panels: list[Panel], title: str = "", panel_px: int = PANEL_PX, columns: int | None = None) -> bytes:
    """Panels side by side (`columns` per row; default all in one row) under an optional title; PNG bytes."""
    from PIL import Image, ImageDraw

    imgs = [p.render(panel_px) for p in panels] or [Panel(np.full((8, 8, 3), 255, np.uint8), "(nothing to show)").render(64)]
    ncol = max(1, min(columns or len(imgs), len(imgs)))
    rows = [imgs[i:i + ncol] for i in range(0, len(imgs), ncol)]
    cw = max(im.width for im in imgs)
    rh = [max(im.height for im in r) for r in rows]
    head = 18 if title else 0
    out = Image.new("RGB", (cw * ncol, head + sum(rh)), _BG)
    if title:
        ImageDraw.Draw(out).text((4, 3), title, fill=_FG, font=font(12))
    y = head
    for r, h in zip(rows, rh):
        for j, im in enumerate(r):
            out.paste(im, (j * cw, y))
        y += h
    return to_png(out)


def to_png(image) -> bytes:
    """A PIL image as PNG bytes."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
