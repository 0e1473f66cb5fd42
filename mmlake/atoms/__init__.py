"""Atomic columns and order parameters from HAADF images.

>>> from mmlake.atoms import analyse_columns, chip_order                    # doctest: +SKIP
>>> res = analyse_columns(haadf, pixel_size_nm=0.05, grid=grid)             # doctest: +SKIP
>>> res.frame            # atom_columns: one row per column, px and nm      # doctest: +SKIP
>>> chip_order(res.frame, grid, 0.05)   # chip_order: one row per chip      # doctest: +SKIP

Modules (each reads in one sitting): :mod:`~mmlake.atoms.scan` (scan-line jitter),
:mod:`~mmlake.atoms.detect` (scale, noise, candidates), :mod:`~mmlake.atoms.refine` (batched Gaussian
fits), :mod:`~mmlake.atoms.columns` (the entry points and the ``atom_columns`` frame),
:mod:`~mmlake.atoms.lattice` (local lattice, displacement, strain), :mod:`~mmlake.atoms.sublattice`
(A/B), :mod:`~mmlake.atoms.order` (per-chip order parameters), :mod:`~mmlake.atoms.encoder` (the
``order`` feature set), :mod:`~mmlake.atoms.region` (region means with bootstrap intervals),
:mod:`~mmlake.atoms.plots` (PNG pictures), :mod:`~mmlake.atoms.synthetic` (test images with truth),
:mod:`~mmlake.atoms.validate` (AtomAgined and demo-campaign validation).

Only numpy, scipy and polars are imported, and only when a function runs.
"""

from __future__ import annotations

from mmlake.atoms.columns import COLUMN_FIELDS, ColumnResult, analyse_columns, find_columns, locate_columns
from mmlake.atoms.order import ORDER_FIELDS, chip_order
from mmlake.atoms.region import ratio, region_order, segmentation_order

__all__ = ["COLUMN_FIELDS", "ORDER_FIELDS", "ColumnResult", "analyse_columns", "chip_order", "find_columns",
           "locate_columns", "ratio", "region_order", "segmentation_order"]
