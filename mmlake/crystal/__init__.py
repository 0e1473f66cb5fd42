"""Crystal campaign (UniMat-style): structures -> XRD patterns + composition features -> aligned and
fused encoders -> benchmark against the UniMat preprint (Ock et al., Tables 1-3).

Modules (each importable on its own; torch is only imported by `models`, `train`, `benchmark` and
`pipeline`'s encoder/benchmark stages):

- `structures`  load CDVAE-layout CSVs (MP-20, perov_5, ...), parse CIFs, symmetry, targets.
- `xrd`         simulated Cu K-alpha patterns, vectorised Gaussian smearing onto a 2-theta grid.
- `composition` Magpie-style composition statistics from pymatgen's element data.
- `models`      1D-CNN XRD encoder, MLP composition encoder, fusion block, heads, CLIP loss (Eq. 1).
- `train`       seeded, deterministic (CPU) training; weights as bytes + sha256.
- `benchmark`   held-out metrics (Table 2/3 layout) next to the preprint's numbers.
- `reference`   reference d(hkl) spacings (LaFeO3, SrTiO3 pseudo-cubic) for the STEM FFT view.
- `pipeline`    one entry point per Dagster asset, plus `run_crystal_pipeline`.
"""

CRYSTAL_SYSTEMS = ("triclinic", "monoclinic", "orthorhombic", "tetragonal", "trigonal", "hexagonal", "cubic")
"""Class index order of the crystal-system head (ascending symmetry)."""
