"""Physical descriptors of segmented regions (preprint section II.B, Figs. 4-5, and section IV.G),
each with its uncertainty.

A *region* is the set of chips of one segmentation (``method`` x ``modality``) that carry the same
label. For each region (``regions`` and ``region_composition`` tables, ``sql/schema.sql``):

- **n_chips**, **area_nm2** = ``n_chips * (chip_px * pixel_size_nm)^2``; **n_core_chips** and
  **boundary_share** (the share of chips touching another label).
- **composition** (:mod:`~mmlake.descriptors.composition`): exspy Cliff-Lorimer of the region's
  SUMMED spectrum, whole (``atomic_percent``) and core (``atomic_percent_core``: the chips not
  touching another label, so a neighbour's signal does not bleed in), each with its Poisson counting
  error and a bootstrap interval over chips; the undeclared elements lumped into ``Extraneous``.
- **d-spacing** (:mod:`~mmlake.descriptors.spacing`): the fundamental lattice period from the FFT of
  the largest square inside the region, superlattice reflections separately, a width-based
  resolution figure and a bootstrap standard error/interval over non-overlapping tiles of chips;
  NULL with the reason when it cannot be measured (amorphous, too small, no HAADF).
- **crystallinity**: the fraction of the region's chips whose FFT window shows a 2-D lattice.
- **role** (:mod:`mmlake.roles`) and the **ordered-vs-disordered shift** of La, Fe, O
  (:mod:`~mmlake.descriptors.shift`), whole and core, with intervals and a ``significant`` flag.
- **pair_*** (:mod:`~mmlake.descriptors.pairs`): role compositions, role d-spacings and shifts
  pooled over the acquisitions of one sample x dose, bootstrapped over acquisitions and chips.

:func:`describe_session` is the one call a Dagster asset makes per session; :func:`pool_acquisitions`
then pools the sessions of a partition. :func:`describe_lake_session` reads its inputs from the lake.
:func:`composition_problems` is the sum check the lake's asset check runs.
"""

from mmlake.descriptors.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT
from mmlake.descriptors.checks import composition_frame_problems, composition_problems
from mmlake.descriptors.composition import EXTRANEOUS, chip_set_compositions, quantify_region, quantify_regions
from mmlake.descriptors.frames import COMPOSITION_SCHEMA, REGION_SCHEMA, DescriptorTables, RegionFrames
from mmlake.descriptors.geometry import core_mask, largest_square
from mmlake.descriptors.lake import class_names_from_runs, describe_lake_session, labels_by_segmentation
from mmlake.descriptors.pairs import fill_pair_columns, pool_acquisitions
from mmlake.descriptors.session import METHOD_VERSION, describe_session, region_descriptors
from mmlake.descriptors.shift import SHIFT_COLUMNS, role_compositions, shift_table
from mmlake.descriptors.spacing import CRYSTALLINITY_WINDOW_PX, SquareRule, chip_crystallinity, region_spacing

__all__ = [
    "COMPOSITION_SCHEMA", "CRYSTALLINITY_WINDOW_PX", "DEFAULT_LEVEL", "DEFAULT_N_BOOT", "DescriptorTables", "EXTRANEOUS",
    "METHOD_VERSION", "REGION_SCHEMA", "RegionFrames", "SHIFT_COLUMNS", "SquareRule", "chip_crystallinity",
    "chip_set_compositions", "class_names_from_runs", "composition_frame_problems", "composition_problems",
    "core_mask", "describe_lake_session", "describe_session", "fill_pair_columns", "labels_by_segmentation",
    "largest_square", "pool_acquisitions", "quantify_region", "quantify_regions", "region_descriptors",
    "region_spacing", "role_compositions", "shift_table",
]
