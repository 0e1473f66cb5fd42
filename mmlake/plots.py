"""Static pictures (PNG bytes) for asset metadata and reports. matplotlib with the Agg backend."""

from __future__ import annotations

import io

import numpy as np


def _figure(n_panels: int, size: float = 3.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n_panels, figsize=(size * n_panels, size), squeeze=False)
    return fig, axes[0]


def to_png(fig, dpi: int = 80) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def session_thumbnail(haadf: np.ndarray | None, count_map: np.ndarray | None, title: str) -> bytes:
    """HAADF image and EDS total-count map side by side."""
    panels = [(n, a) for n, a in (("HAADF", haadf), ("EDS counts / pixel", count_map)) if a is not None]
    fig, axes = _figure(len(panels))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray" if name == "HAADF" else "viridis")
        ax.set_title(f"{title}\n{name}", fontsize=8)
        ax.axis("off")
    return to_png(fig)


def chip_grid_thumbnail(haadf: np.ndarray | None, chip_counts: np.ndarray | None, chip_px: int, title: str) -> bytes:
    """HAADF with the chip grid drawn over it, and EDS counts per chip."""
    panels = [(n, a) for n, a in (("HAADF + chip grid", haadf), ("EDS counts / chip", chip_counts)) if a is not None]
    fig, axes = _figure(len(panels))
    for ax, (name, img) in zip(axes, panels):
        ax.imshow(img, cmap="gray" if haadf is img else "viridis")
        if img is haadf:
            h, w = img.shape
            for y in range(0, h - chip_px + 1, chip_px):
                ax.axhline(y - 0.5, color="yellow", lw=0.3)
            for x in range(0, w - chip_px + 1, chip_px):
                ax.axvline(x - 0.5, color="yellow", lw=0.3)
        ax.set_title(f"{title}\n{name}", fontsize=8)
        ax.axis("off")
    return to_png(fig)


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
    fig, axes = _figure(1)
    axes[0].imshow(rgb)
    axes[0].set_title(f"{title}\nPCA 1-3 as RGB", fontsize=8)
    axes[0].axis("off")
    return to_png(fig)


def element_maps(atomic_percent: np.ndarray, elements: list[str], n_rows: int, n_cols: int, title: str,
                 most: int = 6) -> bytes:
    """Per-chip atomic % maps of the elements with the highest mean."""
    at = np.asarray(atomic_percent, dtype=np.float64)
    order = np.argsort(-np.nan_to_num(np.nanmean(at, axis=0)))[:most]
    fig, axes = _figure(len(order), size=2.2)
    for ax, j in zip(axes, order):
        im = ax.imshow(at[:, j].reshape(n_rows, n_cols), cmap="magma")
        ax.set_title(f"{elements[j]} at.%", fontsize=8)
        ax.axis("off")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(title, fontsize=8)
    return to_png(fig)
