"""``order``: a HAADF feature set of per-chip order parameters, usable like any chip encoder.

``OrderEncoder.encode(chips, image=...)`` finds the columns of the whole image
(:func:`mmlake.atoms.columns.analyse_columns`), computes :func:`mmlake.atoms.order.chip_order` on the
chip grid the stack came from and returns, per chip, the pixel-size-free parameters of
:data:`FEATURES` (float32, finite: a chip whose window holds no column, or no fitted one, gets the
values of "no lattice": lattice fraction 0, disorder 1, relative displacement and spreads at their
caps, strain 0).

Without ``image`` the chips are untiled back into the image when the stack is a square grid (the
demo's); otherwise ``image`` is required (chips of 10-20 px hold one to nine columns, too few to
find a lattice in). ``device`` is validated like the other encoders' and not used (numpy).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmlake.encoders.base import ChipEncoder, check_batch_size, check_chips

#: Feature vector layout: (name, value where the chip has no data, upper cap).
FEATURES: tuple[tuple[str, float, float], ...] = (
    ("disorder", 1.0, 1.0),
    ("lattice_fraction", 0.0, 1.0),
    ("rms_displacement_rel", 0.5, 0.5),
    ("nn_distance_cv", 0.5, 0.5),
    ("intensity_cv_a", 0.5, 0.5),
    ("strain_exx", 0.0, 0.5),
    ("strain_eyy", 0.0, 0.5),
    ("strain_exy", 0.0, 0.5),
    ("rotation_deg", 0.0, 45.0),
    ("strain_spread", 0.1, 0.1),
)


class OrderEncoder(ChipEncoder):
    name = "order"
    version = "1"
    weights_id = "none"
    dim = len(FEATURES)
    disorder_index = 0

    def __init__(self, window_px: float | None = None, **locate_kw: Any):
        if window_px is not None and not (np.isfinite(window_px) and window_px > 0):
            raise ValueError(f"window_px must be a positive number of pixels or None, got {window_px!r}")
        self.window_px = None if window_px is None else float(window_px)
        self.locate_kw = dict(locate_kw)

    @property
    def feature_names(self) -> list[str]:
        return [f for f, _, _ in FEATURES]

    @property
    def config(self) -> dict[str, Any]:
        return {"window_px": self.window_px, **self.locate_kw}

    def chip_frame(self, chips: np.ndarray, image: np.ndarray | None = None):
        """(columns frame, chip_order frame, grid) for a stack (see :meth:`encode`)."""
        from mmlake.atoms.columns import analyse_columns
        from mmlake.atoms.order import chip_order
        from mmlake.chips import ChipGrid

        chips = check_chips(chips)
        n, p, _ = chips.shape
        if image is None:
            side = int(round(np.sqrt(n)))
            if side * side != n:
                raise ValueError(f"the order encoder needs image= (the HAADF image the {n} chips were cut from): "
                                 "without it only a square chip grid can be untiled")
            grid = ChipGrid(p, side, side)
            image = grid.untile(chips)
        else:
            img = np.asarray(image)
            if img.ndim != 2:
                raise ValueError(f"image must be the 2-D HAADF image, got shape {img.shape}")
            grid = ChipGrid(p, img.shape[0] // p, img.shape[1] // p)
            if grid.n_chips != n:
                raise ValueError(f"image {img.shape[0]}x{img.shape[1]} px with chip_px={p} gives "
                                 f"{grid.n_chips} chips but {n} were given")
            for ci in sorted({0, min(1, n - 1), min(grid.n_cols, n - 1), n - 1}):  # catches a transposed grid
                r, c = divmod(ci, grid.n_cols)
                if not np.allclose(img[r * p:(r + 1) * p, c * p:(c + 1) * p], chips[ci], rtol=1e-5, atol=1e-5):
                    raise ValueError(f"chip {ci} does not equal image tile (row {r}, col {c}): chips must be cut "
                                     "from `image` on the grid origin (0, 0), chip_index = row * n_cols + col")
        res = analyse_columns(image, None, grid=grid, **self.locate_kw)
        basis = res.lattice.basis if np.all(np.isfinite(res.lattice.basis)) else None
        order = chip_order(res.frame, grid, None, window_px=self.window_px, basis_px=basis)
        return res, order, grid

    def encode(self, chips, batch_size=256, device="cpu", *, image=None) -> np.ndarray:
        from mmlake.encoders.device import resolve_device

        check_batch_size(batch_size)
        resolve_device(device)
        chips = check_chips(chips)
        if chips.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        _, order, _ = self.chip_frame(chips, image)
        return features_from_order(order)


def features_from_order(order) -> np.ndarray:
    """(n_chips, dim) float32 of :data:`FEATURES` from a ``chip_order`` frame (nulls filled, capped)."""
    import polars as pl

    out = np.empty((len(order), len(FEATURES)), dtype=np.float32)
    for j, (f, fill, cap) in enumerate(FEATURES):
        v = order[f].cast(pl.Float64).fill_null(np.nan).to_numpy()
        v = np.where(np.isfinite(v), v, fill)
        out[:, j] = np.clip(v, -cap, cap)
    return out
