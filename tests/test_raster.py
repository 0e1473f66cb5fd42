"""Pillow thumbnails (mmlake.raster, mmlake.plots, mmlake.atoms.plots): what is drawn where."""

import io

import numpy as np
import polars as pl
import pytest
from PIL import Image

from mmlake import plots, raster
from mmlake.chips import ChipGrid


def _img(png: bytes) -> np.ndarray:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)


@pytest.mark.parametrize("name", ["viridis", "magma"])
def test_colour_maps_follow_matplotlibs_tables(name):
    import matplotlib

    ref = matplotlib.colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255
    err = np.abs(raster.lut(name).astype(float) - ref)
    assert err.max() <= 6.0  # of 255 levels
    assert raster.lut("gray")[0].tolist() == [0, 0, 0] and raster.lut("gray")[255].tolist() == [255, 255, 255]
    with pytest.raises(ValueError, match="colour map"):
        raster.lut("jet")


def test_colourise_clips_contrast_and_marks_nan():
    v = np.array([[0.0, 1.0], [2.0, np.nan]])
    rgb, lo, hi = raster.colourise(v, "gray")
    assert (lo, hi) == (0.0, 2.0)
    assert rgb[0, 0].tolist() == [0, 0, 0] and rgb[1, 0].tolist() == [255, 255, 255]
    assert rgb[1, 1].tolist() == [158, 158, 158]  # NaN is grey, not black
    assert rgb[0, 1, 0] in (127, 128)


def test_segmentation_overlay_colours_regions_by_role():
    grid = ChipGrid.fit((64, 64), 16)  # 4 x 4 chips
    labels = np.repeat([0, 1], 8)  # top half 0, bottom half 1
    haadf = np.full((64, 64), 0.5)
    png = plots.segmentation_overlay(haadf, {("ward", "haadf"): labels}, grid, "t",
                                     {("ward", "haadf"): {0: "substrate", 1: "film_ordered"}}, alpha=1.0)
    img = _img(png)
    sub, film = raster.hex_rgb(plots.ROLE_COLORS["substrate"]), raster.hex_rgb(plots.ROLE_COLORS["film_ordered"])
    # panel 200 px square under a 18 px title and a 18 px panel title: sample its upper and lower middle
    col = img[:, 4 + 100]
    assert (np.abs(col - sub).sum(axis=1) <= 3).sum() >= 80
    assert (np.abs(col - film).sum(axis=1) <= 3).sum() >= 80
    # legend names the roles
    assert plots.segmentation_overlay(None, {("ward", "haadf"): labels}, grid, "t")[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.segmentation_overlay(haadf, {}, grid, "none")[:8] == b"\x89PNG\r\n\x1a\n"


def test_column_overlay_puts_each_dot_on_its_column():
    from mmlake.atoms.plots import column_overlay

    image = np.zeros((100, 100))
    cols = pl.DataFrame({"y_px": [20.0, 70.0, 50.0], "x_px": [20.0, 70.0, 30.0],
                         "lattice_fit": [True, True, False], "sublattice": ["A", "B", None]})
    img = _img(column_overlay(image, cols, "t", panel_px=200))
    top = 4 + 14 * 2  # two title lines
    f = 2.0

    def at(y, x):
        return img[int(round(top + (y + 0.5) * f - 0.5)), int(round(4 + (x + 0.5) * f - 0.5))].tolist()

    assert at(20, 20) == [255, 59, 48]  # A: red
    assert at(70, 70) == [0, 200, 255]  # B: cyan
    assert at(50, 30) == [255, 214, 10]  # no lattice: yellow cross
    assert at(50, 80) == [0, 0, 0]  # background stays the image


def test_agreement_heatmap_and_element_maps_draw_values():
    ag = pl.DataFrame({"method": ["ward", "ward"], "pair": ["haadf-eds", "eds-ensemble"], "ami": [0.0, 1.0]})
    img = _img(plots.agreement_heatmap(ag, "t"))
    v = raster.lut("viridis")
    assert (np.abs(img - v[0]).sum(axis=2) <= 3).sum() > 500  # the 0.0 cell
    assert (np.abs(img - v[255]).sum(axis=2) <= 3).sum() > 500  # the 1.0 cell
    at = np.zeros((16, 2))
    at[:, 0] = np.linspace(0, 50, 16)
    at[:, 1] = 50 - at[:, 0]
    em = _img(plots.element_maps(at, ["Fe", "O"], 4, 4, "t"))
    assert em.shape[1] >= 2 * 160


def test_composition_chart_draws_bars_to_scale_and_the_difference_on_its_axis():
    """Bar heights are proportional to at.% (ordered 60 vs disordered 30 -> 2:1 in pixels) and NaN
    draws no bar."""
    nan = float("nan")
    rgb = plots.composition_chart(["A", "B"], np.array([60.0, nan]), np.array([30.0, 10.0]),
                                  np.array([-50.0, nan]), np.array([-60.0, nan]), np.array([-40.0, nan]),
                                  [True, False])
    blue, brown = raster.hex_rgb(plots.ROLE_COLORS["film_ordered"]), raster.hex_rgb(plots.ROLE_COLORS["film_disordered"])
    H, W = rgb.shape[:2]
    half = W // 2

    def height(colour, lo, hi):
        mask = (rgb[:, lo:hi] == colour).all(axis=2)
        mask[:45] = False  # the legend swatches
        rows = np.flatnonzero(mask.any(axis=1))
        return 0 if len(rows) == 0 else rows.max() - rows.min() + 1

    h_ord, h_dis = height(blue, 0, half), height(brown, 0, half)
    assert h_ord > 60 and abs(h_ord / h_dis - 2.0) < 0.05
    assert height(blue, half, W) == 0  # B's ordered value is NaN: no bar
    assert abs(height(brown, half, W) / h_dis - 1 / 3) < 0.05
    png = plots.composition_bars(None, "empty")
    assert Image.open(io.BytesIO(png)).size[0] > 100
